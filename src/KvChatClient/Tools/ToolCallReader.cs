using System.Text;
using System.Text.Json;
using Microsoft.Extensions.AI;

namespace KvChat;

/// <summary>
/// Turns the JSON body of a tool-call block into <see cref="FunctionCallContent"/>s: one per call, well-formed or not.
/// </summary>
/// <remarks>
/// <para>
/// A body is one or more JSON values separated by whitespace, commas or semicolons. A value is a call object or an
/// array of call objects. A call object is <c>{"name": "...", "arguments": {...}}</c>; <c>"parameters"</c> is accepted
/// for <c>"arguments"</c> (Llama 3), and so is the OpenAI shape <c>{"function": {"name": ..., "arguments": ...}}</c>.
/// Arguments may be missing or <c>null</c> (no arguments), an object, or a string holding a JSON object (OpenAI style).
/// Other keys are ignored. Comments and trailing commas are tolerated.
/// </para>
/// <para>
/// Every problem becomes a call whose <see cref="FunctionCallContent.Exception"/> is an
/// <see cref="InvalidOperationException"/> naming the problem and quoting the raw text; its
/// <see cref="AIContent.RawRepresentation"/> is the raw text as a <see cref="string"/>: the call's own JSON when the
/// JSON parsed, otherwise the whole block with its markers. A malformed call keeps the name the model wrote when one
/// could be read, and is named <c>""</c> otherwise. Its <see cref="FunctionCallContent.Arguments"/> are
/// <see langword="null"/> unless only the name was wrong (a tool that was not offered).
/// </para>
/// <para>Argument values are <see cref="JsonElement"/>s (JSON <c>null</c> becomes <see langword="null"/>), as MEAI's own adapters produce.</para>
/// </remarks>
internal sealed class ToolCallReader
{
    private const int MaxQuotedLength = 2000;

    private static readonly JsonReaderOptions ReaderOptions = new()
    {
        AllowMultipleValues = true,
        AllowTrailingCommas = true,
        CommentHandling = JsonCommentHandling.Skip,
        MaxDepth = 64,
    };

    private static readonly JsonDocumentOptions DocumentOptions = new()
    {
        AllowTrailingCommas = true,
        CommentHandling = JsonCommentHandling.Skip,
        MaxDepth = 64,
    };

    private readonly HashSet<string>? _toolNames;
    private readonly Func<string> _newCallId;

    /// <summary>Creates a reader.</summary>
    /// <param name="toolNames">The offered tools' names (ordinal); <see langword="null"/> to accept any name.</param>
    /// <param name="newCallId">Makes the id of each call, well-formed or not.</param>
    public ToolCallReader(IEnumerable<string>? toolNames, Func<string> newCallId)
    {
        ArgumentNullException.ThrowIfNull(newCallId);
        _toolNames = toolNames is null ? null : new HashSet<string>(toolNames, StringComparer.Ordinal);
        _newCallId = newCallId;
    }

    /// <summary>
    /// Reads a block body; adds its calls to <paramref name="calls"/>.
    /// </summary>
    /// <param name="body">The text between the markers (or after an opening marker without a closing one).</param>
    /// <param name="raw">The whole block, markers included, quoted by malformed calls.</param>
    /// <param name="trailingTextAllowed">
    /// Whether text that follows at least one JSON value and does not start like JSON (<c>{</c> or <c>[</c>) is
    /// ordinary text rather than a malformed call: true for blocks that run to the end of the reply.
    /// </param>
    /// <param name="calls">Receives the calls.</param>
    /// <returns>The index in <paramref name="body"/> where trailing text starts; <c>body.Length</c> when there is none.</returns>
    public int Read(string body, string raw, bool trailingTextAllowed, List<FunctionCallContent> calls)
    {
        ArgumentNullException.ThrowIfNull(body);
        ArgumentNullException.ThrowIfNull(calls);
        var bytes = Encoding.UTF8.GetBytes(body);
        var position = 0;
        var values = 0;
        while (true)
        {
            position = SkipSeparators(bytes, position);
            if (position == bytes.Length)
            {
                break;
            }

            if (trailingTextAllowed && values > 0 && bytes[position] is not ((byte)'{' or (byte)'['))
            {
                return Encoding.UTF8.GetCharCount(bytes, 0, position);
            }

            var reader = new Utf8JsonReader(bytes.AsSpan(position), ReaderOptions);
            JsonDocument document;
            try
            {
                document = JsonDocument.ParseValue(ref reader);
            }
            catch (JsonException e)
            {
                var what = values == 0 ? "is not valid JSON" : $"has text that is not valid JSON after its first {values} value(s)";
                var rest = body[Encoding.UTF8.GetCharCount(bytes, 0, position)..];
                calls.Add(Malformed(NameHint(rest), $"The tool call {what}: {e.Message}", raw, e));
                return body.Length;
            }

            using (document)
            {
                AddCalls(document.RootElement, raw, calls);
            }

            position += checked((int)reader.BytesConsumed);
            values++;
        }

        if (values == 0)
        {
            calls.Add(Malformed(string.Empty, "The tool call block is empty.", raw, null));
        }

        return body.Length;
    }

    /// <summary>
    /// Decides whether a reply that starts like a bare call (<c>{"name"</c>) is one: its first value is invalid JSON
    /// (a broken call), or an object (or an array whose first item is an object) whose <c>"name"</c> is a string and
    /// that has <c>"arguments"</c> or <c>"parameters"</c> or names an offered tool. Otherwise it is ordinary JSON text,
    /// such as <c>{"name": "Alice", "age": 30}</c>.
    /// </summary>
    /// <param name="body">The reply from its first non-whitespace character.</param>
    /// <returns>Whether the reply is a call.</returns>
    public bool IsBareCall(string body)
    {
        ArgumentNullException.ThrowIfNull(body);
        var bytes = Encoding.UTF8.GetBytes(body);
        var reader = new Utf8JsonReader(bytes, ReaderOptions);
        try
        {
            using var document = JsonDocument.ParseValue(ref reader);
            var first = document.RootElement;
            if (first.ValueKind == JsonValueKind.Array)
            {
                if (first.GetArrayLength() == 0)
                {
                    return false;
                }

                first = first[0];
            }

            return first.ValueKind == JsonValueKind.Object
                && first.TryGetProperty("name", out var name)
                && name.ValueKind == JsonValueKind.String
                && (first.TryGetProperty("arguments", out _) || first.TryGetProperty("parameters", out _) || (_toolNames?.Contains(name.GetString()!) ?? false));
        }
        catch (JsonException)
        {
            return true;
        }
    }

    /// <summary>Makes the call for an unterminated block.</summary>
    /// <param name="close">The closing marker that never came.</param>
    /// <param name="body">The text after the opening marker.</param>
    /// <param name="raw">The whole block as far as it went.</param>
    /// <returns>A malformed call.</returns>
    public FunctionCallContent Unterminated(string close, string body, string raw)
    {
        ArgumentNullException.ThrowIfNull(close);
        ArgumentNullException.ThrowIfNull(body);
        return Malformed(NameHint(body), $"The tool call was not terminated: the reply ended before '{close}'.", raw, null);
    }

    private void AddCalls(JsonElement value, string raw, List<FunctionCallContent> calls)
    {
        switch (value.ValueKind)
        {
            case JsonValueKind.Object:
                calls.Add(ToCall(value, raw));
                break;
            case JsonValueKind.Array:
                if (value.GetArrayLength() == 0)
                {
                    calls.Add(Malformed(string.Empty, "The tool call list is empty.", raw, null));
                }

                var index = 0;
                foreach (var item in value.EnumerateArray())
                {
                    calls.Add(item.ValueKind == JsonValueKind.Object
                        ? ToCall(item, raw)
                        : Malformed(string.Empty, $"Item {index} of the tool call list is a JSON {Kind(item)}, not an object.", raw, null));
                    index++;
                }

                break;
            default:
                calls.Add(Malformed(string.Empty, $"The tool call is a JSON {Kind(value)}, not an object.", raw, null));
                break;
        }
    }

    private FunctionCallContent ToCall(JsonElement call, string blockRaw)
    {
        var json = call.GetRawText();
        var function = call;
        if (!call.TryGetProperty("name", out var name) && call.TryGetProperty("function", out var inner) && inner.ValueKind == JsonValueKind.Object)
        {
            function = inner;
            function.TryGetProperty("name", out name);
        }

        if (name.ValueKind != JsonValueKind.String)
        {
            var problem = name.ValueKind == JsonValueKind.Undefined
                ? "The tool call has no \"name\"."
                : $"The tool call's \"name\" is a JSON {Kind(name)}, not a string.";
            return Malformed(string.Empty, problem, json, null);
        }

        var text = name.GetString()!;
        if (string.IsNullOrWhiteSpace(text))
        {
            return Malformed(text, "The tool call's \"name\" is empty.", json, null);
        }

        if (!function.TryGetProperty("arguments", out var arguments))
        {
            function.TryGetProperty("parameters", out arguments);
        }

        var result = FunctionCallContent.CreateFromParsedArguments(arguments, _newCallId(), text, ParseArguments);
        result.RawRepresentation = json;
        if (result.Exception is { } e)
        {
            var cause = e.InnerException ?? e;
            result.Exception = Error($"The arguments of the call to '{text}' are not a JSON object: {cause.Message}", json, cause);
        }
        else if (_toolNames is not null && !_toolNames.Contains(text))
        {
            var offered = _toolNames.Count == 0 ? "none were offered" : "offered: " + string.Join(", ", _toolNames.Order(StringComparer.Ordinal));
            result.Exception = Error($"The model called '{text}', which is not an offered tool ({offered}).", json, null);
        }

        return result;
    }

    private static Dictionary<string, object?> ParseArguments(JsonElement arguments)
    {
        switch (arguments.ValueKind)
        {
            case JsonValueKind.Undefined:
            case JsonValueKind.Null:
                return new Dictionary<string, object?>(StringComparer.Ordinal);
            case JsonValueKind.Object:
                return ToDictionary(arguments);
            case JsonValueKind.String:
                var text = arguments.GetString()!;
                JsonDocument document;
                try
                {
                    document = JsonDocument.Parse(text, DocumentOptions);
                }
                catch (JsonException e)
                {
                    throw new JsonException($"\"arguments\" is a string that is not JSON ({Quote(text, 200)}).", e);
                }

                using (document)
                {
                    return document.RootElement.ValueKind == JsonValueKind.Object
                        ? ToDictionary(document.RootElement)
                        : throw new JsonException($"\"arguments\" is a string holding a JSON {Kind(document.RootElement)}, not an object.");
                }

            default:
                throw new JsonException($"\"arguments\" is a JSON {Kind(arguments)}.");
        }
    }

    private static Dictionary<string, object?> ToDictionary(JsonElement arguments)
    {
        var result = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var property in arguments.EnumerateObject())
        {
            result[property.Name] = property.Value.ValueKind == JsonValueKind.Null ? null : property.Value.Clone();
        }

        return result;
    }

    private FunctionCallContent Malformed(string name, string problem, string raw, Exception? inner)
        => new(_newCallId(), name, null) { Exception = Error(problem, raw, inner), RawRepresentation = raw };

    private static InvalidOperationException Error(string problem, string raw, Exception? inner)
        => new($"{problem} Raw text: {Quote(raw, MaxQuotedLength)}", inner);

    private static string Quote(string text, int max)
        => text.Length <= max ? $"'{text}'" : $"'{text[..max]}' (cut; {text.Length} characters in all)";

    private static string Kind(JsonElement element) => element.ValueKind switch
    {
        JsonValueKind.Object => "object",
        JsonValueKind.Array => "array",
        JsonValueKind.String => "string",
        JsonValueKind.Number => "number",
        JsonValueKind.True or JsonValueKind.False => "boolean",
        _ => "null",
    };

    /// <summary>
    /// The name written in a body that is not valid JSON, when its start reads <c>{"name": "x"</c> (possibly inside
    /// <c>[</c>), so a broken call still says what it tried to call; <c>""</c> otherwise.
    /// </summary>
    private static string NameHint(string body)
    {
        var span = body.AsSpan().TrimStart();
        if (span.StartsWith("[", StringComparison.Ordinal))
        {
            span = span[1..].TrimStart();
        }

        if (!span.StartsWith("{", StringComparison.Ordinal))
        {
            return string.Empty;
        }

        span = span[1..].TrimStart();
        if (!span.StartsWith("\"name\"", StringComparison.Ordinal))
        {
            return string.Empty;
        }

        span = span[6..].TrimStart();
        if (!span.StartsWith(":", StringComparison.Ordinal))
        {
            return string.Empty;
        }

        span = span[1..].TrimStart();
        if (!span.StartsWith("\"", StringComparison.Ordinal))
        {
            return string.Empty;
        }

        span = span[1..];
        var end = span.IndexOfAny('"', '\\');
        return end > 0 && span[end] == '"' ? span[..end].ToString() : string.Empty;
    }

    private static int SkipSeparators(byte[] bytes, int position)
    {
        while (position < bytes.Length && bytes[position] is (byte)' ' or (byte)'\t' or (byte)'\r' or (byte)'\n' or (byte)',' or (byte)';')
        {
            position++;
        }

        return position;
    }
}
