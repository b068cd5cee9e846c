using System.Buffers;
using System.Runtime.InteropServices;
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
internal sealed record RenderedPrompt(int[] Tokens, int MessageCount, int IdentityLength);

/// <summary>
/// Turns chat messages into the canonical token ids of the model's own chat template: the template is rendered over the
/// real message text (so <c>trim</c>, <c>startswith</c> and the like act on the text) and the rendered string is
/// encoded as the tokenizer encodes it (split on added tokens, leftmost-longest; BPE between them), segment by segment
/// with a cache, so a long history costs a template render and a scan per turn.
/// </summary>
/// <remarks>
/// <para>
/// Control tokens are the added tokens marked special plus the added tokens the template itself writes (role and
/// turn markers, <c>&lt;tool_call&gt;</c>, <c>&lt;think&gt;</c>...), whitespace-only ones excepted. Text that enters
/// the template (message text, tool names, descriptions and schemas, call arguments and results, call ids) and holds a
/// control token's string has that string replaced by a private-use sentinel before rendering; the sentinel is
/// encoded back as plain text (cut after its first character, so the tokenizer cannot match it), and everything
/// around it stays canonical. Every other added token (Gemma 3's <c>"\n\n"</c>, <c>"&lt;b&gt;"</c>...) is ordinary
/// vocabulary: one id, as the tokenizer gives it.
/// </para>
/// <para>
/// A reply this client generated whose ids differ from its text's encoding is remembered; where the rendered prompt
/// holds that reply verbatim right after the rendering of the conversation before it (with the generation prompt),
/// the reply's generated ids are used, so the next turn prefills what the KV cache already holds. A template that
/// trims or rewrites a reply gets the canonical encoding.
/// </para>
/// <para>
/// Hand-written rather than a library's: Microsoft.ML.Tokenizers has no chat templates and GenAI exposes only
/// <c>ApplyChatTemplate</c> and whole-string <c>Encode</c>, which would parse control tokens out of user text.
/// Thread-safe: the tokenizer is used under a lock.
/// </para>
/// </remarks>
internal sealed class PromptRenderer
{
    private const int SegmentCacheCapacity = 8192;
    private const int PrefixCacheCapacity = 64;
    private const int MaxCachedSegmentLength = 1 << 16;

    /// <summary>U+10FFFD, the last private-use code point, followed by one index character, stands for forged text.</summary>
    private const string Sentinel = "\uDBFF\uDFFD";
    private const char FirstIndex = '\uE000';
    private const int MaxControlTokens = 6000;

    private static readonly JsonSerializerOptions RelaxedJson = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private readonly Tokenizer _tokenizer;
    private readonly Lock _tokenizerLock;
    private readonly string? _template;
    private readonly AddedTokenMatcher _matcher;
    private readonly string[] _controlTokens;
    private readonly SearchValues<string> _guarded;
    private readonly HashSet<int> _controlIds;
    private readonly int[] _encodeAddsPrefix;
    private readonly bool _nullContentForCalls;
    private readonly LruCache<string, int[]> _segments = new(SegmentCacheCapacity, StringComparer.Ordinal);
    private readonly LruCache<string, string> _prefixes = new(PrefixCacheCapacity, StringComparer.Ordinal);
    private readonly LruCache<string, int[]> _replyMemo;
    private long _retokenizedReplies;

    public PromptRenderer(Tokenizer tokenizer, Lock tokenizerLock, ModelFolder folder, string? templateOverride, int replyMemoCapacity)
    {
        _tokenizer = tokenizer;
        _tokenizerLock = tokenizerLock;
        _template = templateOverride;
        _replyMemo = new LruCache<string, int[]>(replyMemoCapacity, StringComparer.Ordinal);
        var template = templateOverride ?? folder.ChatTemplate
            ?? throw new InvalidDataException(
                $"The model folder '{folder.Path}' has no chat_template in tokenizer_config.json: set KvChatClientOptions.ChatTemplate.");

        var control = folder.AddedTokens
            .Where(t => !string.IsNullOrWhiteSpace(t.Content) && (t.Special || template.Contains(t.Content, StringComparison.Ordinal)))
            .ToList();
        _controlTokens = [.. control.Select(t => t.Content).Distinct(StringComparer.Ordinal)];
        if (_controlTokens.Length > MaxControlTokens)
        {
            throw new InvalidDataException($"The tokenizer of '{folder.Path}' has {_controlTokens.Length} control tokens; at most {MaxControlTokens} are supported.");
        }

        var controlSet = _controlTokens.ToHashSet(StringComparer.Ordinal);
        _controlIds = [.. control.Select(t => t.Id)];
        _matcher = new AddedTokenMatcher(folder.AddedTokens.Select(t => (t.Content, t.Id, controlSet.Contains(t.Content))));
        _guarded = SearchValues.Create([.. _controlTokens, Sentinel], StringComparison.Ordinal);

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

        _nullContentForCalls = TemplateAcceptsNullContent();
    }

    /// <summary>Gets the replies whose text re-encodes to other ids than were generated.</summary>
    public long RetokenizedReplies => Interlocked.Read(ref _retokenizedReplies);

    /// <summary>Gets the control tokens: what text from a caller can never become.</summary>
    public IReadOnlyList<string> ControlTokens => _controlTokens;

    /// <summary>Renders and encodes a conversation.</summary>
    /// <exception cref="ArgumentException">A message is empty, holds U+0000, or the template rejects the conversation.</exception>
    /// <exception cref="NotSupportedException">A message holds content this client cannot send, a tool is not a function, or the template drops a tool call or result.</exception>
    public RenderedPrompt Render(IReadOnlyList<ChatMessage> messages, ChatOptions? options, bool addGenerationPrompt)
    {
        var flat = Flatten(messages, options?.Instructions);
        var forged = false;
        var dtos = ToTemplateMessages(flat, ref forged);
        var tools = options?.ToolMode is NoneChatToolMode ? null : ToolsJson(options?.Tools, ref forged);
        var text = Apply(Serialize(dtos), tools, addGenerationPrompt, nameof(messages));
        EnsureToolHistoryRendered(dtos, text);

        // Where a remembered reply sits verbatim after the rendering of everything before it, its generated ids go in.
        var tokens = new List<int>(text.Length / 3);
        var position = 0;
        for (var i = 0; i < flat.Count; i++)
        {
            if (flat[i].Role != "assistant" || flat[i].Content.Length == 0 || !_replyMemo.TryGet(flat[i].Content, out var generated))
            {
                continue;
            }

            var start = PrefixLength(dtos, i, tools, addGenerationPrompt: true, text);
            var reply = dtos[i].Content!;
            if (start >= position && string.CompareOrdinal(text, start, reply, 0, reply.Length) == 0)
            {
                Encode(text.AsSpan(position, start - position), forged, tokens);
                tokens.AddRange(generated);
                position = start + reply.Length;
            }
        }

        Encode(text.AsSpan(position), forged, tokens);

        var identity = tokens.Count;
        var first = flat.FindIndex(m => m.Role != "system");
        if (first >= 0 && PrefixLength(dtos, first + 1, tools, addGenerationPrompt: false, text) is var end and > 0 && end < text.Length)
        {
            var head = new List<int>();
            Encode(text.AsSpan(0, end), forged, head);
            identity = Math.Min(head.Count, tokens.Count);
        }

        return new RenderedPrompt([.. tokens], flat.Count, identity);
    }

    /// <summary>
    /// Remembers a reply's generated ids when its text would encode differently (and it holds no control token), so
    /// the next turn prefills the ids the KV cache already holds.
    /// </summary>
    public void RememberReply(string text, ReadOnlySpan<int> generated)
    {
        if (_replyMemo.Capacity == 0 || text.Length == 0 || text.Length > MaxCachedSegmentLength || text.AsSpan().ContainsAny(_guarded))
        {
            return;
        }

        foreach (var id in generated)
        {
            if (_controlIds.Contains(id))
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

        var canonical = new List<int>();
        Encode(text, forged: false, canonical);
        if (!CollectionsMarshal.AsSpan(canonical).SequenceEqual(generated))
        {
            Interlocked.Increment(ref _retokenizedReplies);
            _replyMemo.Set(text, generated.ToArray());
        }
    }

    /// <summary>Encodes template text (control tokens allowed): forced reply openings.</summary>
    public int[] EncodeTemplateText(string text)
    {
        var ids = new List<int>();
        Encode(text, forged: false, ids);
        return [.. ids];
    }

    /// <summary>Encodes text as caller text: a control token's string in it stays text.</summary>
    public int[] EncodeLiteral(string text)
    {
        var forged = false;
        var neutral = Neutralize(text, ref forged);
        var ids = new List<int>();
        Encode(neutral, forged, ids);
        return [.. ids];
    }

    /// <summary>
    /// Encodes rendered text as the tokenizer would (split at added tokens, leftmost-longest, each segment between
    /// them encoded alone), except that sentinels become plain text that no added token can match.
    /// </summary>
    private void Encode(ReadOnlySpan<char> text, bool forged, List<int> tokens)
    {
        var run = new StringBuilder();
        var i = 0;
        while (i < text.Length)
        {
            var match = _matcher.Next(text, i);
            var sentinel = forged ? text[i..].IndexOf(Sentinel, StringComparison.Ordinal) : -1;
            sentinel = sentinel < 0 ? -1 : sentinel + i;
            if (match.Length == 0 && sentinel < 0)
            {
                run.Append(text[i..]);
                break;
            }

            if (sentinel >= 0 && (match.Length == 0 || sentinel < match.Index))
            {
                run.Append(text[i..sentinel]);
                var index = sentinel + Sentinel.Length < text.Length ? text[sentinel + Sentinel.Length] - FirstIndex : -1;
                if (index == _controlTokens.Length)
                {
                    run.Append(Sentinel); // The sentinel character itself, sent by the caller.
                }
                else if ((uint)index < (uint)_controlTokens.Length)
                {
                    AppendAsText(_controlTokens[index], run, tokens);
                }
                else
                {
                    throw new InvalidOperationException("The chat template cut a protected control-token string; the conversation cannot be rendered safely.");
                }

                i = sentinel + Sentinel.Length + 1;
                continue;
            }

            run.Append(text[i..match.Index]);
            Flush(run, tokens);
            tokens.Add(match.Id);
            i = match.Index + match.Length;
        }

        Flush(run, tokens);
    }

    /// <summary>
    /// Appends a control token's string as text: ordinary added tokens in it keep their ids; wherever a control token
    /// would match, the segment is cut after its first character, so the tokenizer sees only pieces of it.
    /// </summary>
    private void AppendAsText(string text, StringBuilder run, List<int> tokens)
    {
        var i = 0;
        while (i < text.Length)
        {
            var match = _matcher.LongestAt(text, i);
            if (match.Length > 0 && !match.IsControl)
            {
                Flush(run, tokens);
                tokens.Add(match.Id);
                i += match.Length;
                continue;
            }

            var width = char.IsHighSurrogate(text[i]) && i + 1 < text.Length ? 2 : 1;
            run.Append(text, i, width);
            if (match.Length > 0)
            {
                Flush(run, tokens);
            }

            i += width;
        }
    }

    private void Flush(StringBuilder run, List<int> tokens)
    {
        if (run.Length == 0)
        {
            return;
        }

        var segment = run.ToString();
        run.Clear();
        if (_segments.TryGet(segment, out var cached))
        {
            tokens.AddRange(cached);
            return;
        }

        int[] ids;
        lock (_tokenizerLock)
        {
            using var sequences = _tokenizer.Encode(segment);
            ids = sequences[0].ToArray();
        }

        if (_encodeAddsPrefix.Length > 0 && ids.AsSpan().StartsWith(_encodeAddsPrefix))
        {
            ids = ids[_encodeAddsPrefix.Length..];
        }

        if (segment.Length <= MaxCachedSegmentLength)
        {
            _segments.Set(segment, ids);
        }

        tokens.AddRange(ids);
    }

    private static int[] CommonPrefix(ReadOnlySpan<int> a, ReadOnlySpan<int> b) => a[..a.CommonPrefixLength(b)].ToArray();

    private string Apply(string messagesJson, string? toolsJson, bool addGenerationPrompt, string parameterName)
    {
        lock (_tokenizerLock)
        {
            try
            {
                return _tokenizer.ApplyChatTemplate(_template, messagesJson, toolsJson, addGenerationPrompt);
            }
            catch (OnnxRuntimeGenAIException e)
            {
                throw new ArgumentException($"The chat template rejected the conversation: {e.Message}", parameterName, e);
            }
        }
    }

    /// <summary>
    /// The length of the rendering of the first <paramref name="count"/> messages when <paramref name="text"/> starts
    /// with it, else -1 (the template renders that part differently once more messages follow).
    /// </summary>
    private int PrefixLength(List<TemplateMessage> dtos, int count, string? tools, bool addGenerationPrompt, string text)
    {
        var json = Serialize(dtos.GetRange(0, count));
        var key = string.Concat(addGenerationPrompt ? "g" : "n", tools ?? string.Empty, "\0", json);
        if (!_prefixes.TryGet(key, out var prefix))
        {
            try
            {
                prefix = Apply(json, tools, addGenerationPrompt, "messages");
            }
            catch (ArgumentException)
            {
                return -1; // A template that rejects the shorter conversation: no prefix is known.
            }

            _prefixes.Set(key, prefix);
        }

        return text.StartsWith(prefix, StringComparison.Ordinal) ? prefix.Length : -1;
    }

    private static string Serialize(List<TemplateMessage> messages) => JsonSerializer.Serialize(messages, TemplateJsonContext.Default.ListTemplateMessage);

    /// <summary>
    /// Replaces every control token's string (and the sentinel character) in caller text with a sentinel and its index.
    /// Returns the same string when there is nothing to replace.
    /// </summary>
    private string Neutralize(string text, ref bool forged)
    {
        if (!text.AsSpan().ContainsAny(_guarded))
        {
            return text;
        }

        forged = true;
        var result = new StringBuilder(text.Length + 8);
        var i = 0;
        while (i < text.Length)
        {
            var at = text.AsSpan(i).IndexOfAny(_guarded);
            if (at < 0)
            {
                result.Append(text, i, text.Length - i);
                break;
            }

            at += i;
            result.Append(text, i, at - i);

            // The longest guarded string starting here (the tokenizer matches the longest).
            var index = -1;
            var length = 0;
            if (string.CompareOrdinal(text, at, Sentinel, 0, Sentinel.Length) == 0)
            {
                index = _controlTokens.Length;
                length = Sentinel.Length;
            }

            for (var t = 0; t < _controlTokens.Length; t++)
            {
                var token = _controlTokens[t];
                if (token.Length > length && string.CompareOrdinal(text, at, token, 0, token.Length) == 0)
                {
                    index = t;
                    length = token.Length;
                }
            }

            result.Append(Sentinel).Append((char)(FirstIndex + index));
            i = at + length;
        }

        return result.ToString();
    }

    /// <summary>A JSON value as the template receives it, with control-token strings in it neutralized.</summary>
    private JsonElement NeutralizeJson(JsonElement value, ref bool forged)
    {
        // Re-serialized so that escaped forms (\u003C...) are written as the characters the template will see.
        var json = JsonSerializer.Serialize(value, RelaxedJson);
        var neutral = Neutralize(json, ref forged);
        if (ReferenceEquals(neutral, json) && value.ValueKind != JsonValueKind.Undefined)
        {
            return value;
        }

        using var document = JsonDocument.Parse(neutral);
        return document.RootElement.Clone();
    }

    private List<TemplateMessage> ToTemplateMessages(List<FlatMessage> flat, ref bool forged)
    {
        var result = new List<TemplateMessage>(flat.Count);
        foreach (var m in flat)
        {
            List<TemplateToolCall>? calls = null;
            if (m.ToolCalls.Count > 0)
            {
                calls = new List<TemplateToolCall>(m.ToolCalls.Count);
                foreach (var call in m.ToolCalls)
                {
                    var arguments = JsonSerializer.SerializeToElement(
                        call.Arguments ?? new Dictionary<string, object?>(),
                        AIJsonUtilities.DefaultOptions.GetTypeInfo(typeof(IDictionary<string, object?>)));
                    calls.Add(new TemplateToolCall
                    {
                        Id = call.CallId is null ? null : Neutralize(call.CallId, ref forged),
                        Function = new TemplateFunction { Name = Neutralize(call.Name, ref forged), Arguments = NeutralizeJson(arguments, ref forged) },
                    });
                }
            }

            // Hugging Face's shape: an assistant message that only calls tools has no content (null), where the
            // template takes null; templates that print "None" or fail on null (Qwen3's) get "".
            var content = calls is not null && m.Content.Length == 0 && _nullContentForCalls ? null : Neutralize(m.Content, ref forged);
            result.Add(new TemplateMessage
            {
                Role = Neutralize(m.Role, ref forged),
                Content = content,
                ToolCalls = calls,
                ToolCallId = m.ToolCallId is null ? null : Neutralize(m.ToolCallId, ref forged),
            });
        }

        return result;
    }

    /// <summary>Every call's name and every non-empty result must be in the rendered prompt: a template that drops them is an error.</summary>
    private static void EnsureToolHistoryRendered(List<TemplateMessage> messages, string text)
    {
        for (var i = 0; i < messages.Count; i++)
        {
            var m = messages[i];
            foreach (var call in m.ToolCalls ?? [])
            {
                if (!text.Contains(call.Function.Name, StringComparison.Ordinal))
                {
                    throw new NotSupportedException(
                        $"The chat template does not render the call to '{call.Function.Name}' in message {i}: this model's template cannot take tool-call histories.");
                }
            }

            // As written (or trimmed), or as a JSON string where the template writes results with tojson (Llama 3.1's).
            if (m.Role == "tool" && m.Content is { Length: > 0 } result && !text.Contains(result.Trim(), StringComparison.Ordinal)
                && !text.Contains(JsonSerializer.Serialize(result, RelaxedJson)[1..^1], StringComparison.Ordinal))
            {
                throw new NotSupportedException(
                    $"The chat template does not render the result of call '{m.ToolCallId}' in message {i}: this model's template cannot take tool results.");
            }
        }
    }

    /// <summary>Whether the template renders an assistant message with null content and a call without printing "None" or failing.</summary>
    private bool TemplateAcceptsNullContent()
    {
        string? Probe(string? content)
        {
            var messages = new List<TemplateMessage>
            {
                new() { Role = "user", Content = "Hi" },
                new()
                {
                    Role = "assistant",
                    Content = content,
                    ToolCalls = [new TemplateToolCall { Id = "call_0", Function = new TemplateFunction { Name = "probe", Arguments = JsonSerializer.SerializeToElement(new Dictionary<string, int>(), RelaxedJson) } }],
                },
                new() { Role = "tool", Content = "done", ToolCallId = "call_0" },
            };
            try
            {
                return Apply(Serialize(messages), null, true, "messages");
            }
            catch (ArgumentException)
            {
                return null;
            }
        }

        var withNull = Probe(null);
        var withEmpty = Probe(string.Empty);
        return withNull is not null && (!withNull.Contains("None", StringComparison.Ordinal) || (withEmpty?.Contains("None", StringComparison.Ordinal) ?? false));
    }

    private sealed record FlatMessage(string Role, string Content, IReadOnlyList<FunctionCallContent> ToolCalls, string? ToolCallId);

    private static List<FlatMessage> Flatten(IReadOnlyList<ChatMessage> messages, string? instructions)
    {
        var result = new List<FlatMessage>(messages.Count + 1);
        for (var i = 0; i < messages.Count; i++)
        {
            var message = messages[i] ?? throw new ArgumentException($"Message {i} is null.", nameof(messages));
            var role = message.Role.Value;
            var text = new StringBuilder();
            var calls = new List<FunctionCallContent>();
            var results = new List<FunctionResultContent>();
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
                    case null:
                        throw new ArgumentException($"Message {i} ({role}) has a null content item.", nameof(messages));
                    default:
                        throw new NotSupportedException(
                            $"Message {i} ({role}) holds {content.GetType().Name}: this client sends text, function calls and function results only.");
                }
            }

            var body = text.ToString();
            if (body.Contains('\0', StringComparison.Ordinal))
            {
                throw new ArgumentException($"Message {i} ({role}) contains U+0000, which the tokenizer cannot encode.", nameof(messages));
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

            result.Add(new FlatMessage(role, body, calls, null));
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

    private string? ToolsJson(IList<AITool>? tools, ref bool forged)
    {
        if (tools is not { Count: > 0 })
        {
            return null;
        }

        var list = new List<TemplateTool>(tools.Count);
        foreach (var tool in tools)
        {
            if (tool is not AIFunctionDeclaration function)
            {
                throw new NotSupportedException($"Tool '{tool?.Name}' is a {tool?.GetType().Name}: only functions can be offered to a local model.");
            }

            list.Add(new TemplateTool
            {
                Function = new TemplateToolFunction
                {
                    Name = Neutralize(function.Name, ref forged),
                    Description = string.IsNullOrEmpty(function.Description) ? null : Neutralize(function.Description, ref forged),
                    Parameters = NeutralizeJson(function.JsonSchema, ref forged),
                },
            });
        }

        return JsonSerializer.Serialize(list, TemplateJsonContext.Default.ListTemplateTool);
    }
}
