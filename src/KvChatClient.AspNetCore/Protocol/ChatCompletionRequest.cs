using System.Text.Json;
using System.Text.Json.Serialization;

namespace KvChat.AspNetCore.Protocol;

// The body of POST /v1/chat/completions as OpenAI defines it. Fields that take one of several JSON shapes
// (content, stop, tool_choice, schemas) stay JsonElement and are read by ChatCompletionRequestMapper.

/// <summary>A chat completion request.</summary>
internal sealed class ChatCompletionRequest
{
    public string? Model { get; set; }

    public List<RequestMessage?>? Messages { get; set; }

    public List<ToolDefinition?>? Tools { get; set; }

    public JsonElement? ToolChoice { get; set; }

    public bool? ParallelToolCalls { get; set; }

    public ResponseFormat? ResponseFormat { get; set; }

    public int? MaxTokens { get; set; }

    public int? MaxCompletionTokens { get; set; }

    public float? Temperature { get; set; }

    public float? TopP { get; set; }

    /// <summary>Not an OpenAI field; llama.cpp, vLLM and Ollama's OpenAI endpoints take it.</summary>
    public int? TopK { get; set; }

    public long? Seed { get; set; }

    public JsonElement? Stop { get; set; }

    public float? FrequencyPenalty { get; set; }

    public float? PresencePenalty { get; set; }

    public int? N { get; set; }

    public bool? Stream { get; set; }

    public StreamOptions? StreamOptions { get; set; }

    public bool? Logprobs { get; set; }

    public int? TopLogprobs { get; set; }

    public JsonElement? LogitBias { get; set; }

    /// <summary>An end-user id for abuse monitoring: accepted, not used.</summary>
    public string? User { get; set; }

    /// <summary>Whether OpenAI stores the completion: only <see langword="false"/> (or absent) is accepted.</summary>
    public bool? Store { get; set; }

    /// <summary>Fields OpenAI does not define or this server does not know: each is a 400 naming it.</summary>
    [JsonExtensionData]
    public Dictionary<string, JsonElement>? Unknown { get; set; }
}

/// <summary>A message of <see cref="ChatCompletionRequest.Messages"/>.</summary>
internal sealed class RequestMessage
{
    public string? Role { get; set; }

    /// <summary>A string, an array of content parts, or null (an assistant message with tool calls).</summary>
    public JsonElement? Content { get; set; }

    public string? Name { get; set; }

    public List<ToolCall?>? ToolCalls { get; set; }

    public string? ToolCallId { get; set; }

    /// <summary>
    /// An assistant's reasoning, as OpenAI-compatible servers for reasoning models write it in their replies and clients
    /// send it back in the history: it becomes the message's <c>TextReasoningContent</c>.
    /// </summary>
    public string? ReasoningContent { get; set; }

    /// <summary>An assistant's refusal text, echoed back by clients: accepted when null.</summary>
    public string? Refusal { get; set; }

    [JsonExtensionData]
    public Dictionary<string, JsonElement>? Unknown { get; set; }
}

/// <summary>A tool offered to the model: <c>{ "type": "function", "function": { ... } }</c>.</summary>
internal sealed class ToolDefinition
{
    public string? Type { get; set; }

    public FunctionDefinition? Function { get; set; }
}

/// <summary>A function's name, description and JSON schema of its parameters.</summary>
internal sealed class FunctionDefinition
{
    public string? Name { get; set; }

    public string? Description { get; set; }

    public JsonElement? Parameters { get; set; }

    public bool? Strict { get; set; }
}

/// <summary><c>{ "type": "text" | "json_object" | "json_schema", "json_schema": { ... } }</c>.</summary>
internal sealed class ResponseFormat
{
    public string? Type { get; set; }

    public JsonSchemaFormat? JsonSchema { get; set; }
}

/// <summary>The schema a <c>json_schema</c> response follows.</summary>
internal sealed class JsonSchemaFormat
{
    public string? Name { get; set; }

    public string? Description { get; set; }

    public JsonElement? Schema { get; set; }

    public bool? Strict { get; set; }
}

/// <summary><c>{ "include_usage": true }</c>: a last chunk with the usage and no choices.</summary>
internal sealed class StreamOptions
{
    public bool? IncludeUsage { get; set; }
}
