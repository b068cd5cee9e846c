namespace KvChat;

/// <summary>A snapshot of a <see cref="KvChatClient"/>'s cache, from <c>GetService(typeof(KvCacheStatistics))</c>.</summary>
public sealed record KvCacheStatistics
{
    /// <summary>Gets the sessions alive (each one generator with its KV cache).</summary>
    public required int Sessions { get; init; }

    /// <summary>Gets the sessions serving a request right now.</summary>
    public required int BusySessions { get; init; }

    /// <summary>Gets the sessions holding a pinned (warmed) prefix.</summary>
    public required int PinnedSessions { get; init; }

    /// <summary>Gets the KV-cache bytes one session holds at most (allocated up front with a shared-buffer model).</summary>
    public required long KvBytesPerSession { get; init; }

    /// <summary>Gets the KV-cache bytes all sessions hold.</summary>
    public required long KvBytes { get; init; }

    /// <summary>Gets the requests served (completed, failed or cancelled) since the client was created.</summary>
    public required long Requests { get; init; }

    /// <summary>Gets the requests whose session was found by prefix.</summary>
    public required long CacheHits { get; init; }

    /// <summary>Gets the requests that took a new, empty or evicted session.</summary>
    public required long CacheMisses { get; init; }

    /// <summary>Gets the sessions taken over from another conversation.</summary>
    public required long Evictions { get; init; }

    /// <summary>Gets the sessions discarded after a failure (never reused).</summary>
    public required long Discards { get; init; }

    /// <summary>Gets the prompt tokens served from the KV cache, summed over requests.</summary>
    public required long CachedInputTokens { get; init; }

    /// <summary>Gets the prompt tokens computed (prefilled), summed over requests.</summary>
    public required long PrefilledInputTokens { get; init; }

    /// <summary>Gets the tokens generated, summed over requests.</summary>
    public required long OutputTokens { get; init; }

    /// <summary>Gets the replies whose text re-encodes to other token ids than were generated (kept in the reply memo).</summary>
    public required long RetokenizedReplies { get; init; }
}
