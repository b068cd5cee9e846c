using System.Globalization;

namespace KvChat;

/// <summary>
/// The ONNX Runtime intra-op thread count a model the client loads runs with (<see cref="KvChatClientOptions.IntraOpThreads"/>),
/// and the <c>genai_config.json</c> overlay that sets it (<c>model.decoder.session_options.intra_op_num_threads</c>).
/// </summary>
/// <remarks>
/// GenAI's own default is half the hardware threads, one of the two cores of a 2-core machine. Measured there, side by
/// side in one process (<c>docs/benchmarks/threads.md</c>): one thread per logical processor prefilled and decoded about
/// twice as fast, so that is the default. Every other backend that runs the model (an ONNX Runtime session of its own)
/// takes the same value.
/// </remarks>
internal static class IntraOpThreads
{
    /// <summary>The most threads the option accepts.</summary>
    public const int Max = 1024;

    /// <summary>Gets the default: one intra-op thread per logical processor the process may use.</summary>
    public static int Default => Math.Max(1, Environment.ProcessorCount);

    /// <summary>Gets the thread count for <paramref name="option"/> (<see langword="null"/> is <see cref="Default"/>).</summary>
    public static int Resolve(int? option) => option ?? Default;

    /// <summary>Gets the <c>Config.Overlay</c> JSON that sets the decoder session's intra-op thread count.</summary>
    public static string Overlay(int threads) =>
        "{\"model\":{\"decoder\":{\"session_options\":{\"intra_op_num_threads\":" + threads.ToString(CultureInfo.InvariantCulture) + "}}}}";
}
