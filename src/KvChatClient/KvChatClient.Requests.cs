using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;

namespace KvChat;

// KvChatClient, part 2 of 3: how a request becomes a prompt and settings (eager validation of messages and options).
public sealed partial class KvChatClient
{
    private void EnsureFits(int promptTokens, string parameterName)
    {
        if (promptTokens > _contextTokens)
        {
            throw new ArgumentException(
                $"The prompt has {promptTokens} tokens; a session holds at most {_contextTokens} (KvChatClientOptions.ContextTokens).",
                parameterName);
        }
    }

    private sealed record Request(
        int[] Tokens,
        int IdentityLength,
        string[]? ToolNames,
        int[] ForcedTokens,
        string? JsonSchema,
        bool AllowMultipleToolCalls,
        IReadOnlyList<ChatMessage> Messages,
        ChatOptions? Options,
        SamplingSettings Sampling,
        int? MaxOutputTokens,
        IReadOnlyList<string> StopSequences,
        Conversations.Conversation? Conversation,
        int ConversationVersion,
        ReasoningStart ReasoningStart,
        bool ShowReasoning,
        Func<ITokenConstraint>? Constraint = null,
        bool StructuredReply = false);

    private Request PrepareRequest(IEnumerable<ChatMessage> messages, ChatOptions? options)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(messages);
        var list = messages as IReadOnlyList<ChatMessage> ?? [.. messages];
        var knobs = ProviderKnobs.Read(options, _logger, _options.RejectUnknownAdditionalProperties);
        var sampling = SamplingFrom(options, knobs);
        var maxOutput = options?.MaxOutputTokens;
        if (maxOutput is <= 0)
        {
            throw OptionErrors.OutOfRange(nameof(options), "ChatOptions.MaxOutputTokens", maxOutput, "positive");
        }

        var stops = options?.StopSequences is { Count: > 0 } s ? [.. s] : Array.Empty<string>();
        for (var i = 0; i < stops.Length; i++)
        {
            if (string.IsNullOrEmpty(stops[i]))
            {
                throw new ArgumentException(
                    $"ChatOptions.StopSequences[{i}] is {OptionErrors.Format(stops[i])}; every stop sequence must be a non-empty string.", nameof(options));
            }
        }

        ValidateUnsupported(options);

        Conversations.Conversation? conversation = null;
        var version = 0;
        var full = list;
        if (options?.ConversationId is { } id)
        {
            if (_conversations is null)
            {
                throw new NotSupportedException(
                    $"ChatOptions.ConversationId is '{id}', but KvChatClientOptions.EnableConversationIds is off: send the whole history instead.");
            }

            conversation = _conversations.Get(id);
            lock (conversation)
            {
                version = conversation.Version;
                full = [.. conversation.History, .. list];
            }
        }

        var prompt = _renderer.Render(full, options, addGenerationPrompt: true, reasoningOff: ReasoningOff(options, knobs.EnableThinking));
        EnsureFits(prompt.Tokens.Length, nameof(messages));
        var (toolNames, forced) = ToolsFrom(options);
        var plan = ForceGuidanceFallback && options?.ResponseFormat is ChatResponseFormatJson && toolNames is null
            ? new ReplyGrammarPlan(null, "forced for a benchmark")
            : ReplyGrammar.Plan(options, _toolFormat, toolNames is not null, ConstraintVocabularyError, _options.ConstrainToolArguments);
        string? schema = null;
        Func<ITokenConstraint>? constraint = null;
        if (plan.Grammar is { } grammar)
        {
            var vocabulary = _constraintVocabulary.Value.Vocabulary!;
            constraint = () => new GrammarConstraint(grammar, vocabulary);
        }
        else if (options?.ResponseFormat is ChatResponseFormatJson)
        {
            Log.StructuredFallback(_logger, plan.FallbackReason ?? "no grammar");
            schema = GuidanceSchema(options);
        }

        return new Request(
            prompt.Tokens, prompt.IdentityLength, toolNames, forced, schema, options?.AllowMultipleToolCalls != false,
            list, options, sampling, maxOutput, stops, conversation, version,
            forced.Length > 0 ? ReasoningStart.Answer : prompt.ReasoningStart, // A forced tool-call opening starts the answer.
            options?.Reasoning?.Output != ReasoningOutput.None,
            constraint,
            StructuredReply: options?.ResponseFormat is ChatResponseFormatJson && !(toolNames is not null && options.ToolMode is RequiredChatToolMode));
    }

    /// <summary>
    /// Whether the request switches reasoning off: <c>ChatOptions.Reasoning.Effort</c> <see cref="ReasoningEffort.None"/>,
    /// or <c>AdditionalProperties["enable_thinking"]</c> <see langword="false"/> (the chat-template argument Qwen3's
    /// providers take). Other effort levels leave the model's own default (a local model has no effort knob).
    /// </summary>
    private bool ReasoningOff(ChatOptions? options, bool? enableThinking)
    {
        var off = options?.Reasoning?.Effort == ReasoningEffort.None || enableThinking == false;

        if (off && _renderer.Reasoning is { SwitchVariable: null })
        {
            throw new NotSupportedException(
                "Reasoning was switched off (ChatOptions.Reasoning.Effort None or enable_thinking false), but this model's chat template " +
                "always reasons: it has no enable_thinking switch.");
        }

        return off && _renderer.Reasoning is not null;
    }

    /// <summary>Benchmark switch: JSON replies without tools take the GenAI-guidance fallback, to compare the two paths.</summary>
    internal bool ForceGuidanceFallback { get; set; }

    /// <summary>Why the tokenizer's vocabulary cannot be read for token masks, or null when it can (read once, on first use).</summary>
    internal string? ConstraintVocabularyError => _constraintVocabulary.Value.Error;

    private (ConstraintVocabulary? Vocabulary, string? Error) ReadConstraintVocabulary()
    {
        try
        {
            var bytes = TokenBytes.Read(System.IO.Path.Combine(_folder.Path, "tokenizer.json"), _folder.VocabSize);
            return (new ConstraintVocabulary(bytes, _folder.EosTokenIds), null);
        }
        catch (Exception e) when (e is InvalidDataException or JsonException or IOException or UnauthorizedAccessException or InvalidOperationException or ArgumentException)
        {
            return (null, $"the tokenizer's vocabulary cannot be read for token masks ({e.Message})");
        }
    }

    /// <summary>
    /// The JSON schema for the fallback path, GenAI guidance on a temporary generator (a schema outside the subset the
    /// client's own constraint supports, or a vocabulary it cannot read). Whitespace is made strict, so replies are compact.
    /// </summary>
    private static string GuidanceSchema(ChatOptions options)
    {
        var json = (ChatResponseFormatJson)options.ResponseFormat!;
        if (options.FrequencyPenalty is not null and not 0 || options.PresencePenalty is not null and not 0)
        {
            var (name, value) = options.FrequencyPenalty is not null and not 0
                ? ("FrequencyPenalty", options.FrequencyPenalty)
                : ("PresencePenalty", options.PresencePenalty);
            throw new NotSupportedException(
                $"ChatOptions.{name} is {OptionErrors.Format(value)}, but penalties are not supported with this ChatOptions.ResponseFormat JSON schema: it is outside the subset the client constrains itself, and GenAI's guided sampler has no such penalties.");
        }

        JsonObject schema;
        try
        {
            schema = json.Schema is { ValueKind: JsonValueKind.Object } element
                ? JsonNode.Parse(element.GetRawText())!.AsObject()
                : new JsonObject { ["type"] = "object" };
        }
        catch (JsonException e)
        {
            throw new ArgumentException($"ChatOptions.ResponseFormat's JSON schema cannot be read: {e.Message}", nameof(options), e);
        }

        schema.TryAdd("x-guidance", new JsonObject { ["whitespace_flexible"] = false });
        return schema.ToJsonString();
    }

    /// <summary>The offered tool names (null when no tool can be called) and the tokens a required call starts with.</summary>
    private (string[]? Names, int[] Forced) ToolsFrom(ChatOptions? options)
    {
        var required = options?.ToolMode as RequiredChatToolMode;
        if (options?.Tools is not { Count: > 0 } tools || options.ToolMode is NoneChatToolMode)
        {
            return required is null
                ? (null, [])
                : throw new ArgumentException($"ChatOptions.ToolMode is {DescribeToolMode(required)}, but ChatOptions.Tools is empty.", nameof(options));
        }

        if (_toolFormat is null)
        {
            throw new NotSupportedException(
                "ChatOptions.Tools were given, but the model's chat template uses no tool-call format KvChatClient recognises " +
                "(Hermes/Qwen <tool_call>, Phi <|tool_call|>, Llama 3 JSON).");
        }

        var names = tools.OfType<AIFunctionDeclaration>().Select(t => t.Name).ToArray();
        if (required is null)
        {
            return (names, []);
        }

        var name = required.RequiredFunctionName;
        if (name is not null && !names.Contains(name, StringComparer.Ordinal))
        {
            throw new ArgumentException($"ChatOptions.ToolMode is {DescribeToolMode(required)}, but '{name}' is not among ChatOptions.Tools.", nameof(options));
        }

        var prefix = _toolFormat.ForcedReplyPrefix(name)
            ?? throw new NotSupportedException($"The {_toolFormat} tool-call format has no opening to force: ToolMode RequireAny/RequireSpecific cannot be honoured.");
        return (names, _renderer.EncodeTemplateText(prefix));
    }

    private static string DescribeToolMode(RequiredChatToolMode mode) =>
        mode.RequiredFunctionName is { } name ? $"RequireSpecific('{name}')" : "RequireAny";

    private SamplingSettings SamplingFrom(ChatOptions? options, ProviderKnobs knobs)
    {
        var temperature = options?.Temperature ?? (_folder.DoSample ? _folder.Temperature : 0f);
        var topP = options?.TopP ?? (_folder.DoSample ? _folder.TopP : 1f);
        var topK = options?.TopK ?? knobs.TopK ?? (_folder.DoSample ? _folder.TopK : 0);
        if (options?.TopK is <= 0)
        {
            throw OptionErrors.OutOfRange(nameof(options), "ChatOptions.TopK", options.TopK, "positive");
        }

        var settings = new SamplingSettings(
            temperature,
            topP,
            topK,
            options?.FrequencyPenalty ?? 0f,
            options?.PresencePenalty ?? 0f,
            (options?.Seed ?? knobs.Seed) is { } seed ? unchecked((ulong)seed) : null);
        settings.Validate(nameof(options));
        return settings;
    }

    private void ValidateUnsupported(ChatOptions? options)
    {
        if (options is null)
        {
            return;
        }

        if (options.ResponseFormat is not null and not ChatResponseFormatText and not ChatResponseFormatJson)
        {
            throw new NotSupportedException($"ChatOptions.ResponseFormat is a {options.ResponseFormat.GetType().Name}, which is not supported (use text or JSON).");
        }

        if (options.ModelId is { } modelId && !string.Equals(modelId, _modelId, StringComparison.Ordinal))
        {
            throw new ArgumentException($"ChatOptions.ModelId '{modelId}' is not this client's model '{_modelId}'.", nameof(options));
        }

        if (options.RawRepresentationFactory?.Invoke(this) is { } raw)
        {
            throw new NotSupportedException($"ChatOptions.RawRepresentationFactory returned a {raw.GetType().Name}; KvChatClient takes no raw options.");
        }
    }
}
