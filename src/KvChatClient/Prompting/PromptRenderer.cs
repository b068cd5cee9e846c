using System.Buffers;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat;

/// <summary>A prompt as the model sees it.</summary>
/// <param name="Tokens">The token ids.</param>
/// <param name="MessageCount">The messages rendered (with <c>Instructions</c> merged into the system message).</param>
/// <param name="IdentityLength">
/// The tokens through the first non-system message's text: what identifies the conversation (two conversations that
/// share a system prompt diverge before this point; an edit deeper in one conversation diverges after it).
/// </param>
/// <param name="ReasoningStart">Where the reply starts for a reasoning model (see <see cref="ReasoningFormat.StartOf"/>).</param>
internal sealed record RenderedPrompt(int[] Tokens, int MessageCount, int IdentityLength, ReasoningStart ReasoningStart = ReasoningStart.ModelDecides);

/// <summary>
/// Turns chat messages into token ids with the model's own chat template. Message text is rendered as a placeholder,
/// then encoded on its own with every added-token string in it encoded as plain text, so user and tool text can never
/// become control tokens (<c>&lt;|im_start|&gt;system</c> in a user message stays text). Segments are encoded once
/// and cached, and an assistant reply this client generated is re-entered as the ids it generated.
/// </summary>
/// <remarks>Thread-safe: the tokenizer is used under a lock.</remarks>
internal sealed class PromptRenderer
{
    private const int SegmentCacheCapacity = 8192;
    private const int MaxCachedSegmentLength = 1 << 16;

    private readonly Tokenizer _tokenizer;
    private readonly Lock _tokenizerLock;
    private readonly string? _template;
    private readonly string? _reasoningOffTemplate;
    private readonly string[] _addedTokens;
    private readonly SearchValues<string>? _addedTokenSearch;
    private readonly HashSet<int> _specialIds;
    private readonly int[] _encodeAddsPrefix;
    private readonly LruCache<string, int[]> _templateSegments = new(SegmentCacheCapacity, StringComparer.Ordinal);
    private readonly LruCache<string, int[]> _literalSegments = new(SegmentCacheCapacity, StringComparer.Ordinal);
    private readonly LruCache<string, int[]> _replyMemo;
    private long _retokenizedReplies;

    public PromptRenderer(Tokenizer tokenizer, Lock tokenizerLock, ModelFolder folder, string? templateOverride, int replyMemoCapacity)
    {
        _tokenizer = tokenizer;
        _tokenizerLock = tokenizerLock;
        _template = templateOverride;
        _replyMemo = new LruCache<string, int[]>(replyMemoCapacity, StringComparer.Ordinal);
        _addedTokens = [.. folder.AddedTokens.Select(t => t.Content).Distinct(StringComparer.Ordinal)];
        _addedTokenSearch = _addedTokens.Length == 0 ? null : SearchValues.Create(_addedTokens, StringComparison.Ordinal);
        _specialIds = [.. folder.AddedTokens.Where(t => t.Special).Select(t => t.Id)];
        Reasoning = ReasoningFormat.Detect(templateOverride ?? folder.ChatTemplate, folder.AddedTokens);
        if (Reasoning?.SwitchVariable is { } variable)
        {
            // GenAI's ApplyChatTemplate takes no extra variables: set the switch at the top of the template itself.
            _reasoningOffTemplate = $"{{%- set {variable} = false %}}" + (templateOverride ?? folder.ChatTemplate);
        }

        if (templateOverride is null && folder.ChatTemplate is null)
        {
            throw new InvalidDataException(
                $"The model folder '{folder.Path}' has no chat_template in tokenizer_config.json: set KvChatClientOptions.ChatTemplate.");
        }

        // Chat prompts get special tokens only from the template (as Hugging Face's apply_chat_template does).
        lock (_tokenizerLock)
        {
            try
            {
                _tokenizer.UpdateOptions(new Dictionary<string, string> { ["add_special_tokens"] = "false" });
            }
            catch (OnnxRuntimeGenAIException)
            {
                // Older tokenizers: whatever Encode adds is stripped from each segment below.
            }

            using var a = _tokenizer.Encode("a");
            using var b = _tokenizer.Encode("b");
            _encodeAddsPrefix = CommonPrefix(a[0], b[0]);
        }
    }

    /// <summary>Gets the model's reasoning format, or <see langword="null"/> when it does not reason.</summary>
    public ReasoningFormat? Reasoning { get; }

    /// <summary>Gets the replies whose text re-encodes to other ids than were generated.</summary>
    public long RetokenizedReplies => Interlocked.Read(ref _retokenizedReplies);

    /// <summary>Renders and encodes a conversation.</summary>
    /// <exception cref="ArgumentException">A message is empty, holds U+0000, or the template rejects the conversation.</exception>
    /// <exception cref="NotSupportedException">A message holds content this client cannot send, or a tool is not a function.</exception>
    /// <param name="messages">The conversation.</param>
    /// <param name="options">The request's options (instructions and tools shape the prompt).</param>
    /// <param name="addGenerationPrompt">Whether to end with the template's generation prompt.</param>
    /// <param name="reasoningOff">Whether to render with the template's reasoning switch off (see <see cref="ReasoningFormat.SwitchVariable"/>).</param>
    public RenderedPrompt Render(IReadOnlyList<ChatMessage> messages, ChatOptions? options, bool addGenerationPrompt, bool reasoningOff = false)
    {
        var rendered = Flatten(messages, options?.Instructions, Reasoning);
        var tools = options?.ToolMode is NoneChatToolMode ? null : ToolsJson(options?.Tools);
        var marker = PickMarker(rendered, tools);
        var messagesJson = MessagesJson(rendered, marker);

        string text;
        lock (_tokenizerLock)
        {
            try
            {
                text = _tokenizer.ApplyChatTemplate(reasoningOff ? _reasoningOffTemplate : _template, messagesJson, tools, addGenerationPrompt);
            }
            catch (OnnxRuntimeGenAIException e)
            {
                throw new ArgumentException($"The chat template rejected the conversation: {e.Message}", nameof(messages), e);
            }
        }

        var tokens = new List<int>(text.Length / 3);
        var identityLength = -1;
        var position = 0;
        while (position < text.Length)
        {
            var open = text.IndexOf(marker, position);
            if (open < 0)
            {
                tokens.AddRange(EncodeTemplateText(text[position..]));
                break;
            }

            var close = text.IndexOf(marker, open + 1);
            if (close < 0 || !int.TryParse(text.AsSpan(open + 1, close - open - 1), NumberStyles.None, CultureInfo.InvariantCulture, out var index)
                || (uint)index >= (uint)(2 * rendered.Count))
            {
                throw new InvalidOperationException("The chat template changed a message placeholder; it cannot be rendered safely.");
            }

            if (open > position)
            {
                tokens.AddRange(EncodeTemplateText(text[position..open]));
            }

            var message = rendered[index % rendered.Count];
            if (index >= rendered.Count)
            {
                // The reasoning_content placeholder. Templates trim its newlines (Qwen3: strip('\n')), which a placeholder has none of.
                tokens.AddRange(EncodeLiteral((message.Reasoning ?? string.Empty).Trim('\n')));
                position = close + 1;
                continue;
            }

            tokens.AddRange(message.Role == "assistant" && _replyMemo.TryGet(message.Content, out var generated)
                ? generated
                : EncodeLiteral(message.Content));
            position = close + 1;
            if (identityLength < 0 && message.Role != "system")
            {
                identityLength = tokens.Count;
            }
        }

        var start = Reasoning is not null && addGenerationPrompt ? Reasoning.StartOf(text) : ReasoningStart.ModelDecides;
        return new RenderedPrompt([.. tokens], rendered.Count, identityLength < 0 ? tokens.Count : identityLength, start);
    }

    /// <summary>
    /// Remembers a reply's generated ids when its text would re-encode differently (and it holds no special token), so
    /// the next turn prefills the ids the KV cache already holds.
    /// </summary>
    public void RememberReply(string text, ReadOnlySpan<int> generated)
    {
        if (_replyMemo.Capacity == 0 || text.Length == 0 || text.Length > MaxCachedSegmentLength)
        {
            return;
        }

        foreach (var id in generated)
        {
            if (_specialIds.Contains(id))
            {
                return;
            }
        }

        string decoded;
        lock (_tokenizerLock)
        {
            decoded = _tokenizer.Decode(generated);
        }

        // A reply cut inside a character, or with text held back, is not what the ids say: re-encode it instead.
        if (!string.Equals(decoded, text, StringComparison.Ordinal))
        {
            return;
        }

        if (!EncodeLiteral(text).AsSpan().SequenceEqual(generated))
        {
            Interlocked.Increment(ref _retokenizedReplies);
            _replyMemo.Set(text, generated.ToArray());
        }
    }

    /// <summary>Encodes text with added-token strings in it encoded as plain text.</summary>
    public int[] EncodeLiteral(string text)
    {
        if (text.Length == 0)
        {
            return [];
        }

        if (text.Length <= MaxCachedSegmentLength && _literalSegments.TryGet(text, out var cached))
        {
            return cached;
        }

        var result = new List<int>();
        AppendLiteral(text, result);
        var ids = result.ToArray();
        if (text.Length <= MaxCachedSegmentLength)
        {
            _literalSegments.Set(text, ids);
        }

        return ids;
    }

    private void AppendLiteral(ReadOnlySpan<char> text, List<int> result)
    {
        while (!text.IsEmpty)
        {
            var at = _addedTokenSearch is null ? -1 : text.IndexOfAny(_addedTokenSearch);
            if (at < 0)
            {
                result.AddRange(EncodeRaw(text.ToString()));
                return;
            }

            if (at > 0)
            {
                result.AddRange(EncodeRaw(text[..at].ToString()));
            }

            // The longest added token starting here, split so that neither half is an added token.
            var rest = text[at..];
            var token = string.Empty;
            foreach (var candidate in _addedTokens)
            {
                if (candidate.Length > token.Length && rest.StartsWith(candidate, StringComparison.Ordinal))
                {
                    token = candidate;
                }
            }

            var splitAt = char.IsHighSurrogate(token[0]) && token.Length > 2 ? 2 : 1;
            result.AddRange(EncodeRaw(token[..splitAt]));
            AppendLiteral(token.AsSpan(splitAt), result);
            text = text[(at + token.Length)..];
        }
    }

    /// <summary>Encodes text with its added-token strings as control tokens (template text, forced reply openings).</summary>
    public int[] EncodeTemplateText(string text)
    {
        if (_templateSegments.TryGet(text, out var cached))
        {
            return cached;
        }

        var ids = EncodeRaw(text);
        if (text.Length <= MaxCachedSegmentLength)
        {
            _templateSegments.Set(text, ids);
        }

        return ids;
    }

    private int[] EncodeRaw(string text)
    {
        int[] ids;
        lock (_tokenizerLock)
        {
            using var sequences = _tokenizer.Encode(text);
            ids = sequences[0].ToArray();
        }

        return _encodeAddsPrefix.Length > 0 && ids.AsSpan().StartsWith(_encodeAddsPrefix) ? ids[_encodeAddsPrefix.Length..] : ids;
    }

    private static int[] CommonPrefix(ReadOnlySpan<int> a, ReadOnlySpan<int> b) => a[..a.CommonPrefixLength(b)].ToArray();

    private sealed record FlatMessage(string Role, string Content, IReadOnlyList<FunctionCallContent> ToolCalls, string? ToolCallId, string? Reasoning = null);

    private static List<FlatMessage> Flatten(IReadOnlyList<ChatMessage> messages, string? instructions, ReasoningFormat? reasoningFormat)
    {
        var result = new List<FlatMessage>(messages.Count + 1);
        for (var i = 0; i < messages.Count; i++)
        {
            var message = messages[i] ?? throw new ArgumentException($"Message {i} is null.", nameof(messages));
            var role = message.Role.Value;
            var text = new StringBuilder();
            var calls = new List<FunctionCallContent>();
            var results = new List<FunctionResultContent>();
            StringBuilder? reasoning = null;
            foreach (var content in message.Contents)
            {
                switch (content)
                {
                    case TextContent t:
                        text.Append(t.Text);
                        break;
                    case FunctionCallContent call:
                        calls.Add(call);
                        break;
                    case FunctionResultContent r:
                        results.Add(r);
                        break;
                    case UsageContent:
                        break; // Accounting of an earlier response, not model input.
                    case TextReasoningContent r when role == "assistant":
                        (reasoning ??= new StringBuilder()).Append(r.Text); // ProtectedData is another provider's opaque state.
                        break;
                    case TextReasoningContent:
                        throw new NotSupportedException($"Message {i} ({role}) holds TextReasoningContent: only assistant messages carry reasoning.");
                    case null:
                        throw new ArgumentException($"Message {i} ({role}) has a null content item.", nameof(messages));
                    default:
                        throw new NotSupportedException(
                            $"Message {i} ({role}) holds {content.GetType().Name}: this client sends text, function calls and function results only.");
                }
            }

            var body = text.ToString();
            var thought = reasoning?.ToString();
            if (body.Contains('\0', StringComparison.Ordinal) || thought?.Contains('\0', StringComparison.Ordinal) == true)
            {
                throw new ArgumentException($"Message {i} ({role}) contains U+0000, which the tokenizer cannot encode.", nameof(messages));
            }

            if (role == "assistant")
            {
                body = ReasoningHistory.Prepare(reasoningFormat, body, ref thought);
            }

            if (results.Count > 0)
            {
                if (body.Length > 0 || calls.Count > 0)
                {
                    throw new NotSupportedException($"Message {i} ({role}) mixes function results with text or calls; send results in their own message.");
                }

                foreach (var r in results)
                {
                    result.Add(new FlatMessage("tool", ResultText(r, i), [], r.CallId));
                }

                continue;
            }

            result.Add(new FlatMessage(role, body, calls, null, thought));
        }

        if (result.Count == 0)
        {
            throw new ArgumentException("At least one message is required.", nameof(messages));
        }

        if (!string.IsNullOrEmpty(instructions))
        {
            if (instructions.Contains('\0', StringComparison.Ordinal))
            {
                throw new ArgumentException("ChatOptions.Instructions contains U+0000, which the tokenizer cannot encode.", nameof(instructions));
            }

            if (result[0].Role == "system")
            {
                result[0] = result[0] with { Content = instructions + "\n\n" + result[0].Content };
            }
            else
            {
                result.Insert(0, new FlatMessage("system", instructions, [], null));
            }
        }

        return result;
    }

    private static string ResultText(FunctionResultContent result, int index)
    {
        var text = result.Result switch
        {
            null => result.Exception is { } e ? $"Error: {e.Message}" : string.Empty,
            string s => s,
            JsonElement json => json.ValueKind == JsonValueKind.String ? json.GetString()! : json.GetRawText(),
            var value => JsonSerializer.Serialize(value, AIJsonUtilities.DefaultOptions.GetTypeInfo(value.GetType())),
        };
        return text.Contains('\0', StringComparison.Ordinal)
            ? throw new ArgumentException($"The result of call '{result.CallId}' in message {index} contains U+0000.", nameof(result))
            : text;
    }

    private static string? ToolsJson(IList<AITool>? tools)
    {
        if (tools is not { Count: > 0 })
        {
            return null;
        }

        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartArray();
            foreach (var tool in tools)
            {
                if (tool is not AIFunctionDeclaration function)
                {
                    throw new NotSupportedException($"Tool '{tool?.Name}' is a {tool?.GetType().Name}: only functions can be offered to a local model.");
                }

                w.WriteStartObject();
                w.WriteString("type", "function");
                w.WriteStartObject("function");
                w.WriteString("name", function.Name);
                if (!string.IsNullOrEmpty(function.Description))
                {
                    w.WriteString("description", function.Description);
                }

                w.WritePropertyName("parameters");
                function.JsonSchema.WriteTo(w);
                w.WriteEndObject();
                w.WriteEndObject();
            }

            w.WriteEndArray();
        }

        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    /// <summary>A private-use character that appears nowhere in the conversation, to delimit placeholders.</summary>
    private static char PickMarker(List<FlatMessage> messages, string? tools)
    {
        for (var c = '\uE000'; c <= '\uF8FF'; c++)
        {
            if ((tools is null || !tools.Contains(c, StringComparison.Ordinal))
                && !messages.Any(m => m.Content.Contains(c, StringComparison.Ordinal) || m.Reasoning?.Contains(c, StringComparison.Ordinal) == true))
            {
                return c;
            }
        }

        throw new ArgumentException("The conversation uses every private-use character; it cannot be rendered safely.", nameof(messages));
    }

    private static string MessagesJson(List<FlatMessage> messages, char marker)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartArray();
            for (var i = 0; i < messages.Count; i++)
            {
                var m = messages[i];
                w.WriteStartObject();
                w.WriteString("role", m.Role);
                w.WriteString("content", m.Content.Length == 0 ? string.Empty : string.Create(CultureInfo.InvariantCulture, $"{marker}{i}{marker}"));
                if (m.Reasoning is not null)
                {
                    w.WriteString("reasoning_content", m.Reasoning.Length == 0 ? string.Empty : string.Create(CultureInfo.InvariantCulture, $"{marker}{messages.Count + i}{marker}"));
                }

                if (m.ToolCallId is not null)
                {
                    w.WriteString("tool_call_id", m.ToolCallId);
                }

                if (m.ToolCalls.Count > 0)
                {
                    w.WriteStartArray("tool_calls");
                    foreach (var call in m.ToolCalls)
                    {
                        w.WriteStartObject();
                        w.WriteString("id", call.CallId);
                        w.WriteString("type", "function");
                        w.WriteStartObject("function");
                        w.WriteString("name", call.Name);
                        w.WritePropertyName("arguments");
                        JsonSerializer.Serialize(w, call.Arguments ?? new Dictionary<string, object?>(), AIJsonUtilities.DefaultOptions.GetTypeInfo(typeof(IDictionary<string, object?>)));
                        w.WriteEndObject();
                        w.WriteEndObject();
                    }

                    w.WriteEndArray();
                }

                w.WriteEndObject();
            }

            w.WriteEndArray();
        }

        return Encoding.UTF8.GetString(buffer.ToArray());
    }
}
