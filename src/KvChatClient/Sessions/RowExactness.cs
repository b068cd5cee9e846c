using System.Globalization;

namespace KvChat;

/// <summary>
/// How a decoder's Runs agree, measured at load on the backend's own sessions (<see cref="Probe"/>): whether a position
/// computed in a one-row Run (a decode step) has the bits it has inside a prefill of many rows, whether a difference
/// there grows beyond float rounding over a reply, whether Runs of several rows after cached positions agree with one
/// prefill, and whether decode steps of two rows do. It decides how replies are decoded and what the cache may keep, so
/// that a cached turn says what one prefill of its prompt says.
/// </summary>
/// <remarks>
/// <para>
/// A fresh prefill computes every prompt position inside one Run of many rows. A cached turn holds positions computed
/// otherwise: the last reply's tokens by decode steps, and the new tokens in a Run of their own after the cached ones.
/// Measured on ONNX Runtime 1.31's CPU kernels (<c>docs/benchmarks/peer/README.md</c>): any Run of two rows or more
/// gives a position the bits of one prefill, on every kit model; a one-row Run differs in the last bits
/// (GroupQueryAttention's one-row path, 1e-6 to 4e-5 in the logits). With float activations that stays at rounding
/// level. int4 <c>MatMulNBits</c> at <c>accuracy_level</c> 4 quantizes its inputs to int8 (the CPU export of GenAI's
/// model builder): a last-bit difference moves a value across a rounding step now and then, and a few decode steps on
/// grow it to 0.08-0.17 in the logits, enough for greedy decoding to say other tokens.
/// </para>
/// <para>
/// So where one-row Runs drift beyond rounding and Runs of several rows agree (<see cref="AvoidsOneRowRuns"/>), no kept
/// position comes from a one-row Run, and a prefill never computes a one-token tail (<see cref="Keep"/>). Replies are
/// then decoded in two-row steps (<see cref="DecodesTwoRows"/>, where the probe found them bit-identical to one prefill):
/// each step computes the previous token again together with the new one, a Run of two rows that rewrites the previous
/// position's KV to the same bits and takes the last row's logits. Every position of the reply then has the bits of one
/// prefill, so the reply stays cached and the next turn prefills only what is new. Each token of a reply is then what
/// a fresh prefill of the prompt and the reply before it says (GenAI's own decode loop, one row a step, drifts from
/// that on such a decoder). Why this is the automatic choice, measured side by side in one process on the int4
/// Qwen2.5-0.5B shape (<c>docs/benchmarks/peer/README.md</c>): a two-row step decodes at 0.88x the speed of a one-row
/// step (3.2 ms more a token, 101 ms over a 32-token reply, spent while the reply streams), while prefilling the reply
/// again costs the next turn 140 ms before its first token (363 against 224 ms, 1.6x); per reply token, 3.2 ms of
/// decode against 4.4 ms of prefill. ONNX Runtime's CPU GroupQueryAttention computes several rows after cached positions
/// for a batch of one only, so two-row steps of concurrent sessions run one Run each (not batched).
/// Where two-row steps are not exact (or not allowed), a
/// committed reply is dropped from the cache instead (<see cref="RecomputesReplies"/>: its tokens are prefilled again,
/// together with the next turn's, and counted as prefilled). Where even Runs of several rows disagree, nothing the cache
/// does is exact: <see cref="Note"/> says so.
/// </para>
/// </remarks>
/// <param name="SingleRowsMatch">Whether one-row Runs gave the bits of one prefill.</param>
/// <param name="SingleRowDrift">The largest logit difference after a chain of one-row Runs (0 when they match).</param>
/// <param name="ChunksMatch">Whether Runs of several rows after cached positions gave the bits of one prefill.</param>
/// <param name="LogitRange">The range (max - min) of the prefill's logits the differences are measured against.</param>
/// <param name="TwoRowStepsMatch">
/// Whether a chain of two-row decode steps gave the bits of one prefill (probed only where one-row Runs drift and
/// Runs of several rows agree; false otherwise).
/// </param>
internal sealed record RowExactness(bool SingleRowsMatch, float SingleRowDrift, bool ChunksMatch, float LogitRange, bool TwoRowStepsMatch = false)
{
    /// <summary>The probe's prompt before its decode steps.</summary>
    private const int ProbePrompt = 16;

    /// <summary>The probe's decode steps: long enough for quantized activations to cross a rounding step.</summary>
    private const int ProbeSteps = 24;

    /// <summary>A drift beyond this fraction of the logits' range is more than float rounding (measured: below 3e-6 for float activations, above 4e-3 for int8).</summary>
    private const float RoundingFraction = 1e-4f;

    /// <summary>Gets the result for a decoder that was not probed: everything is kept.</summary>
    public static RowExactness Exact { get; } = new(true, 0f, true, 1f);

    /// <summary>
    /// Gets whether decode steps may run two rows where that keeps the cache exact (the client's choice; false to measure
    /// the other way, recomputing replies). <value>The default value is <see langword="true"/>.</value>
    /// </summary>
    public bool TwoRowStepsAllowed { get; init; } = true;

    /// <summary>Gets whether one-row Runs drift beyond float rounding from a prefill.</summary>
    public bool DriftsBeyondRounding => SingleRowDrift > RoundingFraction * Math.Max(LogitRange, 1f);

    /// <summary>
    /// Gets whether no kept position may come from a one-row Run: one-row Runs drift beyond rounding and Runs of several
    /// rows agree with one prefill.
    /// </summary>
    public bool AvoidsOneRowRuns => DriftsBeyondRounding && ChunksMatch;

    /// <summary>
    /// Gets whether decode steps run two rows (the previous token again with the new one), so that replies stay cached
    /// and exact: where one-row Runs must be avoided and the probe found two-row steps bit-identical to one prefill.
    /// </summary>
    public bool DecodesTwoRows => AvoidsOneRowRuns && TwoRowStepsMatch && TwoRowStepsAllowed;

    /// <summary>
    /// Gets whether replies are recomputed: one-row Runs must be avoided and decode steps run one row, so a committed
    /// reply is dropped from the cache and prefilled again with the next turn.
    /// </summary>
    public bool RecomputesReplies => AvoidsOneRowRuns && !DecodesTwoRows;

    /// <summary>Gets the fewest tokens a prefill computes in one Run (2 where one-row Runs are avoided, else 1).</summary>
    public int MinimumTail => AvoidsOneRowRuns ? 2 : 1;

    /// <summary>Gets what the cache does about a decoder whose Runs do not all agree, or <see langword="null"/> when they do.</summary>
    public string? Note => (ChunksMatch, SingleRowsMatch, AvoidsOneRowRuns, DecodesTwoRows) switch
    {
        (true, true, _, _) => null,
        (true, false, true, true) => string.Create(CultureInfo.InvariantCulture,
            $"decode steps of one row drift from a prefill of the same tokens on this decoder (max |logit difference| {SingleRowDrift:G3} after {ProbeSteps} steps; int8 activations, as int4 MatMulNBits at accuracy_level 4 computes them, do this): each decode step runs two rows (the previous token again with the new one, bit-identical to a prefill), so replies stay cached and cached turns stay identical to a fresh prefill."),
        (true, false, true, false) => string.Create(CultureInfo.InvariantCulture,
            $"decode steps of one row drift from a prefill of the same tokens on this decoder (max |logit difference| {SingleRowDrift:G3} after {ProbeSteps} steps; int8 activations, as int4 MatMulNBits at accuracy_level 4 computes them, do this): each reply is prefilled again with the next turn's tokens{(TwoRowStepsAllowed && !TwoRowStepsMatch ? " (two-row decode steps were not bit-identical to a prefill either)" : string.Empty)}, so cached turns stay identical to a fresh prefill."),
        (true, false, false, _) => string.Create(CultureInfo.InvariantCulture,
            $"decode steps (one-row Runs) differ from a prefill of the same tokens within float rounding on this decoder (max |logit difference| {SingleRowDrift:G3} after {ProbeSteps} steps): replies stay cached, and cached turns equal a fresh prefill within that rounding."),
        _ => "a Run over cached positions is not bit-identical to one prefill of the whole prompt on this decoder: cached turns are near-exact, not identical, to a fresh prefill.",
    };

    /// <summary>
    /// Gets how many of <paramref name="promptLength"/> tokens a session keeps when <paramref name="keep"/> are cached: one
    /// fewer where that would leave a one-token tail on a decoder whose one-row Runs are avoided.
    /// </summary>
    public int Keep(int keep, int promptLength)
        => AvoidsOneRowRuns && keep > 0 && promptLength - keep == 1 ? keep - 1 : keep;

    /// <summary>
    /// Measures a decoder: one prefill of a short prompt against (a) its first tokens prefilled and the rest appended as
    /// decode steps, (b) the same rewound to the prefilled tokens and the rest prefilled again in Runs of 21 and 3
    /// tokens, then its last 2 again, and, where (a) drifts beyond rounding and (b) agrees, (c) the first tokens
    /// prefilled and the rest appended as two-row decode steps, comparing the last position's logits. Uses up to three
    /// sessions of <paramref name="createSession"/>, disposed before it returns.
    /// </summary>
    /// <param name="createSession">Creates an empty session of the backend: one that decodes two rows a step when its argument is true.</param>
    /// <param name="vocab">The model's vocabulary size.</param>
    /// <param name="start">A token to start the prompt with (a special token: role markers are what prompts start with).</param>
    /// <param name="context">The tokens a session holds: below the probe's length, nothing is probed (<see cref="Exact"/>).</param>
    /// <param name="twoRowSteps">Whether the backend may decode two rows a step (<see cref="TwoRowStepsAllowed"/>); when false, (c) is not run.</param>
    public static RowExactness Probe(Func<bool, IKvSession> createSession, int vocab, int start, int context, bool twoRowSteps = true)
    {
        if (context < ProbePrompt + ProbeSteps)
        {
            return Exact;
        }

        var prompt = new int[ProbePrompt + ProbeSteps];
        prompt[0] = start % vocab;
        for (var i = 1; i < prompt.Length; i++)
        {
            prompt[i] = (7 + (i * 37)) % vocab;
        }

        var expected = new float[vocab];
        var actual = new float[vocab];
        using (var fresh = createSession(false))
        {
            fresh.Extend(0, prompt);
            fresh.ReadLastLogits(expected);
        }

        var drift = Decode(createSession(false), prompt, actual, expected);
        var chunksMatch = true;
        using (var cached = createSession(false))
        {
            // The decode steps' tokens prefilled again after the first ones: a Run of 21 rows, then 3, then the last 2 again.
            cached.Extend(0, prompt.AsSpan(0, ProbePrompt));
            cached.Extend(ProbePrompt, prompt.AsSpan(ProbePrompt, ProbeSteps - 3));
            foreach (var tail in new[] { 3, 2 })
            {
                cached.Extend(prompt.Length - tail, prompt.AsSpan(prompt.Length - tail));
                cached.ReadLastLogits(actual);
                chunksMatch &= Difference(expected, actual) is null;
            }
        }

        var range = 0f;
        if (expected.Length > 0)
        {
            range = expected.Max() - expected.Min();
        }

        var result = new RowExactness(drift is null, drift ?? 0f, chunksMatch, float.IsFinite(range) ? range : 1f) { TwoRowStepsAllowed = twoRowSteps };
        return result.AvoidsOneRowRuns && twoRowSteps
            ? result with { TwoRowStepsMatch = Decode(createSession(true), prompt, actual, expected) is null }
            : result;
    }

    /// <summary>Prefills the probe's first tokens on <paramref name="session"/>, appends the rest as decode steps, disposes it, and compares the last logits.</summary>
    private static float? Decode(IKvSession session, int[] prompt, float[] actual, float[] expected)
    {
        using (session)
        {
            session.Extend(0, prompt.AsSpan(0, ProbePrompt));
            for (var i = ProbePrompt; i < prompt.Length; i++)
            {
                session.Append(prompt[i]);
            }

            session.ReadLastLogits(actual);
        }

        return Difference(expected, actual);
    }

    /// <summary>The largest difference, or null when every value has the same bits.</summary>
    private static float? Difference(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual)
    {
        var identical = true;
        var max = 0f;
        for (var i = 0; i < expected.Length; i++)
        {
            identical &= BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i]);
            max = Math.Max(max, Math.Abs(expected[i] - actual[i]));
        }

        return identical ? null : max;
    }
}
