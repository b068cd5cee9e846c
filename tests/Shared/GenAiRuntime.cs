using Microsoft.ML.OnnxRuntimeGenAI;
using Xunit;

[assembly: AssemblyFixture(typeof(KvChat.Testing.GenAiRuntime))]

namespace KvChat.Testing;

/// <summary>Holds GenAI's process handle for the whole test assembly, disposed after every model and generator.</summary>
public sealed class GenAiRuntime : IDisposable
{
    private readonly OgaHandle _handle = new();

    public void Dispose() => _handle.Dispose();
}
