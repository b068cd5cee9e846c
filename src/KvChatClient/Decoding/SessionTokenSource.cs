using System.Buffers;
using System.Runtime.InteropServices;

namespace KvChat;

/// <summary>
/// A reply decoded on a leased, cached session (<see cref="IKvSession"/>, either backend): the session prefills only what its cache lacks, and our
/// <see cref="LogitSampler"/> picks each token from the session's logits. The loop appends every chosen token through
/// the session, so no token is ever pending in the KV cache.
/// </summary>
internal sealed class SessionTokenSource : TokenSource
{
    private readonly SessionPool<IKvSession>.Lease _lease;
    private readonly IKvSession _session;
    private readonly LogitSampler _sampler;
    private readonly int _vocab;
    private readonly int _contextTokens;
    private readonly int _keep;
    private readonly Action<IKvSession, int>? _stepHook;
    private readonly bool _keepPromptLogits;
    private readonly bool _recomputesReplies;
    private float[]? _logits;
    private float[]? _promptLogits;
    private bool _prefilled;
    private bool _held = true;

    /// <summary>Creates the source over <paramref name="lease"/>, which it returns to the pool in every outcome.</summary>
    /// <param name="lease">The session the pool found for <paramref name="prompt"/>.</param>
    /// <param name="prompt">The prompt tokens.</param>
    /// <param name="sampling">How tokens are picked.</param>
    /// <param name="vocab">The number of logits per position.</param>
    /// <param name="contextTokens">The tokens a session holds at most.</param>
    /// <param name="stepHook">Test hook called before each step with the session and the tokens generated so far.</param>
    /// <param name="keepPromptLogits">Whether to keep the prompt's logits for the test trace.</param>
    /// <param name="exactness">
    /// How the backend's Runs agree: where one-row Runs differ from prefills, the prefill never computes a one-token
    /// tail, and the reply is kept in the cache only where the session decodes two rows a step (otherwise, decoded one
    /// row per Run, it is dropped at commit: <see cref="RowExactness"/>).
    /// </param>
    public SessionTokenSource(
        SessionPool<IKvSession>.Lease lease,
        int[] prompt,
        SamplingSettings sampling,
        int vocab,
        int contextTokens,
        Action<IKvSession, int>? stepHook,
        bool keepPromptLogits,
        RowExactness exactness)
        : base(prompt)
    {
        _lease = lease;
        _session = lease.Session;
        _vocab = vocab;
        _contextTokens = contextTokens;
        _recomputesReplies = exactness.RecomputesReplies;
        _keep = exactness.Keep(Math.Min(lease.CommonPrefixLength, prompt.Length - 1), prompt.Length);
        _stepHook = stepHook;
        _keepPromptLogits = keepPromptLogits;
        _sampler = new LogitSampler(sampling, vocab);
        _logits = ArrayPool<float>.Shared.Rent(vocab);
    }

    /// <inheritdoc/>
    public override int CachedTokens => _keep;

    /// <inheritdoc/>
    public override bool IsHit => _lease.IsHit;

    /// <inheritdoc/>
    public override bool Evicted => _lease.Evicted;

    /// <inheritdoc/>
    /// <remarks>The last token need not be appended (its K/V are never needed), so one more than the room left fits.</remarks>
    public override int MaxReplyTokens => _contextTokens - Prompt.Length + 1;

    /// <inheritdoc/>
    public override string ReplyKind => "the reply";

    /// <inheritdoc/>
    public override bool HoldsReply => true;

    /// <inheritdoc/>
    public override IReadOnlyList<int> SessionTokens => _session.Tokens;

    /// <inheritdoc/>
    public override float[]? PromptLogits => _promptLogits;

    /// <inheritdoc/>
    public override void Prefill()
    {
        _session.Prefill(Prompt, _keep);
        _prefilled = true;
        if (_session.CanFork)
        {
            // The loop only appends from here: other requests may copy the prompt's KV while this reply decodes. (A
            // two-row step writes the previous position again, to the same bits, under the backend's run lock, which
            // every copy takes too.)
            _lease.Pool.Commit(_lease, Prompt, Prompt.Length, appendOnly: true);
        }
    }

    /// <inheritdoc/>
    public override Span<float> ReadLogits(int step)
    {
        _stepHook?.Invoke(_session, step);
        var logits = _logits.AsSpan(0, _vocab);
        _session.ReadLastLogits(logits);
        if (step == 0 && _keepPromptLogits)
        {
            _promptLogits = logits.ToArray();
        }

        return logits;
    }

    /// <inheritdoc/>
    public override int Choose(Span<float> logits) => _sampler.Next(logits);

    /// <inheritdoc/>
    public override void Accept(int token) => _sampler.Accept(token);

    /// <inheritdoc/>
    public override void Append(int token) => _session.Append(token);

    /// <inheritdoc/>
    public override void Commit() => _lease.Pool.Commit(_lease, KeptTokens(), Prompt.Length);

    /// <summary>
    /// The tokens the session holds, without a copy when it keeps them in a list (both backends do); on a decoder whose
    /// one-row Runs differ from prefills and the reply was decoded one row per Run, first rewinds the session to the
    /// prompt: the next turn prefills the reply again, with its own tokens, as one prefill would.
    /// </summary>
    private ReadOnlySpan<int> KeptTokens()
    {
        if (_recomputesReplies && _prefilled && _session.TokenCount > Prompt.Length)
        {
            _session.Extend(Prompt.Length, []);
        }

        return _session.Tokens is List<int> list ? CollectionsMarshal.AsSpan(list) : _session.Tokens.ToArray();
    }

    /// <inheritdoc/>
    public override void Release()
    {
        _held = false;
        _lease.Release();
    }

    /// <inheritdoc/>
    public override void Cancel()
    {
        if (!_held)
        {
            return;
        }

        // Before the prefill the session still holds its previous committed tokens (the prefix and maybe more).
        _lease.Pool.Commit(_lease, KeptTokens(), _prefilled ? Prompt.Length : null);
        Release();
    }

    /// <inheritdoc/>
    public override bool Discard()
    {
        if (!_held)
        {
            return false;
        }

        _held = false;
        _lease.Discard();
        return true;
    }

    /// <inheritdoc/>
    public override void Dispose()
    {
        Discard();
        if (_logits is { } logits)
        {
            _logits = null;
            ArrayPool<float>.Shared.Return(logits);
        }
    }
}
