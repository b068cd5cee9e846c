using KvChat;
using Xunit;

namespace KvChatClient.Tests.Caching;

public sealed class SessionPoolTests
{
    private const int Block = 4;
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static int[] Range(int start, int count) => Enumerable.Range(start, count).ToArray();

    private static int[] Concat(params int[][] parts) => parts.SelectMany(p => p).ToArray();

    /// <summary>A session that fails loudly if two holders use it at once.</summary>
    private sealed class FakeSession(int id, long byteSize) : IPooledSession
    {
        private int _inUse;
        private int _disposeCount;

        public int Id { get; } = id;

        public long ByteSize { get; set; } = byteSize;

        public int DisposeCount => Volatile.Read(ref _disposeCount);

        public void Enter()
        {
            if (Interlocked.Exchange(ref _inUse, 1) != 0)
            {
                throw new InvalidOperationException($"Session {Id} is leased to two holders.");
            }

            if (DisposeCount != 0)
            {
                throw new InvalidOperationException($"Session {Id} is used after disposal.");
            }
        }

        public void Exit() => Volatile.Write(ref _inUse, 0);

        public void Dispose() => Interlocked.Increment(ref _disposeCount);

        public override string ToString() => $"session {Id}";
    }

    private sealed class Harness
    {
        private int _nextId;

        public Harness(int maxSessions = 8, long maxBytes = long.MaxValue, BusySessionPolicy policy = BusySessionPolicy.TakeOther, long sessionBytes = 100)
        {
            Pool = new SessionPool<FakeSession>(maxSessions, maxBytes, Create, policy, Block);
            SessionBytes = sessionBytes;
        }

        public SessionPool<FakeSession> Pool { get; }

        public long SessionBytes { get; set; }

        public Func<FakeSession>? OnCreate { get; set; }

        public List<FakeSession> Created { get; } = [];

        public Task<SessionPool<FakeSession>.Lease> AcquireAsync(int[] prompt) =>
            Pool.AcquireAsync(prompt, Ct).AsTask().WaitAsync(Timeout, Ct);

        /// <summary>Leases a session for <paramref name="tokens"/>, commits them and releases it.</summary>
        public async Task<FakeSession> SeedAsync(int[] tokens)
        {
            using var lease = await AcquireAsync(tokens);
            Pool.Commit(lease, tokens);
            return lease.Session;
        }

        private FakeSession Create()
        {
            if (OnCreate is not null)
            {
                return OnCreate();
            }

            var session = new FakeSession(Interlocked.Increment(ref _nextId), SessionBytes);
            lock (Created)
            {
                Created.Add(session);
            }

            return session;
        }
    }

    /// <summary>Holds one session per token list at once (forcing creations), commits the tokens, releases all.</summary>
    private static async Task<FakeSession[]> SeedConcurrentlyAsync(Harness harness, params int[][] tokens)
    {
        // Acquire all before committing any: with the Wait policy, a committed busy session would
        // make the next acquire wait for it.
        var leases = new List<SessionPool<FakeSession>.Lease>();
        foreach (var t in tokens)
        {
            leases.Add(await harness.AcquireAsync(t));
        }

        for (var i = 0; i < leases.Count; i++)
        {
            harness.Pool.Commit(leases[i], tokens[i]);
        }

        foreach (var lease in leases)
        {
            lease.Release();
        }

        return leases.Select(l => l.Session).ToArray();
    }

    [Fact]
    public void Constructor_InvalidArguments_Throw()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new SessionPool<FakeSession>(0, 1, () => null!));
        Assert.Throws<ArgumentOutOfRangeException>(() => new SessionPool<FakeSession>(1, 0, () => null!));
        Assert.Throws<ArgumentNullException>(() => new SessionPool<FakeSession>(1, 1, null!));
        Assert.Throws<ArgumentOutOfRangeException>(() => new SessionPool<FakeSession>(1, 1, () => null!, (BusySessionPolicy)7));
        Assert.Throws<ArgumentOutOfRangeException>(() => new SessionPool<FakeSession>(1, 1, () => null!, blockSize: 0));
    }

    [Fact]
    public async Task AcquireAsync_EmptyPool_CreatesNewSession()
    {
        var harness = new Harness();

        using var lease = await harness.AcquireAsync(Range(0, 10));

        Assert.True(lease.IsNew);
        Assert.False(lease.IsHit);
        Assert.False(lease.Evicted);
        Assert.Equal(0, lease.CommonPrefixLength);
        Assert.Same(harness.Created.Single(), lease.Session);
        var stats = harness.Pool.GetStatistics();
        Assert.Equal((1, 1, 1L, 0L), (stats.Sessions, stats.BusySessions, stats.Misses, stats.Hits));
    }

    [Fact]
    public async Task AcquireAsync_AfterCommit_SameSessionWithExactPrefix()
    {
        var harness = new Harness();
        var session = await harness.SeedAsync(Range(0, 40));

        using var lease = await harness.AcquireAsync(Concat(Range(0, 42), [-1]));

        Assert.Same(session, lease.Session);
        Assert.Equal(40, lease.CommonPrefixLength);
        Assert.True(lease.IsHit);
        Assert.False(lease.IsNew);
        Assert.False(lease.Evicted);
        Assert.Equal(40, harness.Pool.GetStatistics().CachedTokens);
    }

    [Fact]
    public async Task AcquireAsync_SeveralCandidates_LongestPrefixWins()
    {
        var harness = new Harness();
        var prompt = Range(0, 60);
        var sessions = await SeedConcurrentlyAsync(
            harness,
            Concat(prompt[..20], [-1, -1]),
            Concat(prompt[..50], [-2]),
            Concat(prompt[..35], [-3]));

        using var lease = await harness.AcquireAsync(prompt);

        Assert.Same(sessions[1], lease.Session);
        Assert.Equal(50, lease.CommonPrefixLength);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AcquireAsync_EqualPrefixes_LeastRecentlyUsedWins(bool releaseSecondFirst)
    {
        var harness = new Harness();
        var tokens = Range(0, 20);
        var a = await harness.AcquireAsync(tokens);
        var b = await harness.AcquireAsync(tokens);
        harness.Pool.Commit(a, tokens);
        harness.Pool.Commit(b, tokens);
        var (first, second) = releaseSecondFirst ? (b, a) : (a, b);
        first.Release();
        second.Release();

        using var lease = await harness.AcquireAsync(Concat(tokens, [99]));

        Assert.Same(first.Session, lease.Session);
    }

    [Fact]
    public async Task AcquireAsync_BestBusyWithWaitPolicy_WaitsForItsRelease()
    {
        var harness = new Harness(policy: BusySessionPolicy.Wait);
        var prompt = Range(0, 60);
        var sessions = await SeedConcurrentlyAsync(harness, prompt[..40], prompt[..20]);
        var holder = await harness.AcquireAsync(prompt[..40]);
        Assert.Same(sessions[0], holder.Session);

        var waiting = harness.Pool.AcquireAsync(prompt, Ct).AsTask();

        Assert.False(waiting.IsCompleted);
        Assert.Equal(1, harness.Pool.GetStatistics().Waiters);
        harness.Pool.Commit(holder, prompt.AsSpan(0, 45));
        holder.Release();
        using var lease = await waiting.WaitAsync(Timeout, Ct);
        Assert.Same(sessions[0], lease.Session);
        Assert.Equal(45, lease.CommonPrefixLength);
        Assert.Equal(2, harness.Created.Count);
    }

    [Fact]
    public async Task AcquireAsync_BestBusyWithWaitPolicy_ServedElsewhereWhenBestIsDiscarded()
    {
        var harness = new Harness(policy: BusySessionPolicy.Wait);
        var prompt = Range(0, 60);
        var sessions = await SeedConcurrentlyAsync(harness, prompt[..40], prompt[..20]);
        var holder = await harness.AcquireAsync(prompt[..40]);
        var waiting = harness.Pool.AcquireAsync(prompt, Ct).AsTask();
        Assert.False(waiting.IsCompleted);

        holder.Discard();

        using var lease = await waiting.WaitAsync(Timeout, Ct);
        Assert.Same(sessions[1], lease.Session);
        Assert.Equal(20, lease.CommonPrefixLength);
    }

    [Fact]
    public async Task AcquireAsync_BestBusyWithTakeOtherPolicy_TakesBestIdle()
    {
        var harness = new Harness(policy: BusySessionPolicy.TakeOther);
        var prompt = Range(0, 60);
        var sessions = await SeedConcurrentlyAsync(harness, prompt[..40], prompt[..20]);
        using var holder = await harness.AcquireAsync(prompt[..40]);

        using var lease = await harness.AcquireAsync(prompt);

        Assert.Same(sessions[1], lease.Session);
        Assert.Equal(20, lease.CommonPrefixLength);
        Assert.True(lease.IsHit);
    }

    [Fact]
    public async Task AcquireAsync_BestBusyWithTakeOtherPolicyAndNoIdleCandidate_CreatesNew()
    {
        var harness = new Harness(policy: BusySessionPolicy.TakeOther);
        var prompt = Range(0, 60);
        await harness.SeedAsync(prompt[..40]);
        using var holder = await harness.AcquireAsync(prompt[..40]);

        using var lease = await harness.AcquireAsync(prompt);

        Assert.True(lease.IsNew);
        Assert.Equal(2, harness.Created.Count);
    }

    [Fact]
    public async Task AcquireAsync_NoCandidate_CreatesUntilMaxSessionsThenEvictsLeastRecentlyUsed()
    {
        var harness = new Harness(maxSessions: 2);
        var first = await harness.SeedAsync(Range(1000, 20));
        var second = await harness.SeedAsync(Range(2000, 20));
        Assert.NotSame(first, second);

        using var lease = await harness.AcquireAsync(Range(3000, 20));

        Assert.Same(first, lease.Session);
        Assert.False(lease.IsNew);
        Assert.True(lease.Evicted);
        Assert.False(lease.IsHit);
        Assert.Equal(0, lease.CommonPrefixLength);
        var stats = harness.Pool.GetStatistics();
        Assert.Equal((2, 1L, 3L), (stats.Sessions, stats.Evictions, stats.Misses));
    }

    [Fact]
    public async Task AcquireAsync_EvictedSessionSharesPartialBlock_ReportsExactPrefix()
    {
        var harness = new Harness(maxSessions: 1);
        await harness.SeedAsync(Concat([7, 8], Range(1000, 20)));

        using var lease = await harness.AcquireAsync(Concat([7, 8], Range(2000, 20)));

        Assert.True(lease.Evicted);
        Assert.Equal(2, lease.CommonPrefixLength);
    }

    [Fact]
    public async Task AcquireAsync_EmptyIdleSession_ReusedBeforeCreating()
    {
        var harness = new Harness(maxSessions: 4);
        var lease = await harness.AcquireAsync(Range(0, 20));
        var session = lease.Session;
        lease.Release(); // No commit: the session is registered as empty.

        using var next = await harness.AcquireAsync(Range(500, 20));

        Assert.Same(session, next.Session);
        Assert.False(next.IsNew);
        Assert.False(next.Evicted);
        Assert.Single(harness.Created);
    }

    [Fact]
    public async Task AcquireAsync_PinnedSession_EvictedLast()
    {
        var harness = new Harness(maxSessions: 2);
        var system = Range(0, 30);
        var pinnedLease = await harness.AcquireAsync(system);
        harness.Pool.Commit(pinnedLease, system);
        harness.Pool.Pin(pinnedLease);
        pinnedLease.Release();
        var other = await harness.SeedAsync(Range(1000, 20)); // More recently used than the pinned one.

        using var first = await harness.AcquireAsync(Range(2000, 20));
        Assert.Same(other, first.Session);

        using var second = await harness.AcquireAsync(Range(3000, 20));
        Assert.Same(pinnedLease.Session, second.Session);
        Assert.True(second.Evicted);
        Assert.Equal(0, harness.Pool.GetStatistics().PinnedSessions);
    }

    [Fact]
    public async Task Pin_ExtendedByConversation_StaysPinned()
    {
        var harness = new Harness(maxSessions: 4);
        var system = Range(0, 30);
        var warm = await harness.AcquireAsync(system);
        harness.Pool.Commit(warm, system);
        harness.Pool.Pin(warm);
        warm.Release();

        var conversation = Concat(system, Range(100, 10));
        var lease = await harness.AcquireAsync(conversation);
        Assert.Same(warm.Session, lease.Session);
        Assert.Equal(30, lease.CommonPrefixLength);
        harness.Pool.Commit(lease, Concat(conversation, Range(200, 5)));
        lease.Release();

        Assert.Equal(1, harness.Pool.GetStatistics().PinnedSessions);

        // A new conversation with the same system prompt rewinds the first one's tail: still above the pin.
        using var next = await harness.AcquireAsync(Concat(system, [-5, -6]));
        Assert.Same(warm.Session, next.Session);
        Assert.Equal(1, harness.Pool.GetStatistics().PinnedSessions);
    }

    [Fact]
    public async Task Pin_LeaseRewindsBelowPinnedPrefix_PinDropped()
    {
        var harness = new Harness(maxSessions: 4);
        var system = Range(0, 30);
        var warm = await harness.AcquireAsync(system);
        harness.Pool.Commit(warm, system);
        harness.Pool.Pin(warm);
        warm.Release();

        using var lease = await harness.AcquireAsync(Concat(system[..10], [-1, -2]));

        Assert.Same(warm.Session, lease.Session);
        Assert.Equal(10, lease.CommonPrefixLength);
        Assert.Equal(0, harness.Pool.GetStatistics().PinnedSessions);
    }

    [Fact]
    public async Task Pin_CommitNotKeepingPinnedPrefix_PinDropped()
    {
        var harness = new Harness();
        var system = Range(0, 30);
        var lease = await harness.AcquireAsync(system);
        harness.Pool.Commit(lease, system);
        harness.Pool.Pin(lease);
        Assert.Equal(1, harness.Pool.GetStatistics().PinnedSessions);

        harness.Pool.Commit(lease, Concat(system[..29], [-1]));

        Assert.Equal(0, harness.Pool.GetStatistics().PinnedSessions);
        lease.Release();
    }

    [Fact]
    public async Task Pin_WithoutCommit_Throws()
    {
        var harness = new Harness();
        using var lease = await harness.AcquireAsync(Range(0, 30));

        Assert.Throws<InvalidOperationException>(() => harness.Pool.Pin(lease));
    }

    [Fact]
    public async Task Release_WithoutCommit_ForgetsSessionTokens()
    {
        var harness = new Harness();
        var tokens = Range(0, 30);
        var session = await harness.SeedAsync(tokens);
        var lease = await harness.AcquireAsync(tokens);
        Assert.Equal(30, lease.CommonPrefixLength);
        lease.Release();

        using var next = await harness.AcquireAsync(tokens);

        Assert.Same(session, next.Session);
        Assert.Equal(0, next.CommonPrefixLength);
        Assert.False(next.IsHit);
    }

    [Fact]
    public async Task AcquireAsync_ByteBoundReached_EvictsInsteadOfCreating()
    {
        var harness = new Harness(maxSessions: 10, maxBytes: 250, sessionBytes: 100);
        await SeedConcurrentlyAsync(harness, Range(1000, 20), Range(2000, 20));

        using var lease = await harness.AcquireAsync(Range(3000, 20));

        Assert.True(lease.Evicted);
        Assert.Equal(2, harness.Created.Count);
        Assert.Equal(200, harness.Pool.GetStatistics().TotalBytes);
    }

    [Fact]
    public async Task AcquireAsync_ByteBoundAndAllBusy_Waits()
    {
        var harness = new Harness(maxSessions: 10, maxBytes: 250, sessionBytes: 100);
        var a = await harness.AcquireAsync(Range(1000, 20));
        using var b = await harness.AcquireAsync(Range(2000, 20));

        var waiting = harness.Pool.AcquireAsync(Range(3000, 20), Ct).AsTask();

        Assert.False(waiting.IsCompleted);
        a.Release();
        using var lease = await waiting.WaitAsync(Timeout, Ct);
        Assert.Same(a.Session, lease.Session);
    }

    [Fact]
    public async Task AcquireAsync_FirstSessionLargerThanByteBound_StillCreated()
    {
        var harness = new Harness(maxBytes: 50, sessionBytes: 100);

        using var lease = await harness.AcquireAsync(Range(0, 10));

        Assert.True(lease.IsNew);
    }

    [Fact]
    public async Task Commit_SessionGrew_TotalBytesFollow()
    {
        var harness = new Harness(maxSessions: 10, maxBytes: 350, sessionBytes: 100);
        var lease = await harness.AcquireAsync(Range(0, 10));
        lease.Session.ByteSize = 300;
        harness.Pool.Commit(lease, Range(0, 10));
        lease.Release();

        // 300 committed + 100 estimated for the next one exceeds 350: the unrelated request evicts.
        using var next = await harness.AcquireAsync(Range(500, 10));

        Assert.Equal(300, harness.Pool.GetStatistics().TotalBytes);
        Assert.True(next.Evicted);
    }

    [Fact]
    public async Task AcquireAsync_AllBusy_WaitsAndCancelsCleanly()
    {
        var harness = new Harness(maxSessions: 1);
        var holder = await harness.AcquireAsync(Range(0, 10));
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(Ct);

        var waiting = harness.Pool.AcquireAsync(Range(0, 10), cts.Token).AsTask();
        Assert.False(waiting.IsCompleted);
        Assert.Equal(1, harness.Pool.GetStatistics().Waiters);
        await cts.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting.WaitAsync(Timeout, Ct));
        Assert.Equal(0, harness.Pool.GetStatistics().Waiters);

        // The cancelled waiter took nothing: the released session goes to the next request at once.
        holder.Release();
        var next = harness.Pool.AcquireAsync(Range(0, 10), Ct);
        Assert.True(next.IsCompletedSuccessfully);
        using var lease = await next;
        Assert.Same(holder.Session, lease.Session);
        Assert.Equal((1, 0), (harness.Pool.GetStatistics().BusySessions, harness.Pool.GetStatistics().Waiters));
    }

    [Fact]
    public async Task AcquireAsync_AlreadyCancelled_ThrowsAndLeasesNothing()
    {
        var harness = new Harness();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(
            async () => await harness.Pool.AcquireAsync(Range(0, 10), new CancellationToken(canceled: true)));

        Assert.Equal(0, harness.Pool.GetStatistics().Sessions);
    }

    [Fact]
    public async Task AcquireAsync_AllBusy_WaitersServedInArrivalOrder()
    {
        var harness = new Harness(maxSessions: 1);
        var holder = await harness.AcquireAsync(Range(0, 10));
        var first = harness.Pool.AcquireAsync(Range(100, 10), Ct).AsTask();
        var second = harness.Pool.AcquireAsync(Range(0, 10), Ct).AsTask();

        holder.Release();
        var firstLease = await first.WaitAsync(Timeout, Ct);

        Assert.False(second.IsCompleted);
        firstLease.Release();
        using var secondLease = await second.WaitAsync(Timeout, Ct);
        Assert.Same(holder.Session, secondLease.Session);
    }

    [Fact]
    public async Task Discard_RemovesSessionFromPoolAndIndexAndDisposesIt()
    {
        var harness = new Harness();
        var tokens = Range(0, 30);
        var lease = await harness.AcquireAsync(tokens);
        harness.Pool.Commit(lease, tokens);

        lease.Discard();
        lease.Dispose(); // Ending an ended lease again is a no-op.

        Assert.Equal(1, lease.Session.DisposeCount);
        var stats = harness.Pool.GetStatistics();
        Assert.Equal((0, 0, 1L, 0L), (stats.Sessions, stats.BusySessions, stats.Discards, stats.TotalBytes));
        using var next = await harness.AcquireAsync(tokens);
        Assert.True(next.IsNew);
        Assert.NotSame(lease.Session, next.Session);
        Assert.Equal(0, next.CommonPrefixLength);
    }

    [Fact]
    public async Task Discard_AfterRelease_Throws()
    {
        var harness = new Harness();
        var lease = await harness.AcquireAsync(Range(0, 10));
        lease.Release();
        lease.Release();

        Assert.Throws<InvalidOperationException>(lease.Discard);
        Assert.Equal(0, lease.Session.DisposeCount);
        Assert.Equal(1, harness.Pool.GetStatistics().Sessions);
    }

    [Fact]
    public async Task Commit_AfterRelease_Throws()
    {
        var harness = new Harness();
        var lease = await harness.AcquireAsync(Range(0, 10));
        lease.Release();

        Assert.Throws<InvalidOperationException>(() => harness.Pool.Commit(lease, Range(0, 10)));
    }

    [Fact]
    public async Task Commit_LeaseOfAnotherPool_Throws()
    {
        var harness = new Harness();
        var other = new Harness();
        using var lease = await other.AcquireAsync(Range(0, 10));

        Assert.Throws<ArgumentException>(() => harness.Pool.Commit(lease, Range(0, 10)));
    }

    [Fact]
    public async Task AcquireAsync_FactoryThrows_PropagatesAndFreesTheSlot()
    {
        var harness = new Harness(maxSessions: 1)
        {
            OnCreate = () => throw new InvalidOperationException("no memory"),
        };

        var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => harness.AcquireAsync(Range(0, 10)));
        Assert.Equal("no memory", ex.Message);

        harness.OnCreate = null;
        using var lease = await harness.AcquireAsync(Range(0, 10));
        Assert.True(lease.IsNew);
    }

    [Fact]
    public async Task Dispose_IdleSessionsNowBusyOnesOnRelease()
    {
        var harness = new Harness();
        var sessions = await SeedConcurrentlyAsync(harness, Range(0, 10), Range(100, 10));
        var busy = await harness.AcquireAsync(Range(0, 10));

        harness.Pool.Dispose();

        Assert.Equal(1, sessions.Single(s => s != busy.Session).DisposeCount);
        Assert.Equal(0, busy.Session.DisposeCount);
        busy.Release();
        Assert.Equal(1, busy.Session.DisposeCount);
        Assert.Equal(0, harness.Pool.GetStatistics().Sessions);
        await Assert.ThrowsAsync<ObjectDisposedException>(() => harness.AcquireAsync(Range(0, 10)));
    }

    [Fact]
    public async Task Dispose_WhileRequestWaits_FailsItWithObjectDisposed()
    {
        var harness = new Harness(maxSessions: 1);
        using var holder = await harness.AcquireAsync(Range(0, 10));
        var waiting = harness.Pool.AcquireAsync(Range(0, 10), Ct).AsTask();

        harness.Pool.Dispose();

        await Assert.ThrowsAsync<ObjectDisposedException>(() => waiting.WaitAsync(Timeout, Ct));
    }

    [Fact]
    public async Task GetStatistics_CountsHitsMissesAndCachedTokens()
    {
        var harness = new Harness();
        await harness.SeedAsync(Range(0, 20)); // Miss (new).
        await harness.SeedAsync(Range(0, 30)); // Hit, 20 cached.
        await harness.SeedAsync(Range(0, 25)); // Hit, 25 cached.

        var stats = harness.Pool.GetStatistics();

        Assert.Equal((1L, 2L, 45L, 0L), (stats.Misses, stats.Hits, stats.CachedTokens, stats.Evictions));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AcquireAsync_ConcurrentHolders_NeverShareASession(bool waitForBusyBest)
    {
        var policy = waitForBusyBest ? BusySessionPolicy.Wait : BusySessionPolicy.TakeOther;
        var harness = new Harness(maxSessions: 3, policy: policy);
        var conversations = Enumerable.Range(0, 5).Select(c => Range(c * 1000, 24)).ToArray();
        var acquired = 0;

        async Task WorkerAsync(int worker)
        {
            var random = new Random(worker);
            for (var cycle = 0; cycle < 200; cycle++)
            {
                var prompt = conversations[random.Next(conversations.Length)][..random.Next(1, 24)];
                var lease = await harness.Pool.AcquireAsync(prompt, Ct);
                Interlocked.Increment(ref acquired);
                lease.Session.Enter();
                try
                {
                    await Task.Yield();
                    harness.Pool.Commit(lease, prompt);
                }
                finally
                {
                    lease.Session.Exit();
                }

                if (random.Next(50) == 0)
                {
                    lease.Discard();
                }
                else
                {
                    lease.Release();
                }
            }
        }

        await Task.WhenAll(Enumerable.Range(0, 8).Select(w => Task.Run(() => WorkerAsync(w), Ct))).WaitAsync(TimeSpan.FromSeconds(60), Ct);

        var stats = harness.Pool.GetStatistics();
        Assert.Equal(1600, acquired);
        Assert.Equal((0, 0), (stats.BusySessions, stats.Waiters));
        Assert.InRange(stats.Sessions, 1, 3);
        Assert.Equal(1600, stats.Hits + stats.Misses);
        Assert.Equal(harness.Created.Count - stats.Sessions, (int)stats.Discards);
        Assert.All(harness.Created, s => Assert.True(s.DisposeCount <= 1));
    }

    [Fact]
    public async Task Acquire_PromptDivergingInsideTheLastPrompt_TakesFreeCapacity()
    {
        var harness = new Harness(maxSessions: 2);
        var system = Range(0, 32);
        var conversationA = Concat(system, Range(100, 20));
        var lease = await harness.AcquireAsync(conversationA);
        harness.Pool.Commit(lease, Concat(conversationA, Range(500, 10)), replyStart: conversationA.Length);
        lease.Release();

        // Another conversation sharing only the system prompt keeps A's session intact and gets its own.
        using var b = await harness.AcquireAsync(Concat(system, Range(200, 20)));
        Assert.NotSame(lease.Session, b.Session);
        Assert.True(b.IsNew);
    }

    [Fact]
    public async Task Acquire_PromptDivergingInsideTheReply_ReusesTheSession()
    {
        var harness = new Harness(maxSessions: 2);
        var prompt = Range(0, 40);
        var lease = await harness.AcquireAsync(prompt);
        harness.Pool.Commit(lease, Concat(prompt, Range(500, 30)), replyStart: prompt.Length);
        lease.Release();

        // A reply cut short (stop string, cancellation) and continued: same session, prefix up to the cut.
        using var next = await harness.AcquireAsync(Concat(prompt, Range(500, 5), [-7, -8]));
        Assert.Same(lease.Session, next.Session);
        Assert.Equal(45, next.CommonPrefixLength);

        // Regenerating from the same prompt also stays.
        next.Release();
        using var again = await harness.AcquireAsync(prompt);
        Assert.Same(lease.Session, again.Session);
    }

    [Fact]
    public async Task Acquire_DivergingWhenThePoolIsFull_TakesOverTheLongestCommonPrefix()
    {
        var harness = new Harness(maxSessions: 1);
        var system = Range(0, 32);
        var lease = await harness.AcquireAsync(Concat(system, Range(100, 20)));
        harness.Pool.Commit(lease, Concat(system, Range(100, 20)), replyStart: 52);
        lease.Release();

        using var b = await harness.AcquireAsync(Concat(system, Range(200, 20)));
        Assert.Same(lease.Session, b.Session);
        Assert.Equal(32, b.CommonPrefixLength);
    }
}
