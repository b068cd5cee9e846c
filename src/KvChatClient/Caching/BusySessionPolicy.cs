namespace KvChat;

/// <summary>
/// What a <see cref="SessionPool{TSession}"/> does when the session with the longest cached prefix
/// for a prompt is leased by another request.
/// </summary>
internal enum BusySessionPolicy
{
    /// <summary>
    /// Take the best idle session instead: the idle one with the longest prefix, or else a new or an
    /// evicted one. Never waits while the pool can serve the request otherwise.
    /// </summary>
    TakeOther,

    /// <summary>
    /// Wait until the best session is released. A request waits even when it could take another
    /// session or create one, so under this policy concurrent conversations that share a system
    /// prompt queue on one session instead of growing the pool.
    /// </summary>
    Wait,
}
