using System.ClientModel;
using System.Text.Json;
using Microsoft.Extensions.AI;
using OpenAI;
using Xunit;

namespace KvChat.AspNetCore.Tests;

/// <summary>
/// Microsoft.Extensions.AI.OpenAI's <c>AsIChatClient()</c> over the OpenAI SDK against the endpoint: an app written
/// for OpenAI through MEAI, pointed at the local server.
/// </summary>
public sealed class MeaiOpenAIClientTests(OpenAIServer server) : IClassFixture<OpenAIServer>
{
    private static CancellationToken Cancel => TestContext.Current.CancellationToken;

    private IChatClient Client() =>
        new OpenAIClient(new ApiKeyCredential("not-needed"), new OpenAIClientOptions { Endpoint = server.Endpoint, RetryPolicy = null })
            .GetChatClient(OpenAIServer.ModelName)
            .AsIChatClient();

    private static void Log(string line) => TestContext.Current.TestOutputHelper?.WriteLine(line);

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task TwoTurns_TurnTwoReportsCachedInputTokens(bool streamed)
    {
        using var client = Client();
        List<ChatMessage> history = [new(ChatRole.User, streamed ? "Stream me an answer." : "Answer me.")];
        var options = new ChatOptions { MaxOutputTokens = 48 };

        var first = await AskAsync(client, history, options, streamed);
        Assert.Equal(OpenAIServer.Reply, first.Text);
        Assert.Equal(ChatFinishReason.Stop, first.FinishReason);
        history.AddMessages(first);
        history.Add(new(ChatRole.User, "Once more?"));
        var second = await AskAsync(client, history, options, streamed);

        Assert.Equal(OpenAIServer.Reply, second.Text);
        var cached = second.Usage?.CachedInputTokenCount;
        Log($"MEAI AsIChatClient{(streamed ? " streamed" : string.Empty)}, turn 2: prompt {second.Usage?.InputTokenCount}, cached {cached}");
        Assert.True(cached >= first.Usage!.InputTokenCount, $"turn 2 cached {cached}; turn 1's prompt was {first.Usage.InputTokenCount}");
        Assert.True(second.Usage!.InputTokenCount > cached);
    }

    private static async Task<ChatResponse> AskAsync(IChatClient client, List<ChatMessage> history, ChatOptions options, bool streamed)
    {
        if (!streamed)
        {
            return await client.GetResponseAsync(history, options, Cancel);
        }

        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in client.GetStreamingResponseAsync(history, options, Cancel))
        {
            updates.Add(update);
        }

        Assert.True(updates.Count(u => u.Text.Length > 0) > 1, "the text arrives in pieces");
        return updates.ToChatResponse();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ToolCall_RoundTripUnderUseFunctionInvocation_CallsTheFunctionAndAnswers(bool streamed)
    {
        var cities = new List<string>();
        var weather = AIFunctionFactory.Create((string city) => { cities.Add(city); return "18C and sunny"; }, "get_weather", "The weather in a city.");
        using var client = new ChatClientBuilder(Client()).UseFunctionInvocation().Build();
        List<ChatMessage> history = [new(ChatRole.System, "You are a travel agent."), new(ChatRole.User, "Weather in Paris?")];

        var response = await AskAsync(client, history, new ChatOptions { Tools = [weather] }, streamed);

        Assert.Equal(["Paris"], cities);
        var call = Assert.Single(response.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>());
        Assert.Equal("get_weather", call.Name);
        Assert.Contains(response.Messages, m => m.Contents.OfType<FunctionResultContent>().Any(r => r.CallId == call.CallId));
        Assert.Equal(OpenAIServer.Reply, response.Messages[^1].Text);
        Assert.True(response.Usage?.CachedInputTokenCount > 0, "the answer step reuses the call step's cache");
    }

    [Fact]
    public async Task GetResponseAsyncOfT_UsesAJsonSchemaAndDeserializes()
    {
        using var client = Client();

        var response = await client.GetResponseAsync<Weather>("The weather as JSON.", cancellationToken: Cancel);

        Assert.True(response.TryGetResult(out var weather), response.Text);
        Assert.Equal(new Weather("Paris", 18), weather);
    }

    public sealed record Weather(string City, int Celsius);

    [Fact]
    public async Task ResponseFormatJsonSchema_Streamed_IsTheSchemasObject()
    {
        using var client = Client();
        var format = ChatResponseFormat.ForJsonSchema(JsonDocument.Parse(OpenAIServer.ReplySchema).RootElement, "weather");

        var response = await client.GetStreamingResponseAsync("Weather JSON please.", new ChatOptions { ResponseFormat = format }, Cancel).ToChatResponseAsync(Cancel);

        Assert.Equal("Paris", JsonDocument.Parse(response.Text).RootElement.GetProperty("city").GetString());
    }

    [Fact]
    public async Task CancelledStream_CancelsTheGenerationOnTheServer()
    {
        using var client = Client();
        // Slow enough that the reply is far from done when the connection closes: .NET's HttpClient reads on for up to
        // two seconds after a cancelled response is disposed (SocketsHttpHandler.ResponseDrainTimeout) before it closes.
        server.Observed.StreamDelay = TimeSpan.FromMilliseconds(250);
        try
        {
            using var cancel = CancellationTokenSource.CreateLinkedTokenSource(Cancel);
            var before = server.Observed.Streams.Count;
            var stopwatch = System.Diagnostics.Stopwatch.StartNew();
            var pieces = 0;
            await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
            {
                await foreach (var update in client.GetStreamingResponseAsync("Slowly, please.", cancellationToken: cancel.Token))
                {
                    if (update.Text.Length > 0 && ++pieces == 2)
                    {
                        await cancel.CancelAsync();
                    }
                }
            });

            Log($"{await server.Observed.AssertOneStreamCancelledAsync(before, Cancel)}, {stopwatch.ElapsedMilliseconds} ms");
        }
        finally
        {
            server.Observed.StreamDelay = TimeSpan.Zero;
        }
    }
}
