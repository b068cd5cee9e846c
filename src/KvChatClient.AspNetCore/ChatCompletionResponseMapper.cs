using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using KvChat.AspNetCore.Protocol;
using Microsoft.Extensions.AI;

namespace KvChat.AspNetCore;

/// <summary>Writes MEAI replies as OpenAI objects: a whole <c>chat.completion</c>, or the pieces of a streamed one.</summary>
internal static class ChatCompletionResponseMapper
{
    public static ChatCompletion Completion(ChatResponse response, string model)
    {
        var contents = response.Messages.SelectMany(m => m.Contents).ToList();
        var calls = contents.OfType<FunctionCallContent>().Select(c => ToolCallOf(c, index: null)).ToList();
        var text = string.Concat(contents.OfType<TextContent>().Select(t => t.Text));
        var reasoning = string.Concat(contents.OfType<TextReasoningContent>().Select(r => r.Text));
        var message = new AssistantMessage
        {
            Content = calls.Count > 0 && text.Length == 0 ? null : text,
            ReasoningContent = reasoning.Length > 0 ? reasoning : null,
            ToolCalls = calls.Count > 0 ? calls : null,
        };
        var choice = new Choice { Message = message, FinishReason = FinishReason(response.FinishReason, calls.Count > 0) };
        return Reply(ChatCompletion.WholeObject, CompletionId(response.ResponseId), Created(response.CreatedAt), model, [choice], UsageOf(response.Usage));
    }

    /// <summary>A reply object: the whole reply, or a chunk of a streamed one (all chunks share the id and the time).</summary>
    public static ChatCompletion Reply(string kind, string id, long created, string model, List<Choice> choices, Usage? usage) =>
        new() { Object = kind, Id = id, Created = created, Model = model, Choices = choices, Usage = usage };

    /// <summary>OpenAI's finish reasons; a reply that ends in tool calls says <c>tool_calls</c> even if the client said stop.</summary>
    public static string FinishReason(ChatFinishReason? reason, bool calledTools)
    {
        if (calledTools || reason == ChatFinishReason.ToolCalls)
        {
            return "tool_calls";
        }

        if (reason == ChatFinishReason.Length)
        {
            return "length";
        }

        return reason == ChatFinishReason.ContentFilter ? "content_filter" : "stop";
    }

    public static Usage UsageOf(UsageDetails? usage)
    {
        var input = usage?.InputTokenCount ?? 0;
        var output = usage?.OutputTokenCount ?? 0;
        return new Usage
        {
            PromptTokens = input,
            CompletionTokens = output,
            TotalTokens = usage?.TotalTokenCount ?? input + output,
            PromptTokensDetails = new PromptTokensDetails { CachedTokens = usage?.CachedInputTokenCount ?? 0 },
        };
    }

    public static ToolCall ToolCallOf(FunctionCallContent call, int? index) => new()
    {
        Index = index,
        Id = call.CallId,
        Type = "function",
        Function = new FunctionCall { Name = call.Name, Arguments = ArgumentsJson(call) },
    };

    /// <summary>A call's arguments as the JSON string OpenAI sends (<c>"{\"city\":\"Paris\"}"</c>).</summary>
    public static string ArgumentsJson(FunctionCallContent call) => call.Arguments is null
        ? "{}"
        : JsonSerializer.Serialize(call.Arguments, ArgumentsType);

    /// <summary>MEAI's options (they serialize any argument value MEAI produces), written compact as OpenAI does.</summary>
    private static readonly JsonTypeInfo ArgumentsType =
        new JsonSerializerOptions(AIJsonUtilities.DefaultOptions) { WriteIndented = false }.GetTypeInfo(typeof(IDictionary<string, object?>));

    public static string CompletionId(string? responseId) => "chatcmpl-" + (responseId ?? Guid.NewGuid().ToString("N"));

    public static long Created(DateTimeOffset? createdAt) => (createdAt ?? DateTimeOffset.UtcNow).ToUnixTimeSeconds();
}
