namespace KvChat;

/// <summary>
/// A snapshot of a <see cref="SessionPool{TSession}"/>'s state and counters.
/// </summary>
/// <param name="Sessions">The sessions the pool holds, busy or idle (creations under way excluded).</param>
/// <param name="BusySessions">The sessions leased right now.</param>
/// <param name="PinnedSessions">The sessions with a pinned prefix.</param>
/// <param name="Waiters">The requests waiting for a session.</param>
/// <param name="TotalBytes">The sum of the sessions' <see cref="IPooledSession.ByteSize"/>, as last read.</param>
/// <param name="Hits">Leases whose session was found by prefix (shares at least one block with the prompt).</param>
/// <param name="Misses">Leases of a new, empty or evicted session.</param>
/// <param name="Evictions">Leases that took over a session holding another conversation's tokens.</param>
/// <param name="Discards">Sessions discarded after a failure.</param>
/// <param name="CachedTokens">The sum of the leases' common prefix lengths: the tokens promised from cache (forked ones included).</param>
/// <param name="Forks">Leases whose session started from a copy of another session's prefix.</param>
/// <param name="ForkedTokens">The tokens those copies held.</param>
/// <param name="ParkedSessions">Parked copies of taken-over conversations held now (not counted in <paramref name="Sessions"/>).</param>
/// <param name="ParkedBytes">Their bytes (counted in <paramref name="TotalBytes"/>).</param>
/// <param name="Parks">Conversations parked since the pool was created.</param>
internal readonly record struct SessionPoolStatistics(
    int Sessions,
    int BusySessions,
    int PinnedSessions,
    int Waiters,
    long TotalBytes,
    long Hits,
    long Misses,
    long Evictions,
    long Discards,
    long CachedTokens,
    long Forks,
    long ForkedTokens,
    int ParkedSessions,
    long ParkedBytes,
    long Parks);
