using KvChat;
using Xunit;

namespace KvChatClient.Tests.Caching;

/// <summary>The pool's forks and parked copies, on fake sessions that record what was copied into them.</summary>
public sealed class SessionPoolForkTests
{
    private const int Block = 4;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static int[] Concat(params IEnumerable<int>[] parts) => [.. parts.SelectMany(p => p)];

    private sealed class Fake(int id, long bytes) : IPooledSession
    {
        public int Id { get; } = id;

        public long ByteSize { get; } = bytes;

        public int[] Tokens { get; set; } = [];

        public bool Parked { get; init; }

        public bool Disposed { get; private set; }

        public void Dispose() => Disposed = true;
    }

    private sealed class Harness
    {
        private int _next;

        public Harness(int maxSessions, long maxBytes = long.MaxValue)
            => Pool = new SessionPool<Fake>(maxSessions, maxBytes, () => new Fake(++_next, 100), BusySessionPolicy.TakeOther, Block, Copy, Park);

        public SessionPool<Fake> Pool { get; }

        public List<(Fake Target, Fake Source, int Length)> Copies { get; } = [];

        public List<Fake> ParkedSessions { get; } = [];

        public async Task<SessionPool<Fake>.Lease> AcquireAsync(int[] prompt, int identity = int.MaxValue)
        {
            var lease = await Pool.AcquireAsync(prompt, identity, Ct);
            lease.Session.Tokens = prompt[..lease.CommonPrefixLength];
            return lease;
        }

        public async Task TurnAsync(int[] prompt, int identity, int reply)
        {
            using var lease = await AcquireAsync(prompt, identity);
            Pool.Commit(lease, Concat(prompt, Enumerable.Range(900, reply)), prompt.Length);
        }

        private void Copy(Fake target, Fake source, ReadOnlySpan<int> tokens)
        {
            Assert.False(source.Disposed);
            Copies.Add((target, source, tokens.Length));
            target.Tokens = tokens.ToArray();
        }

        private Fake Park(Fake session, int length)
        {
            var parked = new Fake(1000 + ParkedSessions.Count, length) { Parked = true };
            ParkedSessions.Add(parked);
            return parked;
        }
    }

    private static readonly int[] System = [.. Enumerable.Range(1, 12)];

    [Fact]
    public async Task SecondConversation_TakesAFreeSession_ForkedFromTheFirstsSystemPrompt()
    {
        var harness = new Harness(maxSessions: 2);
        await harness.TurnAsync(Concat(System, [50, 51, 52]), identity: 15, reply: 4);
        await harness.TurnAsync(Concat(System, [60, 61, 62]), identity: 15, reply: 4);

        var copy = Assert.Single(harness.Copies);
        Assert.Equal(1, copy.Source.Id);
        Assert.Equal(2, copy.Target.Id);
        Assert.Equal(System.Length, copy.Length);
        var stats = harness.Pool.GetStatistics();
        Assert.Equal((1, System.Length), (stats.Forks, stats.ForkedTokens));
        Assert.Equal(2, stats.Sessions);
    }

    [Fact]
    public async Task BusySource_OffersOnlyWhatItsHolderCannotRewrite()
    {
        var harness = new Harness(maxSessions: 2);
        await harness.TurnAsync(Concat(System, [50, 51, 52]), identity: 15, reply: 4);

        // The holder of session 1 keeps only the system prompt and 2 more tokens of the same conversation (an edit).
        using var busy = await harness.AcquireAsync(Concat(System, [50, 51, 70, 71]), identity: 15);
        Assert.Equal(System.Length + 2, busy.CommonPrefixLength);
        using (var other = await harness.AcquireAsync(Concat(System, [50, 51, 80, 81, 82])))
        {
            // Common prefix 14 with the committed tokens, but the busy holder may rewrite from position 14 on.
            Assert.Equal(System.Length + 2, Assert.Single(harness.Copies).Length);
            Assert.Equal(System.Length + 2, other.CommonPrefixLength);
        }

        // After the holder commits its prompt as append-only, all of it may be copied.
        harness.Pool.Commit(busy, Concat(System, [50, 51, 70, 71]), System.Length + 4, appendOnly: true);
        using var third = await harness.AcquireAsync(Concat(System, [50, 51, 70, 71, 99]));
        Assert.Equal(System.Length + 4, harness.Copies[^1].Length);
    }

    [Fact]
    public async Task TakenOverConversation_IsParked_ThenComesBackByACopy_ParkedCopiesStayWithinTheBound()
    {
        var harness = new Harness(maxSessions: 1, maxBytes: 100 + 40);
        int[] a = Concat(System, [50, 51, 52]);
        await harness.TurnAsync(a, identity: 15, reply: 4);
        await harness.TurnAsync(Concat(System, [60, 61, 62]), identity: 15, reply: 4);

        var parkedA = Assert.Single(harness.ParkedSessions);
        Assert.Equal(a.Length + 4, parkedA.ByteSize);
        Assert.Equal(1, harness.Pool.GetStatistics().ParkedSessions);

        // A comes back: B is parked (A's copy and B's do not both fit, A's is being read), A is copied from its parked copy.
        using (var back = await harness.AcquireAsync(Concat(a, Enumerable.Range(900, 4), [70])))
        {
            Assert.Equal(a.Length + 4, back.CommonPrefixLength);
            Assert.Same(parkedA, harness.Copies[^1].Source);
        }

        var stats = harness.Pool.GetStatistics();
        Assert.True(parkedA.Disposed); // Live again: its parked copy is dropped.
        Assert.Equal(1, stats.Sessions);
        Assert.True(stats.TotalBytes <= 140, $"{stats.TotalBytes} bytes");
        Assert.Equal(2, stats.Parks);
    }
}
