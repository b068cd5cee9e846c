using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Xunit;

namespace KvChat.Tests.Sessions;

/// <summary>Parked KV in native memory: exact copies, freed exactly once, reused across parks, counted in the memory bound.</summary>
public sealed class ParkedMemoryTests
{
    private static readonly string TinyPath = TestModels.PathOf(ModelKitOptions.Tiny);

    [Fact]
    public void Park_ForkBack_IsBitIdenticalToTheSessionThatNeverLeft_AlsoFromAReusedBlock()
    {
        using var backend = Create();
        var a = Prompt(150, 1);
        var b = Prompt(160, 2);
        var tail = Prompt(9, 3);
        using var session = backend.CreateSession();
        using var direct = backend.CreateSession();
        direct.Extend(0, a);
        direct.Extend(a.Length, tail);
        var expected = Logits(direct);

        for (var round = 0; round < 3; round++)
        {
            // A is parked, B takes the slot over (A's positions are overwritten), then A comes back by a copy.
            session.Extend(0, a);
            using (var parked = session.Park(a.Length))
            {
                Assert.Equal(a, parked.Tokens);
                session.Extend(0, b);
                session.CopyPrefixFrom(parked, a);
                Assert.Equal(a, session.Tokens);
            }

            session.Extend(a.Length, tail);
            Assert.Equal(expected, Logits(session));

            // A shorter prefix of a parked copy (its positions are strided by the parked length, not the prefix's).
            session.Extend(0, b);
            using (var parked = session.Park(b.Length))
            {
                session.Extend(0, a);
                session.CopyPrefixFrom(parked, b.AsSpan(0, 100));
            }

            session.Extend(100, tail);
            using var reference = backend.CreateSession();
            reference.Extend(0, [.. b[..100], .. tail]);
            Assert.True(RawGeneration.MaxAbsDifference(Logits(reference), Logits(session)) < 1e-4f);
        }

        // Rounds 2 and 3 parked into blocks given back by round 1: nothing new was allocated for them.
        Assert.True(backend.ParkedMemory.Reuses >= 4, $"reuses {backend.ParkedMemory.Reuses}");
        Assert.Equal(0, backend.ParkedMemory.LiveBlocks);
    }

    [Fact]
    public void Dispose_FreesTheBlockExactlyOnce_UseAfterDisposeThrows()
    {
        var backend = Create();
        var memory = backend.ParkedMemory;
        using var session = backend.CreateSession();
        var prompt = Prompt(40, 4);
        session.Extend(0, prompt);

        var parked = session.Park(prompt.Length);
        Assert.Equal(1, memory.LiveBlocks);
        Assert.Equal(parked.ByteSize, memory.LiveBytes);
        Assert.InRange(parked.ByteSize, prompt.Length * backend.BytesPerToken, OwnedBackend.ParkedBlockTokens * backend.BytesPerToken);
        parked.Save(Stream.Null, prompt.Length);

        parked.Dispose();
        parked.Dispose();
        Assert.Equal(0, memory.LiveBlocks);
        Assert.Equal(0, memory.LiveBytes);
        Assert.Equal(parked.ByteSize, memory.FreeBytes); // Kept for the next park, once.
        Assert.Throws<ObjectDisposedException>(() => parked.Save(Stream.Null, prompt.Length));
        Assert.Throws<ObjectDisposedException>(() => session.CopyPrefixFrom(parked, prompt));
        Assert.Equal(prompt, session.Tokens);

        // More blocks back than are kept: the rest are freed; the backend frees the kept ones; a copy that outlives it
        // is freed when it is disposed. Every allocation is freed exactly once.
        var copies = Enumerable.Range(0, NativeKvMemory.MaxFreeBlocks + 2).Select(_ => session.Park(prompt.Length)).ToList();
        Assert.Equal(1, memory.Reuses);
        copies.ForEach(c => c.Dispose());
        Assert.Equal(NativeKvMemory.MaxFreeBlocks, memory.Allocations - memory.Frees);
        var outliving = session.Park(prompt.Length);
        session.Dispose();
        backend.Dispose();
        Assert.Equal(1, memory.Allocations - memory.Frees);
        Assert.Equal(0, memory.FreeBytes);
        outliving.Dispose();
        Assert.Equal(memory.Allocations, memory.Frees);
        Assert.Equal(0, memory.LiveBytes);
    }

    [Fact]
    public async Task ParkedBytes_AreTheNativeBytes_CountAgainstMaxCacheBytes_AndAreFreedWithTheClient()
    {
        OwnedBackend backend;
        long bytesPerSession;
        using (var harness = new OracleHarness(TinyPath, new KvChatClientOptions { MaxSessions = 1, SessionBackend = KvSessionBackend.Owned }))
        {
            backend = (OwnedBackend)harness.Client.SessionBackend;
            const string System = "A system prompt that both conversations share, long enough for a few index blocks.";
            List<ChatMessage> a = [new(ChatRole.System, System), new(ChatRole.User, "Conversation A asks its first question here")];
            a.AddRange((await harness.AskAsync(a, new ChatOptions { MaxOutputTokens = 6 }, TestContext.Current.CancellationToken)).Messages);
            await harness.AskAsync([new(ChatRole.System, System), new(ChatRole.User, "Conversation B")], new ChatOptions { MaxOutputTokens = 6 }, TestContext.Current.CancellationToken);
            var stats = harness.Client.GetService<KvCacheStatistics>()!;
            Assert.Equal(1, stats.ParkedConversations);
            Assert.Equal(backend.ParkedMemory.LiveBytes, stats.ParkedBytes);
            Assert.Equal(stats.KvBytesPerSession + stats.ParkedBytes, stats.KvBytes);
            bytesPerSession = stats.KvBytesPerSession;

            // A comes back (B is parked, A's copy is dropped: its block is kept for reuse); the replies match the oracle.
            a.Add(new ChatMessage(ChatRole.User, "A again"));
            await harness.AskAsync(a, new ChatOptions { MaxOutputTokens = 6 }, TestContext.Current.CancellationToken);
            stats = harness.Client.GetService<KvCacheStatistics>()!;
            Assert.Equal(1, stats.ParkedConversations);
            Assert.Equal(backend.ParkedMemory.LiveBytes, stats.ParkedBytes);
        }

        Assert.Equal(0, backend.ParkedMemory.LiveBytes);
        Assert.Equal(backend.ParkedMemory.Allocations, backend.ParkedMemory.Frees);

        // A bound with room for the session and less than one parked block: the copy is made, does not fit, and is
        // freed at once; nothing parked is held.
        using var tight = new KvChatClient(TinyPath, new KvChatClientOptions { MaxSessions = 1, SessionBackend = KvSessionBackend.Owned, MaxCacheBytes = bytesPerSession + 1024 });
        var tightBackend = (OwnedBackend)tight.SessionBackend;
        const string Shared = "A system prompt that both conversations share, long enough for a few index blocks.";
        await tight.GetResponseAsync([new(ChatRole.System, Shared), new(ChatRole.User, "Conversation A asks its first question here")], new ChatOptions { MaxOutputTokens = 4 }, TestContext.Current.CancellationToken);
        await tight.GetResponseAsync([new(ChatRole.System, Shared), new(ChatRole.User, "Conversation B")], new ChatOptions { MaxOutputTokens = 4 }, TestContext.Current.CancellationToken);
        var tightStats = tight.GetService<KvCacheStatistics>()!;
        Assert.Equal(0, tightStats.ParkedConversations);
        Assert.True(tightStats.KvBytes <= bytesPerSession + 1024);
        Assert.Equal(0, tightBackend.ParkedMemory.LiveBytes);
        Assert.Equal(1, tightBackend.ParkedMemory.Allocations);
    }

    private static OwnedBackend Create() => OwnedTestSessions.Create(512);

    private static int[] Prompt(int length, int seed) => OwnedTestSessions.Prompt(length, seed);

    private static float[] Logits(IKvSession session) => OwnedTestSessions.Logits(session);
}
