using System.Net.ServerSentEvents;
using System.Runtime.CompilerServices;
using System.Text.Json;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Options;

namespace KvChat.HostingSample;

/// <summary>A message of a request: <c>{ "role": "user", "content": "..." }</c>; roles are system, user and assistant.</summary>
internal sealed record MessageDto(string? Role, string? Content);

/// <summary>
/// The body of <c>POST /chat</c> and <c>POST /chat/stream</c>: the whole conversation every time (the client finds
/// what is cached), and optionally the longest reply and a temperature.
/// </summary>
internal sealed record ChatRequestDto(IReadOnlyList<MessageDto>? Messages, int? MaxTokens = null, float? Temperature = null);

/// <summary>What a reply cost: prompt tokens, of them served from the KV cache and prefilled, and reply tokens.</summary>
internal sealed record UsageDto(long InputTokens, long CachedInputTokens, long PrefilledInputTokens, long OutputTokens)
{
    public static UsageDto From(UsageDetails? usage)
    {
        var input = usage?.InputTokenCount ?? 0;
        var cached = usage?.CachedInputTokenCount ?? 0;
        var prefilled = usage?.AdditionalCounts?.TryGetValue(KvChatUsage.PrefilledInputTokenCount, out var p) == true ? p : input - cached;
        return new UsageDto(input, cached, prefilled, usage?.OutputTokenCount ?? 0);
    }
}

/// <summary>The answer of <c>POST /chat</c>.</summary>
internal sealed record ChatReplyDto(string Reply, string? FinishReason, UsageDto Usage);

/// <summary>The last event of <c>POST /chat/stream</c> (<c>event: done</c>).</summary>
internal sealed record StreamDoneDto(string? FinishReason, UsageDto Usage);

/// <summary>A text event of <c>POST /chat/stream</c>.</summary>
internal sealed record TextChunkDto(string Text);

/// <summary>The endpoints: <c>POST /chat</c>, <c>POST /chat/stream</c> (server-sent events) and <c>GET /stats</c>.</summary>
internal static class ChatEndpoints
{
    /// <summary>The longest reply when a request names none.</summary>
    public const int DefaultMaxTokens = 256;

    public static void Map(WebApplication app)
    {
        app.MapPost("/chat", ChatAsync);
        app.MapPost("/chat/stream", StreamAsync);
        app.MapGet("/stats", (IChatClient client) =>
            client.GetService<KvCacheStatistics>() is { } statistics ? Results.Ok(statistics) : Results.NotFound());
    }

    /// <summary>Answers the conversation in one response: <c>{ "reply", "finishReason", "usage" }</c>.</summary>
    private static async Task<IResult> ChatAsync(ChatRequestDto request, IChatClient client, CancellationToken cancellationToken)
    {
        if (!TryRead(request, out var messages, out var options, out var problem))
        {
            return problem;
        }

        ChatResponse response;
        try
        {
            response = await client.GetResponseAsync(messages, options, cancellationToken);
        }
        catch (Exception e) when (e is ArgumentException or NotSupportedException)
        {
            // The prompt does not fit the context, or asks for what the client cannot do.
            return Results.Problem(e.Message, statusCode: StatusCodes.Status400BadRequest);
        }

        return Results.Ok(new ChatReplyDto(response.Text, response.FinishReason?.Value, UsageDto.From(response.Usage)));
    }

    /// <summary>
    /// Streams the reply as server-sent events: <c>event: text</c> with <c>{ "text" }</c> for each piece of text as it
    /// is generated, then one <c>event: done</c> with <c>{ "finishReason", "usage" }</c>.
    /// </summary>
    private static async Task<IResult> StreamAsync(
        ChatRequestDto request, IChatClient client, IOptions<JsonOptions> json, CancellationToken cancellationToken)
    {
        if (!TryRead(request, out var messages, out var options, out var problem))
        {
            return problem;
        }

        // Start the reply here, so that a prompt the client rejects is a 400 rather than a stream cut short.
        var updates = client.GetStreamingResponseAsync(messages, options, cancellationToken).GetAsyncEnumerator(cancellationToken);
        bool any;
        try
        {
            any = await updates.MoveNextAsync();
        }
        catch (Exception e) when (e is ArgumentException or NotSupportedException)
        {
            await updates.DisposeAsync();
            return Results.Problem(e.Message, statusCode: StatusCodes.Status400BadRequest);
        }

        return TypedResults.ServerSentEvents(Events(updates, any, json.Value.SerializerOptions, cancellationToken));
    }

    private static async IAsyncEnumerable<SseItem<string>> Events(
        IAsyncEnumerator<ChatResponseUpdate> updates, bool any, JsonSerializerOptions json, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        await using var _ = updates;
        var all = new List<ChatResponseUpdate>();
        while (any)
        {
            var update = updates.Current;
            all.Add(update);
            if (update.Text is { Length: > 0 } text)
            {
                yield return new SseItem<string>(JsonSerializer.Serialize(new TextChunkDto(text), json), "text");
            }

            cancellationToken.ThrowIfCancellationRequested();
            any = await updates.MoveNextAsync();
        }

        var response = all.ToChatResponse();
        yield return new SseItem<string>(
            JsonSerializer.Serialize(new StreamDoneDto(response.FinishReason?.Value, UsageDto.From(response.Usage)), json), "done");
    }

    private static bool TryRead(ChatRequestDto request, out List<ChatMessage> messages, out ChatOptions options, out IResult problem)
    {
        messages = [];
        options = new ChatOptions { MaxOutputTokens = request.MaxTokens ?? DefaultMaxTokens, Temperature = request.Temperature };
        problem = Results.Empty;
        string? error = null;
        if (request.Messages is not { Count: > 0 })
        {
            error = "The request needs \"messages\": [{ \"role\": \"user\", \"content\": \"...\" }].";
        }
        else if (request.MaxTokens is < 1)
        {
            error = "\"maxTokens\" must be at least 1.";
        }
        else
        {
            foreach (var (index, message) in request.Messages.Index())
            {
                ChatRole? role = message.Role?.ToUpperInvariant() switch
                {
                    "SYSTEM" => ChatRole.System,
                    "USER" => ChatRole.User,
                    "ASSISTANT" => ChatRole.Assistant,
                    _ => null,
                };
                if (role is null || message.Content is null)
                {
                    error = $"messages[{index}] needs a \"role\" (system, user or assistant) and a \"content\".";
                    break;
                }

                messages.Add(new ChatMessage(role.Value, message.Content));
            }
        }

        if (error is null)
        {
            return true;
        }

        problem = Results.Problem(error, statusCode: StatusCodes.Status400BadRequest);
        return false;
    }
}
