namespace KvChat;

/// <summary>A snapshot of a <see cref="KvChatClient"/>'s cache, from <c>GetService(typeof(KvCacheStatistics))</c>.</summary>
public sealed record KvCacheStatistics
{
    /// <summary>Gets the backend that holds the KV caches (never <see cref="KvSessionBackend.Auto"/>).</summary>
    public KvSessionBackend Backend { get; init; }

    /// <summary>
    /// Gets why <see cref="KvSessionBackend.Auto"/> fell back to the generator backend (what the owned-KV backend did not
    /// understand in the model), or <see langword="null"/>.
    /// </summary>
    public string? BackendFallbackReason { get; init; }

    /// <summary>Gets the sessions that started from a copy of another session's cached prefix instead of prefilling it.</summary>
    public long Forks { get; init; }

    /// <summary>Gets the tokens those copies held (counted in <see cref="CachedInputTokens"/> too).</summary>
    public long ForkedTokens { get; init; }

    /// <summary>
    /// Gets the pinned prefixes whose KV was loaded from <see cref="KvChatClientOptions.PrefixCacheDirectory"/> instead of
    /// prefilled (their tokens count in <see cref="CachedInputTokens"/> when a request uses them, their KV in
    /// <see cref="KvBytes"/>).
    /// </summary>
    public long PrefixesLoadedFromDisk { get; init; }

    /// <summary>Gets the pinned prefixes written to <see cref="KvChatClientOptions.PrefixCacheDirectory"/>.</summary>
    public long PrefixesWrittenToDisk { get; init; }

    /// <summary>
    /// Gets the parked copies of conversations whose session another request took over (owned-KV backend): each holds
    /// exactly its tokens' KV, and its conversation comes back by a copy instead of a prefill. Not counted in
    /// <see cref="Sessions"/>; least recently used ones are dropped to keep <see cref="KvBytes"/> within the memory bound.
    /// </summary>
    public int ParkedConversations { get; init; }

    /// <summary>Gets the bytes of the parked copies (counted in <see cref="KvBytes"/>).</summary>
    public long ParkedBytes { get; init; }

    /// <summary>Gets the decode Runs of the owned-KV backend (0 with the generator backend).</summary>
    public long DecodeSteps { get; init; }

    /// <summary>
    /// Gets the session steps those Runs computed: <see cref="DecodeStepRows"/> / <see cref="DecodeSteps"/> is the mean
    /// decode batch size.
    /// </summary>
    public long DecodeStepRows { get; init; }

    /// <summary>Gets the most sessions one decode Run computed.</summary>
    public int MaxDecodeBatchSize { get; init; }

    /// <summary>Gets why decode steps are not batched across sessions, or <see langword="null"/> when they are.</summary>
    public string? DecodeBatchingNote { get; init; }

    /// <summary>
    /// Gets how cached turns compare with a fresh prefill on this model, as a probe at load measured, when not every
    /// position is computed to the same bits however it is run: decode steps that drift beyond float rounding (int8
    /// activations, as int4 <c>MatMulNBits</c> at <c>accuracy_level</c> 4 computes them, the CPU export of GenAI's model
    /// builder) make each decode step run two rows (the previous token again with the new one, which a probe found
    /// bit-identical to a prefill), so replies stay cached and cached turns stay identical to a fresh prefill, each reply
    /// token being what a fresh prefill of everything before it says; where two-row steps are not exact, each reply is
    /// prefilled again with the next turn's tokens instead (counted in <see cref="PrefilledInputTokens"/>); decode steps
    /// that differ within rounding keep replies cached; prefills over cached positions that differ make cached turns
    /// near-exact.
    /// <see langword="null"/> when every Run agrees bit for bit.
    /// </summary>
    public string? CacheExactnessNote { get; init; }

    /// <summary>Gets the sessions alive (each one generator with its KV cache).</summary>
    public required int Sessions { get; init; }

    /// <summary>Gets the sessions serving a request right now.</summary>
    public required int BusySessions { get; init; }

    /// <summary>Gets the sessions holding a pinned (warmed) prefix.</summary>
    public required int PinnedSessions { get; init; }

    /// <summary>Gets the KV-cache bytes one session holds at most (allocated up front with a shared-buffer model).</summary>
    public required long KvBytesPerSession { get; init; }

    /// <summary>Gets the KV-cache bytes all sessions hold (parked copies included).</summary>
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
