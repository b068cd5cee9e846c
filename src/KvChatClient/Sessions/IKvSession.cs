namespace KvChat;

/// <summary>
/// The session contract: one sequence's KV cache and the exact token ids it holds. The pool and the decode loop see
/// sessions only through this interface. Two backends implement it: <see cref="KvSession"/> (a GenAI generator, in
/// <c>Sessions/Generator</c>) and <see cref="OwnedSession"/> (KV memory the client owns, run on ONNX Runtime directly, in
/// <c>Sessions/Owned</c>).
/// </summary>
/// <remarks>
/// <para>
/// A session is used by one request at a time (the pool's lease). The decode loop appends every chosen token itself, so
/// no token is ever pending: the KV cache always holds exactly <see cref="Tokens"/>, and rewinding is bookkeeping.
/// </para>
/// <para>
/// What only a backend that owns its KV memory can do is behind <see cref="CanFork"/>: copy another session's prefix
/// (<see cref="CopyPrefixFrom"/>), write and read the KV it holds (<see cref="Save"/>, <see cref="Load"/>), and decode
/// together with other sessions (its <see cref="Append"/> joins the next batched step of the backend).
/// </para>
/// </remarks>
internal interface IKvSession : IPooledSession
{
    /// <summary>Gets the token ids the KV cache holds.</summary>
    IReadOnlyList<int> Tokens { get; }

    /// <summary>Gets the number of tokens the KV cache holds.</summary>
    int TokenCount { get; }

    /// <summary>Gets the most tokens the session holds (prompt plus reply).</summary>
    int ContextTokens { get; }

    /// <summary>
    /// Gets whether the session owns its KV memory: it can copy a prefix from another session of its backend, save and
    /// load its KV, and join batched decode steps.
    /// </summary>
    bool CanFork { get; }

    /// <summary>
    /// Makes the KV cache hold <paramref name="prompt"/>: keeps its first <paramref name="keep"/> tokens (which must equal
    /// the prompt's) and appends the rest. At least one token is appended, so logits for the prompt's end are ready.
    /// </summary>
    void Prefill(ReadOnlySpan<int> prompt, int keep);

    /// <summary>Keeps the first <paramref name="keep"/> tokens and appends <paramref name="tail"/> (which may be empty).</summary>
    void Extend(int keep, ReadOnlySpan<int> tail);

    /// <summary>
    /// Appends one chosen token: computes its K/V and the next logits. With an owned backend the step may run in one
    /// batched Run together with the appends of other sessions (the result is the same).
    /// </summary>
    void Append(int token);

    /// <summary>Copies the logits of the last position into <paramref name="destination"/> (vocabulary size).</summary>
    void ReadLastLogits(Span<float> destination);

    /// <summary>
    /// Replaces what the session holds with <paramref name="source"/>'s first <paramref name="tokens"/> and their KV,
    /// copied. The caller passes the tokens (a busy source's own list may be changing) and guarantees that the source
    /// does not rewrite those positions during the copy (the pool does).
    /// </summary>
    /// <exception cref="NotSupportedException">The backend cannot copy KV (<see cref="CanFork"/> is false).</exception>
    void CopyPrefixFrom(IKvSession source, ReadOnlySpan<int> tokens);

    /// <summary>
    /// Copies the first <paramref name="length"/> tokens and their KV into a new parked session that holds no live KV
    /// slot, only that many positions: it can be a fork source (<see cref="CopyPrefixFrom"/>) or be saved, nothing else.
    /// </summary>
    /// <exception cref="NotSupportedException">The backend cannot read its KV (<see cref="CanFork"/> is false).</exception>
    IKvSession Park(int length);

    /// <summary>
    /// Writes the first <paramref name="length"/> tokens the session holds and their KV to <paramref name="destination"/>,
    /// in the layout <see cref="KvSnapshotFormat"/> documents.
    /// </summary>
    /// <exception cref="NotSupportedException">The backend cannot read its KV (<see cref="CanFork"/> is false).</exception>
    void Save(Stream destination, int length);

    /// <summary>
    /// Replaces what the session holds with a snapshot <see cref="Save"/> wrote (same model, same KV layout).
    /// </summary>
    /// <returns>The number of tokens the session now holds.</returns>
    /// <exception cref="InvalidDataException">
    /// The snapshot is truncated, corrupted, or of another layout; the session then holds nothing.
    /// </exception>
    /// <exception cref="NotSupportedException">The backend cannot write its KV (<see cref="CanFork"/> is false).</exception>
    int Load(Stream source);
}
