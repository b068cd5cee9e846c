using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat;

/// <summary>
/// The GenAI generator backend: one <see cref="Generator"/> per session over a shared <see cref="Model"/>. Runs any model
/// GenAI runs; cannot copy KV between sessions (GenAI has no API to write a generator's KV) and decodes each session in
/// its own Run.
/// </summary>
/// <remarks>
/// When one forward pass already uses every core (<c>oneRunAtATime</c>: the model runs with as many intra-op
/// threads as there are logical processors), the sessions' forward passes take turns through one gate, and a prefill
/// goes through it in chunks of <see cref="OwnedBackend.PrefillChunk"/> tokens so that other sessions' decode steps wait
/// at most one chunk. Measured on 2 cores (<c>docs/benchmarks/speed/threads.md</c>, one run): 2 sessions at 2 threads
/// each prefilled 641 and decoded 50.0 tokens/s in all when their passes ran at once (the threads oversubscribe the
/// cores), 740 and 55.2 when they took turns.
/// </remarks>
internal sealed class GeneratorBackend : IKvBackend
{
    /// <summary>The context of the probe's two generators (their KV is allocated at this length).</summary>
    private const int ProbeContext = 64;

    private readonly Model _model;
    private readonly int _contextTokens;
    private readonly long _bytesPerToken;
    private readonly bool _sharedBuffer;
    private readonly Lock? _runGate;

    /// <summary>Creates the backend and probes, on two short-lived generators, how the decoder's Runs agree (<see cref="RowExactness"/>).</summary>
    /// <param name="model">The model; the client owns it.</param>
    /// <param name="contextTokens">The tokens a session holds at most.</param>
    /// <param name="bytesPerToken">The KV bytes of one token.</param>
    /// <param name="sharedBuffer">Whether the model shares its past and present KV buffers.</param>
    /// <param name="oneRunAtATime">Whether the sessions' forward passes take turns (see the remarks).</param>
    /// <param name="vocab">The vocabulary size.</param>
    /// <param name="probeStart">The token the probe's prompt starts with.</param>
    /// <param name="twoRowSteps">
    /// Whether decode steps may run two rows where one-row Runs drift (<see cref="RowExactness.TwoRowStepsAllowed"/>); only
    /// on a shared buffer, where rewinding a generator by one position is bookkeeping (a concatenated KV cache would be
    /// copied on every step), so a concatenating decoder recomputes replies instead.
    /// </param>
    public GeneratorBackend(Model model, int contextTokens, long bytesPerToken, bool sharedBuffer, bool oneRunAtATime, int vocab, int probeStart, bool twoRowSteps = true)
    {
        _model = model;
        _contextTokens = contextTokens;
        _bytesPerToken = bytesPerToken;
        _sharedBuffer = sharedBuffer;
        _runGate = oneRunAtATime ? new Lock() : null;
        RowExactness = RowExactness.Probe(
            twoRows => new KvSession(model, Math.Min(ProbeContext, contextTokens), bytesPerToken, sharedBuffer, _runGate) { TwoRowSteps = twoRows },
            vocab,
            probeStart,
            Math.Min(ProbeContext, contextTokens),
            twoRowSteps && sharedBuffer);
    }

    public KvSessionBackend Kind => KvSessionBackend.Generator;

    public bool CanFork => false;

    public RowExactness RowExactness { get; }

    public IKvSession CreateSession()
        => new KvSession(_model, _contextTokens, _bytesPerToken, _sharedBuffer, _runGate)
        {
            AppendsLastPromptTokenAlone = !RowExactness.AvoidsOneRowRuns,
            TwoRowSteps = RowExactness.DecodesTwoRows,
        };

    public DecodeStepStatistics GetStepStatistics() => new(0, 0, 0,
        _runGate is null ? "Generator sessions decode one Run each, at once." : "Generator sessions decode one Run each, one Run at a time (each Run uses every core).");

    public void Dispose()
    {
        // The model is the client's: it disposes it.
    }
}
