using System.ClientModel;
using System.Text.Json;
using OpenAI;
using OpenAI.Chat;
using Xunit;

namespace KvChat.AspNetCore.Tests;

/// <summary>The official OpenAI .NET SDK against the endpoint, as a user points it at a local server.</summary>
public sealed class OpenAISdkTests(OpenAIServer server) : IClassFixture<OpenAIServer>
{
    private static CancellationToken Cancel => TestContext.Current.CancellationToken;

    private ChatClient Client() =>
        new(OpenAIServer.ModelName, new ApiKeyCredential("not-needed"), new OpenAIClientOptions { Endpoint = server.Endpoint, RetryPolicy = null });

    private static void Log(string line) => TestContext.Current.TestOutputHelper?.WriteLine(line);

    [Fact]
    public async Task ReadmeBlock_TwoTurns_TurnTwoIsServedFromTheCache()
    {
        var endpoint = server.Endpoint;

        // README OpenAI client: begin
        var chat = new ChatClient("kvchat-demo", new ApiKeyCredential("unused"), new OpenAIClientOptions { Endpoint = endpoint }); // http://127.0.0.1:5077/v1
        List<ChatMessage> history = [new UserChatMessage("What is a KV cache?")];
        ChatCompletion first = await chat.CompleteChatAsync(history);
        history.AddRange([new AssistantChatMessage(first), new UserChatMessage("Why does reusing it help?")]);
        ChatCompletion second = await chat.CompleteChatAsync(history);
        Console.WriteLine($"turn 2: cached {second.Usage.InputTokenDetails.CachedTokenCount} of {second.Usage.InputTokenCount} prompt tokens");
        // README OpenAI client: end

        Assert.True(second.Usage.InputTokenDetails.CachedTokenCount >= first.Usage.InputTokenCount);
    }

    [Fact]
    public async Task TwoTurns_NotStreamed_TurnTwoReportsCachedTokens()
    {
        var chat = Client();
        List<ChatMessage> history = [new UserChatMessage("What is a KV cache?")];
        var options = new ChatCompletionOptions { MaxOutputTokenCount = 48, Temperature = 0 };

        ChatCompletion first = await chat.CompleteChatAsync(history, options, Cancel);
        Assert.Equal(OpenAIServer.Reply, first.Content[0].Text);
        Assert.Equal(ChatFinishReason.Stop, first.FinishReason);
        Assert.Equal(OpenAIServer.ModelName, first.Model);
        Assert.StartsWith("chatcmpl-", first.Id, StringComparison.Ordinal);
        Assert.InRange(first.Usage.InputTokenDetails.CachedTokenCount, 0, first.Usage.InputTokenCount - 1);

        history.Add(new AssistantChatMessage(first));
        history.Add(new UserChatMessage("Why does reusing it help?"));
        ChatCompletion second = await chat.CompleteChatAsync(history, options, Cancel);

        var cached = second.Usage.InputTokenDetails.CachedTokenCount;
        Log($"OpenAI SDK, turn 2: prompt {second.Usage.InputTokenCount}, cached {cached}");
        Assert.True(cached >= first.Usage.InputTokenCount, $"turn 2 cached {cached}; turn 1's prompt was {first.Usage.InputTokenCount}");
        Assert.True(second.Usage.InputTokenCount > cached);
        Assert.Equal(second.Usage.InputTokenCount + second.Usage.OutputTokenCount, second.Usage.TotalTokenCount);
    }

    [Fact]
    public async Task TwoTurns_Streamed_TextArrivesInPiecesAndTurnTwoReportsCachedTokens()
    {
        var chat = Client();
        List<ChatMessage> history = [new UserChatMessage("Tell me about caches.")];
        var options = new ChatCompletionOptions { MaxOutputTokenCount = 48 };

        var (firstText, firstPieces, firstUsage, firstFinish) = await StreamAsync(chat, history, options);
        Assert.Equal(OpenAIServer.Reply, firstText);
        Assert.True(firstPieces > 1, $"{firstPieces} piece(s)");
        Assert.Equal(ChatFinishReason.Stop, firstFinish);
        Assert.NotNull(firstUsage);
        Assert.InRange(firstUsage.InputTokenDetails.CachedTokenCount, 0, firstUsage.InputTokenCount - 1);

        history.Add(new AssistantChatMessage(firstText));
        history.Add(new UserChatMessage("And the next turn?"));
        var (secondText, _, secondUsage, _) = await StreamAsync(chat, history, options);

        Assert.Equal(OpenAIServer.Reply, secondText);
        Assert.NotNull(secondUsage);
        Log($"OpenAI SDK streamed, turn 2: prompt {secondUsage.InputTokenCount}, cached {secondUsage.InputTokenDetails.CachedTokenCount}");
        Assert.True(secondUsage.InputTokenDetails.CachedTokenCount >= firstUsage.InputTokenCount);
    }

    private static async Task<(string Text, int Pieces, ChatTokenUsage? Usage, ChatFinishReason? Finish)> StreamAsync(
        ChatClient chat, List<ChatMessage> history, ChatCompletionOptions options)
    {
        var text = new System.Text.StringBuilder();
        var pieces = 0;
        ChatTokenUsage? usage = null;
        ChatFinishReason? finish = null;
        await foreach (var update in chat.CompleteChatStreamingAsync(history, options, Cancel))
        {
            foreach (var part in update.ContentUpdate)
            {
                text.Append(part.Text);
                pieces += part.Text.Length > 0 ? 1 : 0;
            }

            usage = update.Usage ?? usage;
            finish = update.FinishReason ?? finish;
        }

        return (text.ToString(), pieces, usage, finish);
    }

    [Fact]
    public async Task ToolCall_RoundTrip_TheModelCallsTheToolThenAnswersFromTheCache()
    {
        var chat = Client();
        var weather = ChatTool.CreateFunctionTool(
            "get_weather", "The weather in a city.", BinaryData.FromString("""{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"""));
        var options = new ChatCompletionOptions { Tools = { weather }, MaxOutputTokenCount = 64 };
        List<ChatMessage> history = [new SystemChatMessage("You are a travel agent."), new UserChatMessage("Weather in Paris?")];

        ChatCompletion call = await chat.CompleteChatAsync(history, options, Cancel);

        Assert.Equal(ChatFinishReason.ToolCalls, call.FinishReason);
        var toolCall = Assert.Single(call.ToolCalls);
        Assert.Equal("get_weather", toolCall.FunctionName);
        Assert.StartsWith("call_", toolCall.Id, StringComparison.Ordinal);
        Assert.Equal("Paris", JsonDocument.Parse(toolCall.FunctionArguments).RootElement.GetProperty("city").GetString());

        history.Add(new AssistantChatMessage(call));
        history.Add(new ToolChatMessage(toolCall.Id, "18C and sunny"));
        ChatCompletion answer = await chat.CompleteChatAsync(history, options, Cancel);

        Assert.Equal(ChatFinishReason.Stop, answer.FinishReason);
        Assert.Equal(OpenAIServer.Reply, answer.Content[0].Text);
        Log($"OpenAI SDK, tool step 2: prompt {answer.Usage.InputTokenCount}, cached {answer.Usage.InputTokenDetails.CachedTokenCount}");
        Assert.True(answer.Usage.InputTokenDetails.CachedTokenCount >= call.Usage.InputTokenCount, "the call's prompt is served from the cache");
    }

    [Fact]
    public async Task ToolCall_Streamed_ArrivesAsIndexedDeltas()
    {
        var chat = Client();
        var weather = ChatTool.CreateFunctionTool("get_weather", "The weather in a city.", BinaryData.FromString("""{"type":"object","properties":{"city":{"type":"string"}}}"""));
        var options = new ChatCompletionOptions { Tools = { weather }, ToolChoice = ChatToolChoice.CreateAutoChoice() };
        List<ChatMessage> history = [new SystemChatMessage("You are a travel agent."), new UserChatMessage("Weather?")];

        string? id = null, name = null;
        var arguments = new System.Text.StringBuilder();
        ChatFinishReason? finish = null;
        await foreach (var update in chat.CompleteChatStreamingAsync(history, options, Cancel))
        {
            foreach (var call in update.ToolCallUpdates)
            {
                Assert.Equal(0, call.Index);
                id ??= call.ToolCallId;
                name ??= call.FunctionName;
                arguments.Append(call.FunctionArgumentsUpdate?.ToString());
            }

            finish = update.FinishReason ?? finish;
        }

        Assert.Equal(ChatFinishReason.ToolCalls, finish);
        Assert.StartsWith("call_", id, StringComparison.Ordinal);
        Assert.Equal("get_weather", name);
        Assert.Equal("""{"city":"Paris"}""", arguments.ToString());
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task JsonSchemaResponse_IsTheSchemasObject(bool streamed)
    {
        var chat = Client();
        var options = new ChatCompletionOptions
        {
            ResponseFormat = ChatResponseFormat.CreateJsonSchemaFormat("weather", BinaryData.FromString(OpenAIServer.ReplySchema), jsonSchemaIsStrict: true),
            MaxOutputTokenCount = 64,
        };
        List<ChatMessage> history = [new UserChatMessage("The weather as JSON.")];

        string text;
        if (streamed)
        {
            (text, _, _, _) = await StreamAsync(chat, history, options);
        }
        else
        {
            ChatCompletion completion = await chat.CompleteChatAsync(history, options, Cancel);
            text = completion.Content[0].Text;
        }

        var json = JsonDocument.Parse(text).RootElement;
        Assert.Equal("Paris", json.GetProperty("city").GetString());
        Assert.Equal(18, json.GetProperty("celsius").GetInt32());
    }

    [Fact]
    public async Task CancelledStream_CancelsTheGenerationOnTheServer()
    {
        var chat = Client();
        // Slow enough that the reply is far from done when the connection closes: .NET's HttpClient reads on for up to
        // two seconds after a cancelled response is disposed (SocketsHttpHandler.ResponseDrainTimeout) before it closes.
        server.Observed.StreamDelay = TimeSpan.FromMilliseconds(250);
        try
        {
            using var cancel = CancellationTokenSource.CreateLinkedTokenSource(Cancel);
            var pieces = 0;
            var before = server.Observed.Streams.Count;
            var stopwatch = System.Diagnostics.Stopwatch.StartNew();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
            {
                await foreach (var update in chat.CompleteChatStreamingAsync([new UserChatMessage("Go slowly.")], new ChatCompletionOptions(), cancel.Token))
                {
                    if (update.ContentUpdate.Count > 0 && ++pieces == 2)
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
