namespace KvChat;

/// <summary>
/// Leases KV-cache sessions to requests, one request per session at a time, choosing for each prompt
/// the session that holds the longest prefix of it.
/// </summary>
/// <typeparam name="TSession">The session type; the pool owns and disposes its sessions.</typeparam>
/// <remarks>
/// <para>
/// <b>Choice.</b> <see cref="AcquireAsync(ReadOnlyMemory{int}, int, CancellationToken)"/> looks up the prompt in a <see cref="PrefixIndex{TEntry}"/>
/// of the sessions' committed tokens and leases, among idle sessions sharing at least one block with
/// the prompt, the one with the longest exact common prefix (ties: the least recently used). If a
/// busy session shares a longer prefix (judged by its last committed tokens), <see cref="BusySessionPolicy"/>
/// decides whether to wait for it. When no idle session shares a block, the pool uses, in this order: an idle session holding no
/// tokens; a new session, while under <c>maxSessions</c> and <c>maxBytes</c>; the least recently used
/// idle session that is not pinned (an eviction); the least recently used pinned one. When every
/// session is busy and none can be created, the request waits, first come first served, for a release.
/// </para>
/// <para>
/// <b>The lease contract.</b> The holder has the session to itself. <see cref="Lease.CommonPrefixLength"/>
/// is exact against the tokens last committed for the session; the holder must rewind the session to
/// at most that many tokens before extending it. After changing the session, the holder calls
/// <see cref="Commit"/> with exactly the tokens the session now holds (prompt and generated tokens);
/// that is the only way the pool learns them. A lease released without a commit leaves the session
/// registered as holding nothing (the pool cannot know what was done to it). After any failure of the
/// session, the holder calls <see cref="Lease.Discard"/>: the session is disposed, never reused.
/// </para>
/// <para>
/// <b>Pins.</b> <see cref="Pin"/> protects a session's committed tokens (a warmed system prompt) from
/// eviction: pinned sessions are evicted last. A pinned session still serves prompts that share a
/// prefix with it; the pin holds as long as the pinned tokens stay a prefix of the session's tokens,
/// and is dropped when a lease's common prefix is shorter than the pinned prefix, when a commit does
/// not keep the pinned prefix, or when a lease is released without a commit.
/// </para>
/// <para>
/// <b>Forks</b> (sessions that can copy KV: <c>copyPrefix</c> given). When the session a prompt takes holds less of
/// it than another session does (another live conversation that must not be truncated, a pinned prefix, a busy
/// session), the pool copies that longer prefix into the taken session before handing it over, so a prefix shared by
/// many conversations (a system prompt) is prefilled once per process. A source being copied is marked as read: it is
/// not leased, and not disposed, until the copy ends. A busy source offers only what its holder cannot rewrite:
/// positions below min(its lease's common prefix, its prompt - 1), or the tokens the holder committed with
/// <c>appendOnly</c> (the decode loop does so after its prefill).
/// </para>
/// <para>
/// <b>Parking</b> (<c>park</c> given). When a prompt takes over a session that holds another conversation past the
/// shared prefix, the pool first keeps a parked copy of that conversation's tokens and KV (exactly that many
/// positions). A parked session is only ever a fork source: when its conversation comes back, it is copied into the
/// session that conversation takes, and dropped. Parked sessions are not counted in <c>maxSessions</c>; their bytes
/// count against <c>maxBytes</c>, and the least recently used are dropped to make room (live sessions first).
/// </para>
/// <para>
/// <b>Bytes.</b> A new session is created only if the committed sizes of the live sessions plus the size
/// of the last created session (an estimate of the next one) fit in <c>maxBytes</c>; the first
/// session is always allowed. Sizes are read at creation and at each commit. The bound gates
/// creation only: it never evicts a live session.
/// </para>
/// <para>
/// <b>Threading.</b> Every member is thread-safe. Decisions run under one lock that is never held
/// across an await, nor while calling the session factory or disposing a session. Waiters are served
/// in arrival order at every release, discard or failed creation; a cancelled waiter leaves the
/// queue. The session factory runs on the acquiring thread, outside the lock. A holder that acquires a
/// second lease while holding one can deadlock itself when the pool is full.
/// </para>
/// </remarks>
internal sealed class SessionPool<TSession> : IDisposable
    where TSession : class, IPooledSession
{
    /// <summary>The default number of tokens in a prefix-index block.</summary>
    public const int DefaultBlockSize = 16;


    private readonly Lock _lock = new();
    private readonly Func<TSession> _factory;
    private readonly CopyPrefix? _copyPrefix;
    private readonly Func<TSession, int, TSession>? _park;
    private readonly PrefixIndex<Slot> _index;
    private readonly List<Slot> _slots = [];
    private readonly List<PrefixCandidate<Slot>> _candidates = [];
    private readonly LinkedList<Waiter> _waiters = new();
    private int _busyCount;
    private int _pendingCreations;
    private long _totalBytes;
    private long _lastCreatedBytes;
    private long _clock;
    private bool _disposed;
    private long _hits;
    private long _misses;
    private long _evictions;
    private long _discards;
    private long _cachedTokens;
    private long _forks;
    private long _forkedTokens;
    private long _parks;
    private int _parkedCount;
    private long _parkedBytes;

    /// <summary>
    /// Creates an empty pool.
    /// </summary>
    /// <param name="maxSessions">The most sessions the pool holds; at least 1.</param>
    /// <param name="maxBytes">The memory bound for creating sessions; at least 1.</param>
    /// <param name="factory">Creates a session; called outside the pool's lock.</param>
    /// <param name="busyPolicy">What to do when the best session for a prompt is busy.</param>
    /// <param name="blockSize">
    /// The prefix-index block size: a session is found by prefix only if it shares at least this many
    /// tokens with the prompt.
    /// </param>
    /// <param name="copyPrefix">
    /// Copies a prefix into a session: <c>(target, source, tokens)</c> makes target hold source's first tokens (given).
    /// <see langword="null"/> when sessions cannot copy KV; otherwise the pool forks (see the remarks).
    /// </param>
    /// <param name="park">
    /// Copies a session's first tokens into a parked session that holds no live slot (<c>(session, length)</c>): a
    /// conversation taken over keeps its KV there, and comes back by a fork. <see langword="null"/>: none is kept.
    /// </param>
    public SessionPool(
        int maxSessions,
        long maxBytes,
        Func<TSession> factory,
        BusySessionPolicy busyPolicy = BusySessionPolicy.TakeOther,
        int blockSize = DefaultBlockSize,
        CopyPrefix? copyPrefix = null,
        Func<TSession, int, TSession>? park = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxSessions, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBytes, 1L);
        ArgumentNullException.ThrowIfNull(factory);
        if (!Enum.IsDefined(busyPolicy))
        {
            throw new ArgumentOutOfRangeException(nameof(busyPolicy), busyPolicy, "Unknown busy-session policy.");
        }

        MaxSessions = maxSessions;
        MaxBytes = maxBytes;
        BusyPolicy = busyPolicy;
        _factory = factory;
        _copyPrefix = copyPrefix;
        _park = copyPrefix is null ? null : park;
        _index = new PrefixIndex<Slot>(blockSize, seed: 0);
    }

    /// <summary>Gets the most sessions the pool holds.</summary>
    public int MaxSessions { get; }

    /// <summary>Gets the memory bound for creating sessions.</summary>
    public long MaxBytes { get; }

    /// <summary>Gets what the pool does when the best session for a prompt is busy.</summary>
    public BusySessionPolicy BusyPolicy { get; }

    /// <summary>
    /// Leases the session that best serves <paramref name="prompt"/>, waiting if none is available.
    /// </summary>
    /// <param name="prompt">
    /// The prompt's token ids. Read again while the request waits: do not change it until the returned
    /// task completes.
    /// </param>
    /// <param name="cancellationToken">Cancels the wait; a cancelled request holds nothing.</param>
    /// <returns>The lease; release or discard it exactly once.</returns>
    /// <exception cref="ObjectDisposedException">The pool is disposed, or was disposed while waiting.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    public ValueTask<Lease> AcquireAsync(ReadOnlyMemory<int> prompt, CancellationToken cancellationToken = default)
        => AcquireAsync(prompt, int.MaxValue, cancellationToken);

    /// <summary>
    /// Leases the session that best serves <paramref name="prompt"/>, waiting if none is available.
    /// </summary>
    /// <param name="prompt">The prompt's token ids (read again while the request waits: do not change it).</param>
    /// <param name="identityLength">
    /// How many leading tokens identify the prompt's conversation (its system prompt and first user message). While free
    /// capacity remains, a session whose common prefix with the prompt is shorter than this and shorter than the
    /// session's last prompt (another conversation that shares only a system prompt) is not truncated: the prompt takes
    /// a free session. <see cref="int.MaxValue"/> treats every such divergence as another conversation.
    /// </param>
    /// <param name="cancellationToken">Cancels the wait; a cancelled request holds nothing.</param>
    /// <returns>The lease; release or discard it exactly once.</returns>
    /// <exception cref="ObjectDisposedException">The pool is disposed, or was disposed while waiting.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    public async ValueTask<Lease> AcquireAsync(ReadOnlyMemory<int> prompt, int identityLength, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var waiter = TryLeaseOrEnqueue(prompt, identityLength, out var grant);
        if (waiter is not null)
        {
            var registration = cancellationToken.UnsafeRegister(
                static (state, token) => ((Waiter)state!).Cancel(token),
                waiter);
            await using (registration.ConfigureAwait(false))
            {
                grant = await waiter.Completion.Task.ConfigureAwait(false);
            }
        }

        Lease lease;
        try
        {
            lease = grant.Lease ?? CreateReservedSession();
        }
        catch
        {
            if (grant.ForkSource is not null)
            {
                EndRead(grant.ForkSource);
            }

            throw;
        }

        if (grant.ParkTokens is not null)
        {
            Park(lease, grant.ParkTokens, grant.ForkSource);
        }

        if (grant.ForkSource is not null)
        {
            Fork(lease, grant.ForkSource, grant.ForkLength, prompt.Span);
        }

        return lease;
    }

    /// <summary>
    /// Records the tokens the leased session now holds, for future lookups.
    /// </summary>
    /// <param name="lease">An active lease from this pool.</param>
    /// <param name="tokens">
    /// Exactly the tokens the session holds: the prompt and the generated tokens in its KV cache.
    /// Copied. May be called several times per lease; the last call counts.
    /// </param>
    /// <param name="replyStart">
    /// Where the last request's prompt ends and its reply begins in <paramref name="tokens"/>; <see langword="null"/>
    /// keeps the previous value (the session was not changed). A later prompt that diverges before this point is another conversation (or an edit of
    /// this one) and takes free capacity rather than truncate this session; one that diverges inside the reply (a reply
    /// cut by a stop string or cancellation, or regenerated) reuses it.
    /// </param>
    /// <param name="appendOnly">
    /// Whether the holder only appends to <paramref name="tokens"/> for the rest of the lease (the decode loop after its
    /// prefill): their KV then stays as it is, and a fork may copy them while the session is busy.
    /// </param>
    /// <remarks>Also reads the session's <see cref="IPooledSession.ByteSize"/>.</remarks>
    /// <exception cref="InvalidOperationException">The lease has been released or discarded.</exception>
    public void Commit(Lease lease, ReadOnlySpan<int> tokens, int? replyStart = null, bool appendOnly = false)
    {
        ArgumentNullException.ThrowIfNull(lease);
        lock (_lock)
        {
            EnsureActive(lease);
            var slot = lease.Slot;
            var size = slot.Session.ByteSize;
            if (slot.PinnedLength > 0 && _index.GetCommonPrefixLength(slot, tokens) < slot.PinnedLength)
            {
                slot.PinnedLength = 0;
            }

            _index.Set(slot, tokens);
            slot.TokenCount = tokens.Length;
            if (appendOnly)
            {
                slot.StableLength = Math.Max(slot.StableLength, tokens.Length);
            }

            slot.ReplyStart = Math.Min(replyStart ?? slot.ReplyStart, tokens.Length);
            _totalBytes += size - slot.ByteSize;
            slot.ByteSize = size;
            lease.IsCommitted = true;
        }
    }

    /// <summary>
    /// Pins the tokens last committed through <paramref name="lease"/>, so that the session is evicted
    /// only after every unpinned one.
    /// </summary>
    /// <param name="lease">An active lease from this pool, with a commit.</param>
    /// <exception cref="InvalidOperationException">
    /// The lease has been released or discarded, or nothing has been committed through it.
    /// </exception>
    public void Pin(Lease lease)
    {
        ArgumentNullException.ThrowIfNull(lease);
        lock (_lock)
        {
            EnsureActive(lease);
            if (!lease.IsCommitted || lease.Slot.TokenCount == 0)
            {
                throw new InvalidOperationException("Commit the session's tokens through this lease before pinning them.");
            }

            lease.Slot.PinnedLength = lease.Slot.TokenCount;
        }
    }

    /// <summary>
    /// Gets the longest prefix of <paramref name="prompt"/> that any session (busy, idle or parked) holds, by the tokens
    /// last committed: what a lease or a fork could serve from memory.
    /// </summary>
    public int GetLongestCachedPrefix(ReadOnlySpan<int> prompt)
    {
        lock (_lock)
        {
            _index.FindCandidates(prompt, _candidates);
            var longest = 0;
            foreach (var candidate in _candidates)
            {
                longest = Math.Max(longest, candidate.CommonPrefixLength);
            }

            _candidates.Clear();
            return longest;
        }
    }

    /// <summary>
    /// Returns a snapshot of the pool's state and counters.
    /// </summary>
    public SessionPoolStatistics GetStatistics()
    {
        lock (_lock)
        {
            var pinned = 0;
            foreach (var slot in _slots)
            {
                if (slot.PinnedLength > 0)
                {
                    pinned++;
                }
            }

            return new SessionPoolStatistics(
                _slots.Count - _parkedCount,
                _busyCount,
                pinned,
                _waiters.Count,
                _totalBytes,
                _hits,
                _misses,
                _evictions,
                _discards,
                _cachedTokens,
                _forks,
                _forkedTokens,
                _parkedCount,
                _parkedBytes,
                _parks);
        }
    }

    /// <summary>
    /// Disposes the idle sessions now and the busy ones when their leases end; fails waiting and
    /// later requests with <see cref="ObjectDisposedException"/>.
    /// </summary>
    /// <exception cref="AggregateException">Disposing one or more idle sessions failed; all were attempted.</exception>
    public void Dispose()
    {
        List<TSession> idle = [];
        List<Waiter> waiters = [];
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            for (var i = _slots.Count - 1; i >= 0; i--)
            {
                var slot = _slots[i];
                if (!slot.IsBusy)
                {
                    RemoveSlot(slot);
                    if (DisposeOrDefer(slot) is { } session)
                    {
                        idle.Add(session);
                    }
                }
            }

            foreach (var waiter in _waiters)
            {
                waiter.Node = null;
                waiters.Add(waiter);
            }

            _waiters.Clear();
        }

        foreach (var waiter in waiters)
        {
            waiter.Completion.TrySetException(new ObjectDisposedException(GetType().FullName));
        }

        List<Exception>? errors = null;
        foreach (var session in idle)
        {
            try
            {
                session.Dispose();
            }
            catch (Exception exception)
            {
                (errors ??= []).Add(exception);
            }
        }

        if (errors is not null)
        {
            throw new AggregateException("Disposing one or more sessions failed.", errors);
        }
    }

    private Waiter? TryLeaseOrEnqueue(ReadOnlyMemory<int> prompt, int identityLength, out Grant lease)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (TryDecide(prompt.Span, identityLength, out lease))
            {
                return null;
            }

            var waiter = new Waiter(this, prompt, identityLength);
            waiter.Node = _waiters.AddLast(waiter);
            return waiter;
        }
    }

    // Under the lock. Returns false when the request must wait; true with a lease, or true with a null lease
    // when a creation slot has been reserved for the caller (who calls the factory outside the lock). Either may
    // come with a fork source: the caller copies that slot's prefix into its session (see Fork).
    private bool TryDecide(ReadOnlySpan<int> prompt, int identityLength, out Grant grant)
    {
        var decided = TryDecideTarget(prompt, identityLength, out var lease, out var target, out var targetLength, out var source, out var sourceLength);
        int[]? park = null;
        if (decided && _park is not null && target is not null && targetLength < target.ReplyStart && target.TokenCount - targetLength >= _index.BlockSize)
        {
            // The target holds another conversation (or an earlier version of this one) past the shared prefix: keep a
            // parked copy, so that conversation comes back by a fork instead of a prefill.
            park = _index.GetTokens(target).ToArray();
        }

        if (decided && source is not null && sourceLength > targetLength && !ReferenceEquals(source, target))
        {
            // The holder replaces the target's content: nothing of it may be copied until the fork has committed.
            target?.StableLength = 0;
            source.Readers++;
            grant = new Grant(lease, source, sourceLength, park);
        }
        else
        {
            grant = new Grant(lease, null, 0, park);
        }

        return decided;
    }

    // Under the lock: the session a prompt takes (or a creation) and the slot holding the longest prefix that may be
    // copied: an idle slot's whole common prefix, a busy one's only below what its holder may rewrite.
    private bool TryDecideTarget(
        ReadOnlySpan<int> prompt,
        int identityLength,
        out Lease? lease,
        out Slot? target,
        out int targetLength,
        out Slot? source,
        out int sourceLength)
    {
        _index.FindCandidates(prompt, _candidates);
        Slot? bestIdle = null;
        var bestIdleLength = 0;
        var bestBusyLength = 0;
        source = null;
        sourceLength = 0;
        foreach (var candidate in _candidates)
        {
            var slot = candidate.Entry;
            var length = candidate.CommonPrefixLength;
            if (_copyPrefix is not null)
            {
                var copyable = Math.Min(slot.IsBusy ? Math.Min(length, slot.StableLength) : length, prompt.Length);
                if (copyable > sourceLength)
                {
                    source = slot;
                    sourceLength = copyable;
                }
            }

            if (slot.IsParked)
            {
                continue;
            }

            if (slot.IsBusy || slot.Readers > 0)
            {
                bestBusyLength = Math.Max(bestBusyLength, length);
            }
            else if (bestIdle is null || length > bestIdleLength || (length == bestIdleLength && slot.LastUsed < bestIdle.LastUsed))
            {
                bestIdle = slot;
                bestIdleLength = length;
            }
        }

        _candidates.Clear();
        target = null;
        targetLength = 0;
        if (bestBusyLength > bestIdleLength && BusyPolicy == BusySessionPolicy.Wait)
        {
            lease = null;
            return false;
        }

        // A prompt that diverges from its best session before that session's last reply and before the prompt's own
        // first user message ends (another conversation sharing only a system prompt; not a regenerated or cut reply,
        // not an edit deeper in the same conversation) takes free capacity while there is some, so conversations keep
        // their own sessions until all sessions exist; then the longest common prefix takes over.
        var truncates = bestIdle is not null
            && bestIdleLength < bestIdle.ReplyStart
            && bestIdleLength < identityLength
            && bestIdleLength < prompt.Length - 1;
        if (bestIdle is not null && !(truncates && HasFreeCapacity()))
        {
            (target, targetLength) = (bestIdle, bestIdleLength);
            lease = LeaseSlot(bestIdle, bestIdleLength, isHit: true, prompt.Length);
            return true;
        }

        Slot? empty = null;
        Slot? unpinned = null;
        Slot? pinned = null;
        foreach (var slot in _slots)
        {
            if (slot.IsBusy || slot.Readers > 0 || slot.IsParked)
            {
                continue;
            }

            if (slot.TokenCount == 0)
            {
                empty = LeastRecentlyUsed(empty, slot);
            }
            else if (slot.PinnedLength == 0)
            {
                unpinned = LeastRecentlyUsed(unpinned, slot);
            }
            else
            {
                pinned = LeastRecentlyUsed(pinned, slot);
            }
        }

        if (empty is not null)
        {
            target = empty;
            lease = LeaseSlot(empty, 0, isHit: false, prompt.Length);
            return true;
        }

        if (CanCreate())
        {
            _pendingCreations++;
            lease = null;
            return true;
        }

        var victim = unpinned ?? pinned;
        if (victim is not null)
        {
            (target, targetLength) = (victim, _index.GetCommonPrefixLength(victim, prompt));
            lease = LeaseSlot(victim, targetLength, isHit: false, prompt.Length);
            return true;
        }

        lease = null;
        return false;
    }

    private bool HasFreeCapacity()
    {
        foreach (var slot in _slots)
        {
            if (!slot.IsBusy && slot.TokenCount == 0)
            {
                return true;
            }
        }

        return CanCreate();
    }

    private static Slot LeastRecentlyUsed(Slot? current, Slot slot) =>
        current is null || slot.LastUsed < current.LastUsed ? slot : current;

    // Parked sessions neither count as sessions nor block a creation: they are trimmed to make room (TrimParked).
    private bool CanCreate()
    {
        var count = _slots.Count - _parkedCount + _pendingCreations;
        if (count >= MaxSessions)
        {
            return false;
        }

        return count == 0 || _totalBytes - _parkedBytes + ((_pendingCreations + 1) * _lastCreatedBytes) <= MaxBytes;
    }

    /// <summary>
    /// Keeps a parked copy of <paramref name="tokens"/> (what the lease's session held before this request takes it
    /// over), within the memory bound: least recently used parked sessions go first; when it still does not fit it is
    /// not kept.
    /// </summary>
    private void Park(Lease lease, int[] tokens, Slot? forkSource)
    {
        var parked = _park!(lease.Session, tokens.Length);
        var size = parked.ByteSize;
        List<TSession> toDispose = [];
        lock (_lock)
        {
            if (_disposed || _totalBytes + size > MaxBytes + _parkedBytes)
            {
                toDispose.Add(parked);
            }
            else
            {
                var slot = new Slot(parked, size) { IsParked = true, TokenCount = tokens.Length, ReplyStart = tokens.Length, LastUsed = ++_clock };
                _slots.Add(slot);
                _index.Set(slot, tokens);
                _totalBytes += size;
                _parkedBytes += size;
                _parkedCount++;
                _parks++;
                TrimParked(toDispose, keep: forkSource);
            }
        }

        foreach (var session in toDispose)
        {
            session.Dispose();
        }
    }

    // Under the lock: removes least recently used parked sessions (not being read) until the bytes fit.
    private void TrimParked(List<TSession> toDispose, Slot? keep = null)
    {
        while (_totalBytes > MaxBytes)
        {
            Slot? oldest = null;
            foreach (var slot in _slots)
            {
                if (slot.IsParked && slot.Readers == 0 && !ReferenceEquals(slot, keep))
                {
                    oldest = LeastRecentlyUsed(oldest, slot);
                }
            }

            if (oldest is null)
            {
                return;
            }

            RemoveSlot(oldest);
            toDispose.Add(oldest.Session);
        }
    }

    private Lease LeaseSlot(Slot slot, int commonPrefixLength, bool isHit, int promptLength)
    {
        // The holder keeps at most min(common prefix, prompt - 1) tokens (at least one token is computed for logits):
        // positions below that are not rewritten while the lease lasts, so a fork may copy them.
        slot.StableLength = Math.Min(commonPrefixLength, promptLength - 1);
        var evicted = !isHit && slot.TokenCount > 0;
        if (commonPrefixLength < slot.PinnedLength)
        {
            slot.PinnedLength = 0; // The holder rewinds below the pinned prefix.
        }

        slot.IsBusy = true;
        slot.LastUsed = ++_clock;
        _busyCount++;
        if (isHit)
        {
            _hits++;
        }
        else
        {
            _misses++;
        }

        if (evicted)
        {
            _evictions++;
        }

        _cachedTokens += commonPrefixLength;
        return new Lease(this, slot, commonPrefixLength, isNew: false, evicted, isHit);
    }

    /// <summary>
    /// Copies <paramref name="source"/>'s first <paramref name="length"/> tokens into the lease's session (outside the
    /// lock: the source is marked as read, so it is neither leased nor disposed meanwhile, and a busy source's holder
    /// does not rewrite those positions). On failure the target session is discarded and the error propagates.
    /// </summary>
    private void Fork(Lease lease, Slot source, int length, ReadOnlySpan<int> prompt)
    {
        try
        {
            _copyPrefix!(lease.Session, source.Session, prompt[..length]);
        }
        catch
        {
            EndRead(source);
            lease.Discard();
            throw;
        }

        TSession? toDispose;
        lock (_lock)
        {
            toDispose = EndReadLocked(source);
            if (source.IsParked && length == source.TokenCount && _slots.Contains(source))
            {
                // The conversation is live again: its parked copy is not needed.
                RemoveSlot(source);
                toDispose = DisposeOrDefer(source);
            }

            var slot = lease.Slot;
            _index.Set(slot, prompt[..length]);
            slot.TokenCount = length;
            slot.ReplyStart = 0;
            slot.PinnedLength = 0;
            slot.StableLength = Math.Min(length, prompt.Length - 1);
            _cachedTokens += length - lease.CommonPrefixLength;
            lease.CommonPrefixLength = length;
            lease.ForkedTokens = length;
            _forks++;
            _forkedTokens += length;
        }

        toDispose?.Dispose();
    }

    private void EndRead(Slot source)
    {
        TSession? toDispose;
        lock (_lock)
        {
            toDispose = EndReadLocked(source);
        }

        toDispose?.Dispose();
    }

    // Under the lock: one reader fewer; returns the session to dispose when it was discarded while read.
    private TSession? EndReadLocked(Slot source)
    {
        source.Readers--;
        ServeWaiters();
        return source.Readers == 0 && source.DisposeAfterRead ? source.Session : null;
    }

    private Lease CreateReservedSession()
    {
        TSession? session = null;
        long size;
        try
        {
            session = _factory() ?? throw new InvalidOperationException("The session factory returned null.");
            size = session.ByteSize;
            ArgumentOutOfRangeException.ThrowIfNegative(size, "session.ByteSize");
        }
        catch
        {
            lock (_lock)
            {
                _pendingCreations--;
                ServeWaiters();
            }

            session?.Dispose();
            throw;
        }

        List<TSession> trimmed = [];
        Lease? created = null;
        lock (_lock)
        {
            _pendingCreations--;
            if (!_disposed)
            {
                var slot = new Slot(session, size) { IsBusy = true, LastUsed = ++_clock };
                _slots.Add(slot);
                _index.Set(slot, []);
                _busyCount++;
                _totalBytes += size;
                _lastCreatedBytes = size;
                _misses++;
                slot.StableLength = 0;
                TrimParked(trimmed);
                created = new Lease(this, slot, 0, isNew: true, evicted: false, isHit: false);
            }
        }

        foreach (var parked in trimmed)
        {
            parked.Dispose();
        }

        if (created is not null)
        {
            return created;
        }

        session.Dispose();
        throw new ObjectDisposedException(GetType().FullName);
    }

    private void Return(Lease lease, bool discard)
    {
        TSession? toDispose = null;
        lock (_lock)
        {
            if (lease.State == LeaseState.Discarded)
            {
                return;
            }

            if (lease.State == LeaseState.Released)
            {
                if (discard)
                {
                    throw new InvalidOperationException("The lease has been released: the session may be leased again, so it can no longer be discarded.");
                }

                return;
            }

            var slot = lease.Slot;
            slot.IsBusy = false;
            _busyCount--;
            if (discard)
            {
                lease.State = LeaseState.Discarded;
                RemoveSlot(slot);
                _discards++;
                toDispose = DisposeOrDefer(slot);
            }
            else
            {
                lease.State = LeaseState.Released;
                slot.LastUsed = ++_clock;
                if (!lease.IsCommitted)
                {
                    _index.Set(slot, []);
                    slot.TokenCount = 0;
                    slot.ReplyStart = 0;
                    slot.PinnedLength = 0;
                }

                if (_disposed)
                {
                    RemoveSlot(slot);
                    toDispose = DisposeOrDefer(slot);
                }
            }

            ServeWaiters();
        }

        toDispose?.Dispose();
    }

    // Under the lock: serves the waiters that can be served now, in arrival order.
    private void ServeWaiters()
    {
        var node = _waiters.First;
        while (node is not null && (_busyCount < _slots.Count - _parkedCount || CanCreate()))
        {
            var next = node.Next;
            var waiter = node.Value;
            if (TryDecide(waiter.Prompt.Span, waiter.IdentityLength, out var grant))
            {
                _waiters.Remove(node);
                waiter.Node = null;
                waiter.Completion.TrySetResult(grant);
            }

            node = next;
        }
    }

    private void CancelWaiter(Waiter waiter, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            if (waiter.Node is null)
            {
                return; // Already served, or failed by Dispose.
            }

            _waiters.Remove(waiter.Node);
            waiter.Node = null;
        }

        waiter.Completion.TrySetCanceled(cancellationToken);
    }

    // Under the lock, for a removed slot: its session to dispose now, or null when a fork is reading it (the last
    // reader disposes it).
    private static TSession? DisposeOrDefer(Slot slot)
    {
        if (slot.Readers > 0)
        {
            slot.DisposeAfterRead = true;
            return null;
        }

        return slot.Session;
    }

    private void RemoveSlot(Slot slot)
    {
        if (slot.IsParked)
        {
            _parkedCount--;
            _parkedBytes -= slot.ByteSize;
        }

        _slots.Remove(slot);
        _index.Remove(slot);
        _totalBytes -= slot.ByteSize;
    }

    private void EnsureActive(Lease lease)
    {
        if (!ReferenceEquals(lease.Pool, this))
        {
            throw new ArgumentException("The lease belongs to another pool.", nameof(lease));
        }

        if (lease.State != LeaseState.Active)
        {
            throw new InvalidOperationException($"The lease has been {(lease.State == LeaseState.Released ? "released" : "discarded")}.");
        }
    }

    /// <summary>The state of a lease.</summary>
    internal enum LeaseState
    {
        /// <summary>The holder has the session.</summary>
        Active,

        /// <summary>The session went back to the pool.</summary>
        Released,

        /// <summary>The session was disposed and removed from the pool.</summary>
        Discarded,
    }

    /// <summary>
    /// Exclusive use of one session of a <see cref="SessionPool{TSession}"/>, until released or discarded.
    /// </summary>
    /// <remarks>
    /// End it exactly once: <see cref="Release"/> (or <see cref="Dispose"/>) after success,
    /// <see cref="Discard"/> after a failure of the session. Ending it again is a no-op, except that
    /// discarding a released lease throws (the session may already be someone else's).
    /// </remarks>
    internal sealed class Lease : IDisposable
    {
        internal Lease(SessionPool<TSession> pool, Slot slot, int commonPrefixLength, bool isNew, bool evicted, bool isHit)
        {
            Pool = pool;
            Slot = slot;
            CommonPrefixLength = commonPrefixLength;
            IsNew = isNew;
            Evicted = evicted;
            IsHit = isHit;
        }

        /// <summary>Gets the leased session.</summary>
        public TSession Session => Slot.Session;

        /// <summary>
        /// Gets the exact number of leading prompt tokens that the session's committed tokens hold. The
        /// holder must rewind the session to at most this many tokens before extending it.
        /// </summary>
        public int CommonPrefixLength { get; internal set; }

        /// <summary>Gets the tokens copied into the session from another session's prefix for this lease (0: no fork).</summary>
        public int ForkedTokens { get; internal set; }

        /// <summary>Gets whether the session was created for this lease.</summary>
        public bool IsNew { get; }

        /// <summary>
        /// Gets whether this lease took over a session that held another conversation's tokens (it
        /// shared less than one block with the prompt).
        /// </summary>
        public bool Evicted { get; }

        /// <summary>Gets whether the session was found by prefix: it shares at least one block with the prompt.</summary>
        public bool IsHit { get; }

        internal SessionPool<TSession> Pool { get; }

        internal Slot Slot { get; }

        internal LeaseState State { get; set; }

        internal bool IsCommitted { get; set; }

        /// <summary>Returns the session to the pool.</summary>
        public void Release() => Pool.Return(this, discard: false);

        /// <summary>Returns the session to the pool; same as <see cref="Release"/>.</summary>
        public void Dispose() => Release();

        /// <summary>
        /// Removes the session from the pool and its index and disposes it: for a session whose state
        /// is unknown after a failure. A discarded session is never leased again.
        /// </summary>
        /// <exception cref="InvalidOperationException">The lease has already been released.</exception>
        public void Discard() => Pool.Return(this, discard: true);
    }

    /// <summary>The pool's record of one session.</summary>
    internal sealed class Slot(TSession session, long byteSize)
    {
        public TSession Session { get; } = session;

        public long ByteSize { get; set; } = byteSize;

        public bool IsBusy { get; set; }

        /// <summary>The logical time of the last acquire or release; orders sessions for LRU.</summary>
        public long LastUsed { get; set; }

        /// <summary>The number of committed tokens (mirrors the index).</summary>
        public int TokenCount { get; set; }

        /// <summary>Where the last committed prompt ended (the reply began).</summary>
        public int ReplyStart { get; set; }

        /// <summary>The length of the pinned prefix; 0 when not pinned.</summary>
        public int PinnedLength { get; set; }

        /// <summary>While busy: the positions its holder does not rewrite (a fork may copy them).</summary>
        public int StableLength { get; set; }

        /// <summary>The forks copying from this slot now: it is not leased, and not disposed, until they end.</summary>
        public int Readers { get; set; }

        /// <summary>Whether the slot was removed while read: the last reader disposes its session.</summary>
        public bool DisposeAfterRead { get; set; }

        /// <summary>Whether the session is parked: a copy of a taken-over conversation's KV, only ever a fork source.</summary>
        public bool IsParked { get; init; }
    }

    /// <summary>Makes <paramref name="target"/> hold <paramref name="source"/>'s first <paramref name="tokens"/> (copied).</summary>
    internal delegate void CopyPrefix(TSession target, TSession source, ReadOnlySpan<int> tokens);

    /// <summary>A decision for one request: a lease (null: create a session), and maybe a prefix to copy into it.</summary>
    internal readonly record struct Grant(Lease? Lease, Slot? ForkSource, int ForkLength, int[]? ParkTokens = null);

    /// <summary>A request waiting for a session.</summary>
    private sealed class Waiter(SessionPool<TSession> pool, ReadOnlyMemory<int> prompt, int identityLength)
    {
        public ReadOnlyMemory<int> Prompt { get; } = prompt;

        public int IdentityLength { get; } = identityLength;

        /// <summary>Completes with a lease, or with a null lease for a reserved creation slot.</summary>
        public TaskCompletionSource<Grant> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>The waiter's place in the queue; null once it has left it.</summary>
        public LinkedListNode<Waiter>? Node { get; set; }

        public void Cancel(CancellationToken cancellationToken) => pool.CancelWaiter(this, cancellationToken);
    }
}
