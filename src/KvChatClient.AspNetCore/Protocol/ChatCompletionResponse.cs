using System.Text.Json.Serialization;

namespace KvChat.AspNetCore.Protocol;

// What POST /v1/chat/completions answers: a chat.completion object, or chat.completion.chunk objects as server-sent
// events. Null members are left out, except those OpenAI writes as null (marked JsonIgnoreCondition.Never).

/// <summary>
/// A reply: a whole one (<see cref="WholeObject"/>, its choice holds the <see cref="Choice.Message"/>), or one
/// server-sent event of a streamed one (<see cref="ChunkObject"/>, its choice holds a <see cref="Choice.Delta"/>; the
/// usage chunk has no choice at all).
/// </summary>
internal sealed class ChatCompletion
{
    public const string WholeObject = "chat.completion";

    public const string ChunkObject = "chat.completion.chunk";

    public required string Id { get; init; }

    public required string Object { get; init; }

    public required long Created { get; init; }

    public required string Model { get; init; }

    public required List<Choice> Choices { get; init; }

    public Usage? Usage { get; init; }
}

/// <summary>The one choice: the whole message of a reply, or the change a chunk brings to it (then the finish reason is null until the end).</summary>
internal sealed class Choice
{
    public int Index { get; init; }

    public AssistantMessage? Message { get; init; }

    public MessageDelta? Delta { get; init; }

    [JsonIgnore(Condition = JsonIgnoreCondition.Never)]
    public object? Logprobs { get; init; }

    [JsonIgnore(Condition = JsonIgnoreCondition.Never)]
    public string? FinishReason { get; init; }
}

/// <summary>
/// What a chunk brings to the assistant message: the role (first chunk), a piece of reasoning or of text, or pieces of
/// tool calls. What a chunk does not change is left out.
/// </summary>
/// <remarks>
/// <c>reasoning_content</c> is not OpenAI's: it is what OpenAI-compatible servers for reasoning models (vLLM, SGLang,
/// llama.cpp, DeepSeek's API) write, and what OpenAI clients that show reasoning read.
/// </remarks>
internal class MessageDelta
{
    public string? Role { get; init; }

    public virtual string? Content { get; init; }

    public string? ReasoningContent { get; init; }

    public List<ToolCall>? ToolCalls { get; init; }
}

/// <summary>
/// The whole assistant message of a reply: the fields of a <see cref="MessageDelta"/>, with <c>content</c> and
/// <c>refusal</c> written as null when there is none (a reply of tool calls has <c>content: null</c>), as OpenAI does.
/// </summary>
internal sealed class AssistantMessage : MessageDelta
{
    public AssistantMessage() => Role = "assistant";

    [JsonIgnore(Condition = JsonIgnoreCondition.Never)]
    public override string? Content { get; init; }

    [JsonIgnore(Condition = JsonIgnoreCondition.Never)]
    public string? Refusal { get; init; }
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
