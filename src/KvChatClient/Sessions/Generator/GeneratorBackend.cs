using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat;

/// <summary>
/// The GenAI generator backend: one <see cref="Generator"/> per session over a shared <see cref="Model"/>. Runs any model
/// GenAI runs; cannot copy KV between sessions (GenAI has no API to write a generator's KV) and decodes each session in
/// its own Run.
/// </summary>
/// <remarks>
/// When one forward pass already uses every core (<paramref name="oneRunAtATime"/>: the model runs with as many intra-op
/// threads as there are logical processors), the sessions' forward passes take turns through one gate, and a prefill
/// goes through it in chunks of <see cref="OwnedBackend.PrefillChunk"/> tokens so that other sessions' decode steps wait
/// at most one chunk. Measured on 2 cores (<c>docs/benchmarks/speed/threads.md</c>, one run): 2 sessions at 2 threads
/// each prefilled 641 and decoded 50.0 tokens/s in all when their passes ran at once (the threads oversubscribe the
/// cores), 740 and 55.2 when they took turns.
/// </remarks>
internal sealed class GeneratorBackend(Model model, int contextTokens, long bytesPerToken, bool sharedBuffer, bool oneRunAtATime) : IKvBackend
{
    private readonly Lock? _runGate = oneRunAtATime ? new Lock() : null;

    public KvSessionBackend Kind => KvSessionBackend.Generator;

    public bool CanFork => false;

    public IKvSession CreateSession() => new KvSession(model, contextTokens, bytesPerToken, sharedBuffer, _runGate);

    public DecodeStepStatistics GetStepStatistics() => new(0, 0, 0,
        _runGate is null ? "Generator sessions decode one Run each, at once." : "Generator sessions decode one Run each, one Run at a time (each Run uses every core).");

    public void Dispose()
    {
        // The model is the client's: it disposes it.
    }
}
