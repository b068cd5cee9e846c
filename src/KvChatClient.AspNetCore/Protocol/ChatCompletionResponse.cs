using System.Text.Json.Serialization;

namespace KvChat.AspNetCore.Protocol;

// What POST /v1/chat/completions answers: a chat.completion object, or chat.completion.chunk objects as server-sent
// events. Null members are left out, except those OpenAI writes as null (marked JsonIgnoreCondition.Never).

/// <summary>A whole reply (<c>"object": "chat.completion"</c>).</summary>
internal sealed class ChatCompletion
{
    public required string Id { get; init; }

    public string Object { get; init; } = "chat.completion";

    public required long Created { get; init; }

    public required string Model { get; init; }

    public required List<CompletionChoice> Choices { get; init; }

    public Usage? Usage { get; init; }
}

/// <summary>The one choice of a reply.</summary>
internal sealed class CompletionChoice
{
    public int Index { get; init; }

    public required AssistantMessage Message { get; init; }

    [JsonIgnore(Condition = JsonIgnoreCondition.Never)]
    public object? Logprobs { get; init; }

    public required string FinishReason { get; init; }
}

/// <summary>The assistant message of a reply: text, or tool calls with <c>content: null</c>.</summary>
internal sealed class AssistantMessage
{
    public string Role { get; init; } = "assistant";

    [JsonIgnore(Condition = JsonIgnoreCondition.Never)]
    public string? Content { get; init; }

    [JsonIgnore(Condition = JsonIgnoreCondition.Never)]
    public string? Refusal { get; init; }

    public List<ToolCall>? ToolCalls { get; init; }
}

/// <summary>A tool call: in a reply, in a request's assistant message, or as a streamed delta (with its index).</summary>
internal sealed class ToolCall
{
    public int? Index { get; init; }

    public string? Id { get; init; }

    public string? Type { get; init; }

    public FunctionCall? Function { get; init; }
}

/// <summary>The function a tool call names and its arguments as a JSON string.</summary>
internal sealed class FunctionCall
{
    public string? Name { get; init; }

    public string? Arguments { get; init; }
}

/// <summary>Token counts: <c>prompt_tokens_details.cached_tokens</c> are the prompt tokens served from the KV cache.</summary>
internal sealed class Usage
{
    public long PromptTokens { get; init; }

    public long CompletionTokens { get; init; }

    public long TotalTokens { get; init; }

    public required PromptTokensDetails PromptTokensDetails { get; init; }
}

/// <summary>The breakdown of the prompt tokens.</summary>
internal sealed class PromptTokensDetails
{
    public long CachedTokens { get; init; }
}

/// <summary>One server-sent event of a streamed reply (<c>"object": "chat.completion.chunk"</c>).</summary>
internal sealed class ChatCompletionChunk
{
    public required string Id { get; init; }

    public string Object { get; init; } = "chat.completion.chunk";

    public required long Created { get; init; }

    public required string Model { get; init; }

    public required List<ChunkChoice> Choices { get; init; }

    public Usage? Usage { get; init; }
}

/// <summary>The change a chunk brings to the one choice.</summary>
internal sealed class ChunkChoice
{
    public int Index { get; init; }

    public required Delta Delta { get; init; }

    [JsonIgnore(Condition = JsonIgnoreCondition.Never)]
    public object? Logprobs { get; init; }

    [JsonIgnore(Condition = JsonIgnoreCondition.Never)]
    public string? FinishReason { get; init; }
}

/// <summary>The role (first chunk), a piece of text, or pieces of tool calls.</summary>
internal sealed class Delta
{
    public string? Role { get; init; }

    public string? Content { get; init; }

    public List<ToolCall>? ToolCalls { get; init; }
}

/// <summary><c>GET /v1/models</c>.</summary>
internal sealed class ModelList
{
    public string Object { get; init; } = "list";

    public required List<ModelInfo> Data { get; init; }
}

/// <summary>A served model.</summary>
internal sealed class ModelInfo
{
    public required string Id { get; init; }

    public string Object { get; init; } = "model";

    public required long Created { get; init; }

    public required string OwnedBy { get; init; }
}

/// <summary>OpenAI's error body: <c>{ "error": { "message", "type", "param", "code" } }</c>.</summary>
internal sealed class ErrorResponse
{
    public required ErrorBody Error { get; init; }
}

/// <summary>What went wrong, its kind, the request field at fault and a machine-readable code.</summary>
internal sealed class ErrorBody
{
    public required string Message { get; init; }

    public required string Type { get; init; }

    [JsonIgnore(Condition = JsonIgnoreCondition.Never)]
    public string? Param { get; init; }

    [JsonIgnore(Condition = JsonIgnoreCondition.Never)]
    public string? Code { get; init; }
}
