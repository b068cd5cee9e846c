using System.Text.Json;
using System.Text.Json.Serialization;

namespace KvChat;

/// <summary>
/// A message as chat templates read it (the Hugging Face / OpenAI shape): <c>role</c>, <c>content</c> (null for an
/// assistant message that only calls tools, where the template accepts null), <c>tool_calls</c>, <c>tool_call_id</c>.
/// </summary>
internal sealed class TemplateMessage
{
    [JsonPropertyName("role")]
    public required string Role { get; init; }

    [JsonPropertyName("content")]
    [JsonIgnore(Condition = JsonIgnoreCondition.Never)]
    public required string? Content { get; init; }

    [JsonPropertyName("tool_calls")]
    public IReadOnlyList<TemplateToolCall>? ToolCalls { get; init; }

    [JsonPropertyName("tool_call_id")]
    public string? ToolCallId { get; init; }
}

/// <summary>A call in an assistant message: <c>{id, type: "function", function: {name, arguments}}</c>.</summary>
internal sealed class TemplateToolCall
{
    [JsonPropertyName("id")]
    public string? Id { get; init; }

    [JsonPropertyName("type")]
    public string Type { get; init; } = "function";

    [JsonPropertyName("function")]
    public required TemplateFunction Function { get; init; }
}

/// <summary>A called function: its name and its arguments as a JSON object.</summary>
internal sealed class TemplateFunction
{
    [JsonPropertyName("name")]
    public required string Name { get; init; }

    [JsonPropertyName("arguments")]
    public required JsonElement Arguments { get; init; }
}

/// <summary>An offered tool: <c>{type: "function", function: {name, description, parameters}}</c>.</summary>
internal sealed class TemplateTool
{
    [JsonPropertyName("type")]
    public string Type { get; init; } = "function";

    [JsonPropertyName("function")]
    public required TemplateToolFunction Function { get; init; }
}

/// <summary>An offered function: name, description and the JSON schema of its parameters.</summary>
internal sealed class TemplateToolFunction
{
    [JsonPropertyName("name")]
    public required string Name { get; init; }

    [JsonPropertyName("description")]
    public string? Description { get; init; }

    [JsonPropertyName("parameters")]
    public required JsonElement Parameters { get; init; }
}

/// <summary>Source-generated serialization of what the chat template receives.</summary>
[JsonSourceGenerationOptions(DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(List<TemplateMessage>))]
[JsonSerializable(typeof(List<TemplateTool>))]
internal sealed partial class TemplateJsonContext : JsonSerializerContext;
