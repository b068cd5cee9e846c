using System.Globalization;
using System.Text.Json;
using KvChat.AspNetCore.Protocol;
using Microsoft.Extensions.AI;

namespace KvChat.AspNetCore;

/// <summary>
/// Reads an OpenAI chat completion request into <see cref="ChatMessage"/>s and <see cref="ChatOptions"/>, checking
/// every field: a value that cannot be honoured is a 400 naming the field, never dropped.
/// </summary>
internal static class ChatCompletionRequestMapper
{
    public static (List<ChatMessage> Messages, ChatOptions Options) Map(ChatCompletionRequest request)
    {
        RejectUnknown(request.Unknown, prefix: string.Empty);
        RejectUnsupported(request);
        return (Messages(request.Messages), Options(request));
    }

    /// <summary>Whether the reply streams, and whether the stream ends with a usage chunk.</summary>
    public static (bool Stream, bool IncludeUsage) Streaming(ChatCompletionRequest request)
    {
        var stream = request.Stream == true;
        if (!stream && request.StreamOptions is not null)
        {
            throw OpenAIError.Bad("stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.");
        }

        return (stream, request.StreamOptions?.IncludeUsage == true);
    }

    private static void RejectUnknown(Dictionary<string, JsonElement>? unknown, string prefix)
    {
        if (unknown is { Count: > 0 })
        {
            var name = prefix + unknown.Keys.First();
            throw OpenAIError.Bad(name, $"Unrecognized request argument supplied: {name}", "unknown_parameter");
        }
    }

    private static void RejectUnsupported(ChatCompletionRequest request)
    {
        if (request.N is { } n && n != 1)
        {
            throw OpenAIError.Bad("n", $"'n' is {n}: this server generates one choice per request.", "unsupported_value");
        }

        if (request.Logprobs == true || request.TopLogprobs is not null)
        {
            throw OpenAIError.Bad(request.Logprobs == true ? "logprobs" : "top_logprobs", "Log probabilities are not supported by this server.", "unsupported_parameter");
        }

        if (request.LogitBias is { ValueKind: not JsonValueKind.Null } bias && !(bias.ValueKind == JsonValueKind.Object && !bias.EnumerateObject().Any()))
        {
            throw OpenAIError.Bad("logit_bias", "'logit_bias' is not supported by this server.", "unsupported_parameter");
        }

        if (request.Store == true)
        {
            throw OpenAIError.Bad("store", "This server stores no completions: 'store' must be false.", "unsupported_value");
        }
    }

    private static List<ChatMessage> Messages(List<RequestMessage?>? messages)
    {
        if (messages is not { Count: > 0 })
        {
            throw OpenAIError.Bad("messages", "'messages' must be a non-empty array of messages.");
        }

        var list = new List<ChatMessage>(messages.Count);
        for (var i = 0; i < messages.Count; i++)
        {
            list.Add(Message(messages[i], $"messages[{i}]"));
        }

        return list;
    }

    private static ChatMessage Message(RequestMessage? message, string at)
    {
        if (message is null)
        {
            throw OpenAIError.Bad(at, $"'{at}' must be a message object.");
        }

        RejectUnknown(message.Unknown, at + ".");
        if (message.Refusal is not null)
        {
            throw OpenAIError.Bad(at + ".refusal", $"'{at}.refusal' is not supported: send the text as 'content'.", "unsupported_parameter");
        }

        var role = message.Role;
        var result = role switch
        {
            "system" or "developer" => new ChatMessage(ChatRole.System, Texts(message.Content, at, required: true)),
            "user" => new ChatMessage(ChatRole.User, Texts(message.Content, at, required: true)),
            "assistant" => Assistant(message, at),
            "tool" => Tool(message, at),
            null => throw new OpenAIError(400, $"'{at}.role' is required.", at + ".role"),
            _ => throw new OpenAIError(400, $"'{at}.role' is '{role}': use 'system', 'developer', 'user', 'assistant' or 'tool'.", at + ".role", "invalid_value"),
        };
        if (role is not "assistant" && message.ToolCalls is not null)
        {
            throw OpenAIError.Bad(at + ".tool_calls", $"'{at}.tool_calls' is only allowed on assistant messages.");
        }

        if (role is not "assistant" && message.ReasoningContent is not null)
        {
            throw OpenAIError.Bad(at + ".reasoning_content", $"'{at}.reasoning_content' is only allowed on assistant messages.");
        }

        if (role is not "tool" && message.ToolCallId is not null)
        {
            throw OpenAIError.Bad(at + ".tool_call_id", $"'{at}.tool_call_id' is only allowed on tool messages.");
        }

        result.AuthorName = message.Name;
        return result;
    }

    /// <summary>
    /// An assistant message: its reasoning (<c>reasoning_content</c>, kept even when empty, as Hugging Face's templates
    /// tell an empty string from none), its text and its tool calls; the client renders the reasoning the way the
    /// model's template does.
    /// </summary>
    private static ChatMessage Assistant(RequestMessage message, string at)
    {
        var reasoning = message.ReasoningContent;
        var contents = Texts(message.Content, at, required: message.ToolCalls is not { Count: > 0 } && reasoning is null);
        if (reasoning is not null)
        {
            contents.Insert(0, new TextReasoningContent(reasoning));
        }

        if (message.ToolCalls is { } calls)
        {
            for (var j = 0; j < calls.Count; j++)
            {
                contents.Add(Call(calls[j], $"{at}.tool_calls[{j}]"));
            }
        }

        return new ChatMessage(ChatRole.Assistant, contents);
    }

    private static FunctionCallContent Call(ToolCall? call, string at)
    {
        if (call is null || call.Function is not { } function)
        {
            throw new OpenAIError(400, $"'{at}' needs a 'function' with a 'name' and 'arguments'.", at + ".function");
        }

        if (call.Type is not (null or "function"))
        {
            throw OpenAIError.Bad(at + ".type", $"'{at}.type' is '{call.Type}': only 'function' tool calls are supported.", "invalid_value");
        }

        if (string.IsNullOrEmpty(call.Id))
        {
            throw OpenAIError.Bad(at + ".id", $"'{at}.id' is required.");
        }

        if (string.IsNullOrEmpty(function.Name))
        {
            throw OpenAIError.Bad(at + ".function.name", $"'{at}.function.name' is required.");
        }

        return new FunctionCallContent(call.Id, function.Name, Arguments(function.Arguments, at + ".function.arguments"));
    }

    /// <summary>A call's arguments: a JSON object in a string, its values kept as <see cref="JsonElement"/>s.</summary>
    private static Dictionary<string, object?> Arguments(string? json, string at)
    {
        if (string.IsNullOrWhiteSpace(json))
        {
            return [];
        }

        Dictionary<string, JsonElement>? values;
        try
        {
            values = JsonSerializer.Deserialize(json, OpenAIJsonContext.Default.DictionaryStringJsonElement);
        }
        catch (JsonException e)
        {
            throw new OpenAIError(400, $"'{at}' is not a JSON object: {e.Message}", at);
        }

        return values?.ToDictionary(p => p.Key, p => (object?)p.Value, StringComparer.Ordinal)
            ?? throw new OpenAIError(400, $"'{at}' is not a JSON object.", at);
    }

    private static ChatMessage Tool(RequestMessage message, string at)
    {
        if (string.IsNullOrEmpty(message.ToolCallId))
        {
            throw OpenAIError.Bad(at + ".tool_call_id", $"'{at}.tool_call_id' is required on a tool message.");
        }

        var text = string.Concat(Texts(message.Content, at, required: true).OfType<TextContent>().Select(t => t.Text));
        return new ChatMessage(ChatRole.Tool, [new FunctionResultContent(message.ToolCallId, text)]);
    }

    /// <summary>A message's content: a string, or an array of <c>{ "type": "text", "text": ... }</c> parts.</summary>
    private static List<AIContent> Texts(JsonElement? content, string at, bool required)
    {
        switch (content)
        {
            case null or { ValueKind: JsonValueKind.Null }:
                if (required)
                {
                    throw OpenAIError.Bad(at + ".content", $"'{at}.content' is required.");
                }

                return [];
            case { ValueKind: JsonValueKind.String } text:
                return [new TextContent(text.GetString())];
            case { ValueKind: JsonValueKind.Array } parts:
                var list = new List<AIContent>();
                var k = 0;
                foreach (var part in parts.EnumerateArray())
                {
                    var partAt = $"{at}.content[{k++}]";
                    if (part.ValueKind != JsonValueKind.Object || !part.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String)
                    {
                        throw OpenAIError.Bad(partAt, $"'{partAt}' must be a content part with a 'type'.");
                    }

                    if (type.GetString() != "text")
                    {
                        throw OpenAIError.Bad(partAt + ".type", $"'{partAt}.type' is '{type.GetString()}': this server takes text parts only.", "unsupported_value");
                    }

                    if (!part.TryGetProperty("text", out var value) || value.ValueKind != JsonValueKind.String)
                    {
                        throw OpenAIError.Bad(partAt + ".text", $"'{partAt}.text' must be a string.");
                    }

                    list.Add(new TextContent(value.GetString()));
                }

                return list;
            default:
                throw new OpenAIError(400, $"'{at}.content' must be a string or an array of content parts.", at + ".content");
        }
    }

    private static ChatOptions Options(ChatCompletionRequest request)
    {
        var options = new ChatOptions
        {
            MaxOutputTokens = MaxTokens(request),
            Temperature = InRange(request.Temperature, 0, 2, "temperature"),
            TopP = InRange(request.TopP, 0, 1, "top_p"),
            TopK = request.TopK is < 1 ? throw new OpenAIError(400, "'top_k' must be at least 1.", "top_k") : request.TopK,
            Seed = request.Seed,
            StopSequences = Stops(request.Stop),
            FrequencyPenalty = InRange(request.FrequencyPenalty, -2, 2, "frequency_penalty"),
            PresencePenalty = InRange(request.PresencePenalty, -2, 2, "presence_penalty"),
            ResponseFormat = Format(request.ResponseFormat),
        };
        var tools = Tools(request.Tools);
        if (tools.Count > 0)
        {
            options.Tools = tools;
        }

        options.ToolMode = ToolMode(request.ToolChoice, tools);
        if (request.ParallelToolCalls is { } parallel)
        {
            options.AllowMultipleToolCalls = parallel;
        }

        return options;
    }

    private static int? MaxTokens(ChatCompletionRequest request)
    {
        // max_tokens is the older name; max_completion_tokens wins when both are given, as in OpenAI's API.
        var (value, name) = request.MaxCompletionTokens is { } completion ? (completion, "max_completion_tokens") : (request.MaxTokens, "max_tokens");
        return value is < 1 ? throw new OpenAIError(400, $"'{name}' must be at least 1; it is {value}.", name, "invalid_value") : value;
    }

    private static float? InRange(float? value, float min, float max, string name) =>
        value is { } v && (float.IsNaN(v) || v < min || v > max)
            ? throw new OpenAIError(400, string.Create(CultureInfo.InvariantCulture, $"'{name}' must be between {min} and {max}; it is {v}."), name, "invalid_value")
            : value;

    private static List<string>? Stops(JsonElement? stop)
    {
        switch (stop)
        {
            case null or { ValueKind: JsonValueKind.Null }:
                return null;
            case { ValueKind: JsonValueKind.String } one when one.GetString() is { Length: > 0 } text:
                return [text];
            case { ValueKind: JsonValueKind.Array } many:
                var list = new List<string>();
                foreach (var item in many.EnumerateArray())
                {
                    if (item.ValueKind != JsonValueKind.String || item.GetString() is not { Length: > 0 } text)
                    {
                        throw new OpenAIError(400, $"'stop[{list.Count}]' must be a non-empty string.", $"stop[{list.Count}]");
                    }

                    list.Add(text);
                }

                return list.Count > 0 ? list : null;
            default:
                throw new OpenAIError(400, "'stop' must be a non-empty string or an array of them.", "stop");
        }
    }

    private static ChatResponseFormat? Format(ResponseFormat? format)
    {
        switch (format?.Type)
        {
            case null when format is null:
                return null;
            case "text":
                return ChatResponseFormat.Text;
            case "json_object":
                return ChatResponseFormat.Json;
            case "json_schema":
                if (format.JsonSchema is not { } schema || string.IsNullOrEmpty(schema.Name))
                {
                    throw OpenAIError.Bad("response_format.json_schema.name", "'response_format.json_schema' needs a 'name' (and a 'schema').");
                }

                if (schema.Schema is { } body && body.ValueKind != JsonValueKind.Object)
                {
                    throw OpenAIError.Bad("response_format.json_schema.schema", "'response_format.json_schema.schema' must be a JSON schema object.");
                }

                return schema.Schema is { } s
                    ? ChatResponseFormat.ForJsonSchema(s, schema.Name, schema.Description)
                    : ChatResponseFormat.Json;
            default:
                throw new OpenAIError(400, $"'response_format.type' is '{format.Type}': use 'text', 'json_object' or 'json_schema'.", "response_format.type", "invalid_value");
        }
    }

    private static List<AITool> Tools(List<ToolDefinition?>? tools)
    {
        var list = new List<AITool>();
        if (tools is null)
        {
            return list;
        }

        for (var i = 0; i < tools.Count; i++)
        {
            var at = $"tools[{i}]";
            if (tools[i] is not { } tool || tool.Type != "function")
            {
                throw new OpenAIError(400, $"'{at}.type' must be 'function'.", at + ".type", "invalid_value");
            }

            if (tool.Function is not { Name: { Length: > 0 } name } function)
            {
                throw new OpenAIError(400, $"'{at}.function.name' is required.", at + ".function.name");
            }

            if (function.Parameters is { } parameters && parameters.ValueKind is not (JsonValueKind.Object or JsonValueKind.Null))
            {
                throw OpenAIError.Bad(at + ".function.parameters", $"'{at}.function.parameters' must be a JSON schema object.");
            }

            var schema = function.Parameters is { ValueKind: JsonValueKind.Object } p ? p : EmptyParameters;
            list.Add(AIFunctionFactory.CreateDeclaration(name, function.Description, schema));
        }

        return list;
    }

    private static readonly JsonElement EmptyParameters = JsonDocument.Parse("""{"type":"object","properties":{}}""").RootElement;

    private static ChatToolMode? ToolMode(JsonElement? choice, List<AITool> tools)
    {
        switch (choice)
        {
            case null or { ValueKind: JsonValueKind.Null }:
                return null;
            case { ValueKind: JsonValueKind.String } text:
                return text.GetString() switch
                {
                    "auto" => ChatToolMode.Auto,
                    "none" => ChatToolMode.None,
                    "required" when tools.Count == 0 => throw new OpenAIError(400, "'tool_choice' is 'required', but no 'tools' are given.", "tool_choice"),
                    "required" => ChatToolMode.RequireAny,
                    var other => throw new OpenAIError(400, $"'tool_choice' is '{other}': use 'none', 'auto', 'required' or a function.", "tool_choice", "invalid_value"),
                };
            case { ValueKind: JsonValueKind.Object } named
                when named.TryGetProperty("type", out var type) && type.ValueEquals("function")
                    && named.TryGetProperty("function", out var function) && function.ValueKind == JsonValueKind.Object
                    && function.TryGetProperty("name", out var name) && name.ValueKind == JsonValueKind.String:
                var required = name.GetString()!;
                if (!tools.OfType<AIFunctionDeclaration>().Any(t => t.Name == required))
                {
                    throw OpenAIError.Bad("tool_choice.function.name", $"'tool_choice' names '{required}', which is not among 'tools'.", "invalid_value");
                }

                return ChatToolMode.RequireSpecific(required);
            default:
                throw new OpenAIError(400, "'tool_choice' must be 'none', 'auto', 'required' or { \"type\": \"function\", \"function\": { \"name\": ... } }.", "tool_choice");
        }
    }
}
