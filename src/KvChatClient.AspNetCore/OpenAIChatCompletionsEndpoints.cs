using System.Net;
using System.Text.Json;
using KvChat.AspNetCore;
using KvChat.AspNetCore.Protocol;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Microsoft.AspNetCore.Builder;

/// <summary>Maps the OpenAI Chat Completions API over the <see cref="IChatClient"/> in dependency injection.</summary>
/// <remarks>
/// No library serves this: Microsoft.Extensions.AI.OpenAI is the client side of the same wire format, and the Agent
/// Framework's OpenAI hosting serves agents, not a bare chat client; so the DTOs and mappers are this package's own.
/// </remarks>
public static partial class OpenAIChatCompletionsEndpointRouteBuilderExtensions
{
    /// <summary>
    /// Maps <c>POST /v1/chat/completions</c> (whole replies and server-sent events), <c>GET /v1/models</c> and
    /// <c>GET /v1/models/{model}</c> over the <see cref="IChatClient"/> registered in dependency injection (for
    /// KvChatClient: <c>services.AddKvChatClient(...)</c>), so that any OpenAI client can use it.
    /// </summary>
    /// <param name="endpoints">The app or route group to map on.</param>
    /// <param name="configure">Configures the model name, the keyed client and remote access; <see langword="null"/> for the defaults.</param>
    /// <returns>The <c>/v1</c> route group, to add authorization, rate limiting or CORS.</returns>
    /// <remarks>
    /// The request's messages and options become <see cref="ChatMessage"/>s and <see cref="ChatOptions"/>; a field
    /// that cannot be honoured is a 400 naming it, an unknown model a 404, a fault of the server a 500, each in
    /// OpenAI's error shape. A reasoning model's <see cref="TextReasoningContent"/> is written as
    /// <c>message.reasoning_content</c> (streamed: <c>delta.reasoning_content</c> chunks), as OpenAI-compatible servers
    /// for reasoning models write it, and <c>reasoning_content</c> on an assistant message of the history is read back
    /// as its <see cref="TextReasoningContent"/>. The usage reports <c>prompt_tokens_details.cached_tokens</c> from
    /// <see cref="UsageDetails.CachedInputTokenCount"/>. A client that disconnects cancels the generation. Only
    /// loopback clients are served unless <see cref="OpenAIChatCompletionsOptions.AllowRemoteClients"/> is set.
    /// </remarks>
    /// <exception cref="ArgumentNullException"><paramref name="endpoints"/> is <see langword="null"/>.</exception>
    public static RouteGroupBuilder MapOpenAIChatCompletions(this IEndpointRouteBuilder endpoints, Action<OpenAIChatCompletionsOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        var options = new OpenAIChatCompletionsOptions();
        configure?.Invoke(options);
        var served = new ServedModel(options);

        var group = endpoints.MapGroup("/v1");
        group.AddEndpointFilter(async (context, next) =>
            options.AllowRemoteClients || IsLocal(context.HttpContext.Connection)
                ? await next(context).ConfigureAwait(false)
                : Error(new OpenAIError(403, "This server serves loopback clients only (OpenAIChatCompletionsOptions.AllowRemoteClients).", null, "remote_client_forbidden", "permission_error")));
        group.MapPost("/chat/completions", (HttpContext context) => CompleteAsync(context, served));
        group.MapGet("/models", (HttpContext context) => Results.Json(
            new ModelList { Data = [served.Info(context.RequestServices)] }, OpenAIJsonContext.Default.ModelList));
        group.MapGet("/models/{model}", (HttpContext context, string model) =>
        {
            var info = served.Info(context.RequestServices);
            return model == info.Id ? Results.Json(info, OpenAIJsonContext.Default.ModelInfo) : Error(ServedModel.NotFound(model, info.Id, param: null));
        });
        return group;
    }

    private static bool IsLocal(ConnectionInfo connection) => connection.RemoteIpAddress is not { } address || IPAddress.IsLoopback(address);

    private static IResult Error(OpenAIError error) => Results.Json(error.ToResponse(), OpenAIJsonContext.Default.ErrorResponse, statusCode: error.Status);

    private static async Task CompleteAsync(HttpContext context, ServedModel served)
    {
        var aborted = context.RequestAborted;
        var client = served.Client(context.RequestServices);
        ChatCompletionStreamWriter? stream = null;
        try
        {
            var request = await ReadAsync(context.Request, aborted).ConfigureAwait(false);
            var model = served.Check(request.Model, context.RequestServices);
            var (messages, options) = ChatCompletionRequestMapper.Map(request);
            var (streaming, includeUsage) = ChatCompletionRequestMapper.Streaming(request);
            if (!streaming)
            {
                var response = await client.GetResponseAsync(messages, options, aborted).ConfigureAwait(false);
                await Results.Json(ChatCompletionResponseMapper.Completion(response, model), OpenAIJsonContext.Default.ChatCompletion)
                    .ExecuteAsync(context).ConfigureAwait(false);
                return;
            }

            // The first update is awaited before the response starts, so that what the chat client rejects when the
            // generation starts (a prompt longer than the context) is still a 400, not a stream cut short.
            var updates = client.GetStreamingResponseAsync(messages, options, aborted).GetAsyncEnumerator(aborted);
            await using (updates.ConfigureAwait(false))
            {
                var any = await updates.MoveNextAsync().ConfigureAwait(false);
                stream = new ChatCompletionStreamWriter(context.Response, model, includeUsage);
                await stream.StartAsync(any ? updates.Current : new ChatResponseUpdate(), aborted).ConfigureAwait(false);
                while (any)
                {
                    await stream.WriteAsync(updates.Current, aborted).ConfigureAwait(false);
                    any = await updates.MoveNextAsync().ConfigureAwait(false);
                }

                await stream.FinishAsync(aborted).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (aborted.IsCancellationRequested && e is OperationCanceledException or IOException)
        {
            // The client went away (a cancelled wait, or a write to the closed connection): the generation is cancelled
            // with the request, and there is no one to answer.
        }
        catch (Exception e)
        {
            var error = OpenAIError.From(e);
            if (error.Status >= 500)
            {
                LogServerFault(context.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger(LogCategory), e);
            }

            if (stream is not null)
            {
                await stream.FailAsync(error, aborted).ConfigureAwait(false);
            }
            else if (!context.Response.HasStarted)
            {
                await Error(error).ExecuteAsync(context).ConfigureAwait(false);
            }
        }
    }

    private static async Task<ChatCompletionRequest> ReadAsync(HttpRequest request, CancellationToken cancellationToken)
    {
        try
        {
            return await JsonSerializer.DeserializeAsync(request.Body, OpenAIJsonContext.Default.ChatCompletionRequest, cancellationToken).ConfigureAwait(false)
                ?? throw new OpenAIError(400, "The request body must be a JSON object.", null);
        }
        catch (JsonException e)
        {
            // e.Path is "$.messages[0].content" for a value of the wrong type; the field is named without the "$.".
            var param = e.Path is { Length: > 2 } path ? path[2..] : null;
            throw new OpenAIError(400, $"We could not parse the JSON body of your request: {e.Message}", param);
        }
    }

    private const string LogCategory = "KvChat.AspNetCore.ChatCompletions";

    [LoggerMessage(1, LogLevel.Error, "A chat completion request failed on the server.")]
    private static partial void LogServerFault(ILogger logger, Exception exception);

    /// <summary>The chat client served and the model name it answers to.</summary>
    private sealed class ServedModel(OpenAIChatCompletionsOptions options)
    {
        private readonly long _created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

        public IChatClient Client(IServiceProvider services) => options.ServiceKey is { } key
            ? services.GetRequiredKeyedService<IChatClient>(key)
            : services.GetRequiredService<IChatClient>();

        public string Id(IServiceProvider services) =>
            options.ModelId ?? Client(services).GetService<ChatClientMetadata>()?.DefaultModelId ?? "default";

        public ModelInfo Info(IServiceProvider services) => new() { Id = Id(services), Created = _created, OwnedBy = "kvchatclient" };

        /// <summary>The model a request names: it must be this one.</summary>
        public string Check(string? model, IServiceProvider services)
        {
            if (string.IsNullOrEmpty(model))
            {
                throw OpenAIError.Bad("model", "You must provide a model parameter.");
            }

            var id = Id(services);
            return model == id ? id : throw NotFound(model, id, "model");
        }

        public static OpenAIError NotFound(string model, string served, string? param) =>
            new(404, $"The model '{model}' does not exist; this server serves '{served}'.", param, "model_not_found");
    }
}
