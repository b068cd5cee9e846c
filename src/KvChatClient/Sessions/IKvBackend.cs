namespace KvChat;

/// <summary>
/// Where a client's sessions come from: the GenAI generator backend (<see cref="GeneratorBackend"/>) or the owned-KV
/// backend (<see cref="OwnedBackend"/>). The client creates one at construction and disposes it last.
/// </summary>
internal interface IKvBackend : IDisposable
{
    /// <summary>Gets which backend this is.</summary>
    KvSessionBackend Kind { get; }

    /// <summary>Gets whether sessions can copy prefixes from one another (the pool then forks instead of prefilling).</summary>
    bool CanFork { get; }

    /// <summary>Creates an empty session.</summary>
    IKvSession CreateSession();

    /// <summary>
    /// Gets whether the decoder computes a position to the same bits in Runs of one and of many rows, as probed at load:
    /// what the cache may keep so that cached turns stay identical to a fresh prefill.
    /// </summary>
    RowExactness RowExactness { get; }

    /// <summary>Gets the backend's decode-step counters (all zero for a backend that does not batch).</summary>
    DecodeStepStatistics GetStepStatistics();
}

/// <summary>Decode-step counters of a backend.</summary>
/// <param name="Steps">The decode Runs.</param>
/// <param name="Rows">The session appends those Runs served (their sum of batch sizes, padding rows excluded).</param>
/// <param name="MaxBatchSize">The most appends one Run served.</param>
/// <param name="BatchingNote">Why decode steps are not batched, or <see langword="null"/> when they are.</param>
internal readonly record struct DecodeStepStatistics(long Steps, long Rows, int MaxBatchSize, string? BatchingNote);
