using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat;

/// <summary>
/// The GenAI generator backend: one <see cref="Generator"/> per session over a shared <see cref="Model"/>. Runs any model
/// GenAI runs; cannot copy KV between sessions (GenAI has no API to write a generator's KV) and decodes each session in
/// its own Run.
/// </summary>
internal sealed class GeneratorBackend(Model model, int contextTokens, long bytesPerToken, bool sharedBuffer) : IKvBackend
{
    public KvSessionBackend Kind => KvSessionBackend.Generator;

    public bool CanFork => false;

    public IKvSession CreateSession() => new KvSession(model, contextTokens, bytesPerToken, sharedBuffer);

    public DecodeStepStatistics GetStepStatistics() => new(0, 0, 0, "Generator sessions decode one Run each.");

    public void Dispose()
    {
        // The model is the client's: it disposes it.
    }
}
