using System.Text.Json;
using KvChat.AspNetCore.Protocol;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.AI;

namespace KvChat.AspNetCore;

/// <summary>
/// Writes a streamed reply as OpenAI does: <c>data: {chunk}</c> events, the role in the first chunk, each piece of
/// text as a <c>delta.content</c>, each piece of a reasoning model's reasoning as a <c>delta.reasoning_content</c> (as
/// OpenAI-compatible servers for reasoning models write it), each tool call as an opening delta (index, id, name,
/// empty arguments) and a delta with its arguments, a chunk with an empty delta and the <c>finish_reason</c>, the
/// usage chunk with no choices when <c>stream_options.include_usage</c> asks for it, and <c>data: [DONE]</c>.
/// </summary>
/// <remarks>
/// Written by hand over <see cref="HttpResponse.Body"/> rather than with <c>TypedResults.ServerSentEvents</c>, because
/// an error after the first event must still be written as an event, and the closing <c>[DONE]</c> is not JSON.
/// </remarks>
internal sealed class ChatCompletionStreamWriter
{
    private static readonly byte[] DataPrefix = "data: "u8.ToArray();
    private static readonly byte[] EventEnd = "\n\n"u8.ToArray();
    private static readonly byte[] Done = "data: [DONE]\n\n"u8.ToArray();

    private readonly HttpResponse _response;
    private readonly string _model;
    private readonly bool _includeUsage;
    private string? _id;
    private long _created;
    private int _toolCalls;
    private ChatFinishReason? _finishReason;
    private UsageDetails? _usage;

    public ChatCompletionStreamWriter(HttpResponse response, string model, bool includeUsage)
    {
        _response = response;
        _model = model;
        _includeUsage = includeUsage;
    }

    /// <summary>Starts the event stream: the headers, then the chunk that names the role.</summary>
    public async Task StartAsync(ChatResponseUpdate first, CancellationToken cancellationToken)
    {
        _id = ChatCompletionResponseMapper.CompletionId(first.ResponseId);
        _created = ChatCompletionResponseMapper.Created(first.CreatedAt);
        _response.StatusCode = StatusCodes.Status200OK;
        _response.ContentType = "text/event-stream";
        _response.Headers.CacheControl = "no-cache";
        _response.HttpContext.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();
        await WriteAsync(new MessageDelta { Role = "assistant", Content = string.Empty }, finishReason: null, cancellationToken).ConfigureAwait(false);
    }

    public async Task WriteAsync(ChatResponseUpdate update, CancellationToken cancellationToken)
    {
        _finishReason = update.FinishReason ?? _finishReason;
        foreach (var content in update.Contents)
        {
            switch (content)
            {
                case TextContent { Text.Length: > 0 } text:
                    await WriteAsync(new MessageDelta { Content = text.Text }, finishReason: null, cancellationToken).ConfigureAwait(false);
                    break;
                case TextReasoningContent { Text.Length: > 0 } reasoning:
                    await WriteAsync(new MessageDelta { ReasoningContent = reasoning.Text }, finishReason: null, cancellationToken).ConfigureAwait(false);
                    break;
                case FunctionCallContent call:
                    var index = _toolCalls++;
                    var opening = new ToolCall { Index = index, Id = call.CallId, Type = "function", Function = new FunctionCall { Name = call.Name, Arguments = string.Empty } };
                    var arguments = new ToolCall { Index = index, Function = new FunctionCall { Arguments = ChatCompletionResponseMapper.ArgumentsJson(call) } };
                    await WriteAsync(new MessageDelta { ToolCalls = [opening] }, finishReason: null, cancellationToken).ConfigureAwait(false);
                    await WriteAsync(new MessageDelta { ToolCalls = [arguments] }, finishReason: null, cancellationToken).ConfigureAwait(false);
                    break;
                case UsageContent usage:
                    _usage = usage.Details;
                    break;
            }
        }
    }

    /// <summary>The finish reason, the usage when asked for, and <c>[DONE]</c>.</summary>
    public async Task FinishAsync(CancellationToken cancellationToken)
    {
        var reason = ChatCompletionResponseMapper.FinishReason(_finishReason, _toolCalls > 0);
        await WriteAsync(new MessageDelta(), reason, cancellationToken).ConfigureAwait(false);
        if (_includeUsage)
        {
            await WriteAsync(Chunk([], ChatCompletionResponseMapper.UsageOf(_usage)), cancellationToken).ConfigureAwait(false);
        }

        await _response.Body.WriteAsync(Done, cancellationToken).ConfigureAwait(false);
        await _response.Body.FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>An error after the stream started: one <c>data: {"error": ...}</c> event, and no <c>[DONE]</c>.</summary>
    public async Task FailAsync(OpenAIError error, CancellationToken cancellationToken)
    {
        await _response.Body.WriteAsync(DataPrefix, cancellationToken).ConfigureAwait(false);
        await JsonSerializer.SerializeAsync(_response.Body, error.ToResponse(), OpenAIJsonContext.Default.ErrorResponse, cancellationToken).ConfigureAwait(false);
        await _response.Body.WriteAsync(EventEnd, cancellationToken).ConfigureAwait(false);
        await _response.Body.FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    private Task WriteAsync(MessageDelta delta, string? finishReason, CancellationToken cancellationToken) =>
        WriteAsync(Chunk([new Choice { Delta = delta, FinishReason = finishReason }], usage: null), cancellationToken);

    private ChatCompletion Chunk(List<Choice> choices, Usage? usage) =>
        ChatCompletionResponseMapper.Reply(ChatCompletion.ChunkObject, _id!, _created, _model, choices, usage);

    private async Task WriteAsync(ChatCompletion chunk, CancellationToken cancellationToken)
    {
        await _response.Body.WriteAsync(DataPrefix, cancellationToken).ConfigureAwait(false);
        await JsonSerializer.SerializeAsync(_response.Body, chunk, OpenAIJsonContext.Default.ChatCompletion, cancellationToken).ConfigureAwait(false);
        await _response.Body.WriteAsync(EventEnd, cancellationToken).ConfigureAwait(false);
        await _response.Body.FlushAsync(cancellationToken).ConfigureAwait(false);
    }
}
