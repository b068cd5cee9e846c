using System.Text;
using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Xunit;

namespace KvChat.Tests;

public sealed class DecodingTests
{
    private const string Script = "Héllo 日本語 👨‍👩‍👧 world. STOP here, then more text.";

    private static KvChatClient ScriptedClient(string script = Script, KvChatClientOptions? options = null)
        => new(TestModels.PathOf(ModelKitOptions.Tiny with { Script = script }), options);

    private static List<ChatMessage> Ask(string text = "Go") => [new(ChatRole.User, text)];

    [Fact]
    public async Task Streaming_ScriptedModel_TextIsExactAndNeverBrokenUtf8()
    {
        using var client = ScriptedClient();
        var pieces = new List<string>();
        ChatResponseUpdate? last = null;
        await foreach (var update in client.GetStreamingResponseAsync(Ask(), cancellationToken: TestContext.Current.CancellationToken))
        {
            if (update.Text.Length > 0)
            {
                pieces.Add(update.Text);
            }

            last = update;
        }

        Assert.Equal(Script, string.Concat(pieces));
        Assert.All(pieces, p => Assert.Equal(p, Encoding.UTF8.GetString(Encoding.UTF8.GetBytes(p))));
        Assert.DoesNotContain(pieces, p => p.Contains('\uFFFD', StringComparison.Ordinal));
        Assert.Equal(ChatFinishReason.Stop, last!.FinishReason);
        Assert.Single(last.Contents.OfType<UsageContent>());
    }

    [Fact]
    public async Task Streaming_AllUpdates_ShareMessageIdAndResponseId()
    {
        using var client = ScriptedClient();
        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in client.GetStreamingResponseAsync(Ask(), cancellationToken: TestContext.Current.CancellationToken))
        {
            updates.Add(update);
        }

        Assert.True(updates.Count > 3);
        Assert.Single(updates.Select(u => u.MessageId).Distinct());
        Assert.Single(updates.Select(u => u.ResponseId).Distinct());
        Assert.All(updates, u => Assert.Equal(ChatRole.Assistant, u.Role));
        Assert.Single(updates.SelectMany(u => u.Contents).OfType<UsageContent>());
        Assert.Null(updates[0].ConversationId);
    }

    [Theory]
    [InlineData("STOP", "Héllo 日本語 👨‍👩‍👧 world. ")]
    [InlineData("語 👨", "Héllo 日本")]
    [InlineData("H", "")]
    [InlineData("more text.", "Héllo 日本語 👨‍👩‍👧 world. STOP here, then ")]
    public async Task StopSequences_SpanningTokens_StopBeforeTheStopText(string stop, string expected)
    {
        using var client = ScriptedClient();
        var text = new StringBuilder();
        ChatFinishReason? finish = null;
        await foreach (var update in client.GetStreamingResponseAsync(Ask(), new ChatOptions { StopSequences = ["never appears", stop] }, TestContext.Current.CancellationToken))
        {
            text.Append(update.Text);
            finish ??= update.FinishReason;
        }

        Assert.Equal(expected, text.ToString());
        Assert.Equal(ChatFinishReason.Stop, finish);
    }

    [Fact]
    public async Task MaxOutputTokens_CutsTheReply_FinishLength()
    {
        using var client = ScriptedClient();
        var response = await client.GetResponseAsync(Ask(), new ChatOptions { MaxOutputTokens = 5 }, TestContext.Current.CancellationToken);
        Assert.Equal(ChatFinishReason.Length, response.FinishReason);
        Assert.Equal(5, response.Usage!.OutputTokenCount);
        Assert.Equal("Héll", response.Text); // "é" is two byte tokens.
    }

    [Fact]
    public async Task ReplyEndingInEos_ThenNextTurn_ContinuesFromTheWholeReply()
    {
        using var client = ScriptedClient("Short reply.");
        List<ChatMessage> history = [new(ChatRole.User, "First")];
        var first = await client.GetResponseAsync(history, cancellationToken: TestContext.Current.CancellationToken);
        Assert.Equal("Short reply.", first.Text);
        history.AddRange(first.Messages);
        history.Add(new ChatMessage(ChatRole.User, "Second"));
        var second = await client.GetResponseAsync(history, cancellationToken: TestContext.Current.CancellationToken);

        Assert.Equal("Short reply.", second.Text);
        var tail = second.Usage!.InputTokenCount - second.Usage.CachedInputTokenCount;
        Assert.Equal(UserTurnTokens("Second"), tail);
    }

    /// <summary>
    /// The tokens a new user turn adds on a scripted model (one token per byte): the end-of-turn marker that closes the
    /// reply (end-of-sequence is not in the KV cache), "\n", the user message, and the generation prompt.
    /// </summary>
    private static int UserTurnTokens(string text)
        => 1 + "\n".Length + 1 + "user\n".Length + text.Length + 1 + "\n".Length + 1 + "assistant\n".Length;

    [Fact]
    public async Task Seed_SameSeedSameReply_DifferentSeedsDiffer()
    {
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny with { PrintableBias = 0 }));
        async Task<string> SayAsync(long seed) => (await client.GetResponseAsync(
            Ask("Sample something"), new ChatOptions { Temperature = 1.5f, Seed = seed, MaxOutputTokens = 24 }, TestContext.Current.CancellationToken)).Text;

        var a = await SayAsync(7);
        Assert.Equal(a, await SayAsync(7));
        var others = new HashSet<string>();
        for (var seed = 100; seed < 105; seed++)
        {
            others.Add(await SayAsync(seed));
        }

        Assert.True(others.Count >= 3, "different seeds gave the same replies");
    }

    [Fact]
    public async Task Sampling_OnACachedSession_DoesNotCostTheCache()
    {
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny));
        List<ChatMessage> history = [new(ChatRole.System, "A system prompt that is long enough to fill a few blocks of the index."), new(ChatRole.User, "One")];
        var greedy = await client.GetResponseAsync(history, new ChatOptions { MaxOutputTokens = 4 }, TestContext.Current.CancellationToken);
        var sampled = await client.GetResponseAsync(history, new ChatOptions { MaxOutputTokens = 4, Temperature = 0.8f, TopP = 0.9f, TopK = 40, Seed = 3, PresencePenalty = 0.5f, FrequencyPenalty = 0.5f }, TestContext.Current.CancellationToken);
        Assert.Equal(sampled.Usage!.InputTokenCount - 1, sampled.Usage.CachedInputTokenCount);
        Assert.NotNull(greedy.Text);
    }

    [Fact]
    public async Task Cancellation_MidReply_ThrowsAndTheSessionStaysExact()
    {
        using var harness = new OracleHarness(TestModels.PathOf(ModelKitOptions.Tiny with { Script = Script }));
        List<ChatMessage> history = [new(ChatRole.User, "Tell me a long story")];
        using var cts = new CancellationTokenSource();
        var text = new StringBuilder();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var update in harness.Client.GetStreamingResponseAsync(history, new ChatOptions { MaxOutputTokens = 40 }, cts.Token))
            {
                text.Append(update.Text);
                if (text.Length > 3)
                {
                    await cts.CancelAsync();
                }
            }
        });

        Assert.True(text.Length < Script.Length);
        history.Add(new ChatMessage(ChatRole.Assistant, text.ToString()));
        history.Add(new ChatMessage(ChatRole.User, "Go on"));
        var next = await harness.AskAsync(history, new ChatOptions { MaxOutputTokens = 8 }, TestContext.Current.CancellationToken);
        Assert.True(next.Usage!.CachedInputTokenCount > 5);
        Assert.Equal(0, harness.Client.GetService<KvCacheStatistics>()!.BusySessions);
    }
}
