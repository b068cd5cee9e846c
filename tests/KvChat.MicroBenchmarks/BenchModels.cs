using KvChat.ModelKit;
using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat.MicroBenchmarks;

/// <summary>
/// The kit models the benchmarks run on, written once into the repository's <c>.artifacts/models</c> (the folder and
/// options the end-to-end benchmark uses, so either one reuses the other's files), and GenAI's process handle.
/// </summary>
internal static class BenchModels
{
    private static readonly Lock HandleLock = new();
    private static OgaHandle? _handle;

    /// <summary>The tiny preset (hidden 64, 2 layers, vocabulary 384), never ending a reply on its own.</summary>
    public const string Tiny = "tiny";

    /// <summary>The bench preset (hidden 768, 12 layers, vocabulary 32000, 128.7M parameters), never ending a reply on its own.</summary>
    public const string Bench = "bench";

    /// <summary>Gets the repository root: the first folder up from the binaries that holds <c>KvChatClient.sln</c>.</summary>
    public static string RepositoryRoot { get; } = FindRepositoryRoot();

    /// <summary>
    /// Gets the folder of the model of the named kit preset (<see cref="ModelKitOptions.PresetNames"/>: also
    /// <c>bench-152k</c>, <c>bench-262k</c> and the int4 real shapes), writing it first if it is missing.
    /// </summary>
    public static string PathOf(string name)
    {
        // Replies of a fixed length: the model never says end-of-sequence (as in the end-to-end benchmark).
        var options = ModelKitOptions.FromPreset(name) with { EndOfTurnBias = -100 };
        var directory = Path.Combine(RepositoryRoot, ".artifacts", "models", name + "-noeos");
        if (!File.Exists(Path.Combine(directory, "genai_config.json")))
        {
            // Written beside and renamed, so a run stopped halfway leaves no folder that looks complete.
            var staging = directory + ".tmp-" + Environment.ProcessId;
            ModelKit.ModelKit.Write(options, staging);
            if (Directory.Exists(directory))
            {
                Directory.Delete(directory, recursive: true);
            }

            Directory.Move(staging, directory);
        }

        return directory;
    }

    /// <summary>
    /// Gets the folder of a small random model over a real tokenizer (see tests/Shared/RealTokenizers.cs), written once
    /// into <c>.artifacts/models</c> so that every benchmark process reuses it.
    /// </summary>
    public static string PathOfRealTokenizer(KvChat.Testing.RealTokenizerFamily family)
    {
        var directory = Path.Combine(RepositoryRoot, ".artifacts", "models", "real-" + family.Name);
        if (!File.Exists(Path.Combine(directory, "genai_config.json")))
        {
            var staging = directory + ".tmp-" + Environment.ProcessId;
            ModelKit.ModelKit.Write(KvChat.Testing.RealTokenizers.Tiny(family, contextLength: 8192), staging);
            if (Directory.Exists(directory))
            {
                Directory.Delete(directory, recursive: true);
            }

            Directory.Move(staging, directory);
        }

        return directory;
    }

    /// <summary>
    /// Creates GenAI's process handle once per process; it is disposed at exit, after every benchmark's cleanup has
    /// disposed its models and generators.
    /// </summary>
    public static void EnsureGenAiHandle()
    {
        lock (HandleLock)
        {
            if (_handle is not null)
            {
                return;
            }

            _handle = new OgaHandle();
            AppDomain.CurrentDomain.ProcessExit += (_, _) => _handle.Dispose();
        }
    }

    private static string FindRepositoryRoot()
    {
        for (var directory = new DirectoryInfo(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
        {
            if (File.Exists(Path.Combine(directory.FullName, "KvChatClient.sln")))
            {
                return directory.FullName;
            }
        }

        return Directory.GetCurrentDirectory();
    }
}
