using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntimeGenAI;
using Xunit;

namespace KvChat.Tests.Hardening;

public sealed class FaultTests
{
    private static readonly string TinyPath = TestModels.PathOf(ModelKitOptions.Tiny);

    [Theory]
    [MemberData(nameof(TestBackends.Both), MemberType = typeof(TestBackends))]
    public async Task RuntimeErrorMidReply_DiscardsTheSession_ClientKeepsServingExactly(KvSessionBackend backend)
    {
        using var harness = new OracleHarness(TinyPath, new KvChatClientOptions { MaxSessions = 1, SessionBackend = backend });
        List<ChatMessage> history = [new(ChatRole.System, "A system prompt that the failing session holds."), new(ChatRole.User, "First")];
        history.AddRange((await harness.AskAsync(history, new ChatOptions { MaxOutputTokens = 5 }, TestContext.Current.CancellationToken)).Messages);
        history.Add(new ChatMessage(ChatRole.User, "Second, which fails in the middle"));

        // An out-of-vocabulary token: a real native failure of the model's Gather inside GenAI. The owned backend checks
        // ids before a (possibly batched) Run, so one bad id cannot fail other sessions' steps.
        harness.Client.DecodeStepHook = (session, generated) =>
        {
            if (generated == 2)
            {
                session.Append(1 << 30);
            }
        };
        if (backend == KvSessionBackend.Generator)
        {
            var error = await Assert.ThrowsAsync<InvalidOperationException>(() => harness.Client.GetResponseAsync(history, new ChatOptions { MaxOutputTokens = 8 }, TestContext.Current.CancellationToken));
            Assert.IsType<OnnxRuntimeGenAIException>(error.InnerException);
            Assert.Contains("discarded", error.Message, StringComparison.Ordinal);
        }
        else
        {
            var error = await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => harness.Client.GetResponseAsync(history, new ChatOptions { MaxOutputTokens = 8 }, TestContext.Current.CancellationToken));
            Assert.Contains("vocabulary", error.Message, StringComparison.Ordinal);
        }

        harness.Client.DecodeStepHook = null;

        var stats = harness.Client.GetService<KvCacheStatistics>()!;
        Assert.Equal(1, stats.Discards);
        Assert.Equal(0, stats.Sessions);

        var recovered = await harness.AskAsync(history, new ChatOptions { MaxOutputTokens = 8 }, TestContext.Current.CancellationToken);
        Assert.Equal(0, recovered.Usage!.CachedInputTokenCount);
        history.AddRange(recovered.Messages);
        history.Add(new ChatMessage(ChatRole.User, "Third"));
        var third = await harness.AskAsync(history, new ChatOptions { MaxOutputTokens = 8 }, TestContext.Current.CancellationToken);
        Assert.True(third.Usage!.CachedInputTokenCount > 0);
    }

    [Theory]
    [MemberData(nameof(TestBackends.Both), MemberType = typeof(TestBackends))]
    public async Task ManagedErrorMidReply_DiscardsTheSessionAndPropagates(KvSessionBackend backend)
    {
        using var client = new KvChatClient(TinyPath, new KvChatClientOptions { SessionBackend = backend });
        client.DecodeStepHook = (_, generated) =>
        {
            if (generated == 1)
            {
                throw new InvalidDataException("injected");
            }
        };
        await Assert.ThrowsAsync<InvalidDataException>(() => client.GetResponseAsync([new(ChatRole.User, "x")], new ChatOptions { MaxOutputTokens = 4 }, TestContext.Current.CancellationToken));
        Assert.Equal(1, client.GetService<KvCacheStatistics>()!.Discards);
        client.DecodeStepHook = null;
        var ok = await client.GetResponseAsync([new(ChatRole.User, "x")], new ChatOptions { MaxOutputTokens = 4 }, TestContext.Current.CancellationToken);
        Assert.Equal(ChatRole.Assistant, ok.Messages[0].Role);
    }

    [Theory]
    [MemberData(nameof(TestBackends.Both), MemberType = typeof(TestBackends))]
    public async Task CancellationAtRandomPoints_NeverLeaksASession_FollowingTurnsMatchTheOracle(KvSessionBackend backend)
    {
        var random = new Random(77);
        using var harness = new OracleHarness(TestModels.PathOf(ModelKitOptions.Tiny with { Script = new string('w', 60) }), new KvChatClientOptions { MaxSessions = 2, SessionBackend = backend });
        List<ChatMessage> history = [new(ChatRole.System, "Cancellation test system prompt.")];
        for (var i = 0; i < 30; i++)
        {
            history.Add(new ChatMessage(ChatRole.User, $"message {i}"));
            using var cts = new CancellationTokenSource();
            var stopAt = random.Next(-1, 12);
            if (stopAt == -1)
            {
                await cts.CancelAsync(); // Before the call starts: nothing is acquired.
            }

            harness.Client.DecodeStepHook = (_, generated) =>
            {
                if (generated == stopAt)
                {
                    cts.Cancel(); // Between tokens, from inside the decode loop: includes "right after prefill".
                }
            };
            var text = new System.Text.StringBuilder();
            try
            {
                await foreach (var update in harness.Client.GetStreamingResponseAsync(history, new ChatOptions { MaxOutputTokens = 20 }, cts.Token))
                {
                    text.Append(update.Text);
                }
            }
            catch (OperationCanceledException)
            {
            }

            harness.Client.DecodeStepHook = null;
            history.Add(new ChatMessage(ChatRole.Assistant, text.ToString()));
            Assert.Equal(0, harness.Client.GetService<KvCacheStatistics>()!.BusySessions);
            if (i % 5 == 4)
            {
                history.Add(new ChatMessage(ChatRole.User, "check"));
                history.AddRange((await harness.AskAsync(history, new ChatOptions { MaxOutputTokens = 6 }, TestContext.Current.CancellationToken)).Messages);
            }
        }

        Assert.Equal(0, harness.Client.GetService<KvCacheStatistics>()!.Discards);
        Assert.True(harness.Checked >= 6);
    }
}
