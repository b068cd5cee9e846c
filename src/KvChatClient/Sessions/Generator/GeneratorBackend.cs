using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat;

/// <summary>
/// The GenAI generator backend: one <see cref="Generator"/> per session over a shared <see cref="Model"/>. Runs any model
/// GenAI runs; cannot copy KV between sessions (GenAI has no API to write a generator's KV) and decodes each session in
/// its own Run.
/// </summary>
internal sealed class GeneratorBackend : IKvBackend
{
    /// <summary>The context of the probe's two generators (their KV is allocated at this length).</summary>
    private const int ProbeContext = 64;

    private readonly Model _model;
    private readonly int _contextTokens;
    private readonly long _bytesPerToken;
    private readonly bool _sharedBuffer;

    /// <summary>Creates the backend and probes, on two short-lived generators, how the decoder's Runs agree (<see cref="RowExactness"/>).</summary>
    /// <param name="model">The model; the client owns it.</param>
    /// <param name="contextTokens">The tokens a session holds at most.</param>
    /// <param name="bytesPerToken">The KV bytes of one token.</param>
    /// <param name="sharedBuffer">Whether the model shares its past and present KV buffers.</param>
    /// <param name="vocab">The vocabulary size.</param>
    /// <param name="probeStart">The token the probe's prompt starts with.</param>
    public GeneratorBackend(Model model, int contextTokens, long bytesPerToken, bool sharedBuffer, int vocab, int probeStart)
    {
        _model = model;
        _contextTokens = contextTokens;
        _bytesPerToken = bytesPerToken;
        _sharedBuffer = sharedBuffer;
        RowExactness = RowExactness.Probe(
            () => new KvSession(model, Math.Min(ProbeContext, contextTokens), bytesPerToken, sharedBuffer),
            vocab,
            probeStart,
            Math.Min(ProbeContext, contextTokens));
    }

    public KvSessionBackend Kind => KvSessionBackend.Generator;

    public bool CanFork => false;

    public RowExactness RowExactness { get; }

    public IKvSession CreateSession()
        => new KvSession(_model, _contextTokens, _bytesPerToken, _sharedBuffer) { AppendsLastPromptTokenAlone = !RowExactness.RecomputesReplies };

    public DecodeStepStatistics GetStepStatistics() => new(0, 0, 0, "Generator sessions decode one Run each.");

    public void Dispose()
    {
        // The model is the client's: it disposes it.
    }
}
