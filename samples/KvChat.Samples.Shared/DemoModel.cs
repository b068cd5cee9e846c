using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using KvChat.ModelKit;

namespace KvChat.Samples;

/// <summary>
/// The project's own demo model: random weights written by the model kit on first run into a cache folder named by the
/// kit's format version and a hash of its options, and reused after that; folders of older formats are pruned. Its words mean nothing; it shows the cache at work with no download.
/// Every sample uses it when no model folder is given.
/// </summary>
public static class DemoModel
{
    /// <summary>The environment variable that names the cache folder (before <c>XDG_CACHE_HOME</c> and <c>~/.cache</c>).</summary>
    public const string CacheDirectoryVariable = "KVCHAT_CACHE_DIR";

    /// <summary>What every demo model folder's name starts with.</summary>
    public const string FolderPrefix = "demo-model-";

    /// <summary>The model id the samples give the demo model.</summary>
    public const string ModelId = "kvchat-demo";

    /// <summary>
    /// The default demo: hidden 256, 4 layers, 4 heads (2 KV heads), intermediate 1024, vocabulary 8000, context 2048.
    /// About 6.1M parameters (23 MiB); written in well under a second, decodes at hundreds of tokens a second on one core.
    /// </summary>
    public static ModelKitOptions Small { get; } = ModelKitOptions.Tiny with
    {
        HiddenSize = 256,
        NumLayers = 4,
        NumHeads = 4,
        NumKvHeads = 2,
        IntermediateSize = 1024,
        VocabSize = 8000,
        ContextLength = 2048,
    };

    /// <summary>Checks a demo size name (<c>--demo</c>).</summary>
    /// <exception cref="ArgumentException">The name is not a demo size.</exception>
    public static string CheckSize(string name) =>
        name is "small" or "tiny" ? name : throw new ArgumentException($"--demo takes 'small' or 'tiny', not '{name}'.");

    /// <summary>Gets the model kit options of a demo size.</summary>
    public static ModelKitOptions OptionsFor(string size) => size == "tiny" ? ModelKitOptions.Tiny : Small;

    /// <summary>Gets the cache folder: the given one, else <c>$KVCHAT_CACHE_DIR</c>, else <c>$XDG_CACHE_HOME/kvchat</c>, else <c>~/.cache/kvchat</c>.</summary>
    public static string CacheRoot(string? cacheDirectory)
    {
        if (!string.IsNullOrWhiteSpace(cacheDirectory))
        {
            return Path.GetFullPath(cacheDirectory);
        }

        if (Environment.GetEnvironmentVariable(CacheDirectoryVariable) is { Length: > 0 } own)
        {
            return Path.GetFullPath(own);
        }

        if (Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } xdg)
        {
            return Path.Combine(xdg, "kvchat");
        }

        return OperatingSystem.IsWindows()
            ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData), "kvchat")
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "kvchat");
    }

    /// <summary>
    /// Gets the folder name of a demo model: <c>demo-model-v</c>, the kit's <see cref="ModelKit.ModelKit.FormatVersion"/>,
    /// and a hash of the options. The same options and kit format give the same folder in every clone and build; a new
    /// format gives a new folder, and <see cref="Ensure"/> prunes the old ones.
    /// </summary>
    public static string FolderName(ModelKitOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var hash = SHA256.HashData(Encoding.UTF8.GetBytes(options.ToString()));
        return string.Create(CultureInfo.InvariantCulture, $"{FolderPrefix}v{ModelKit.ModelKit.FormatVersion}-{Convert.ToHexStringLower(hash.AsSpan(0, 6))}");
    }

    /// <summary>Gets the folder a demo model is kept in under <paramref name="cacheRoot"/>.</summary>
    public static string PathFor(ModelKitOptions options, string cacheRoot) => Path.Combine(cacheRoot, FolderName(options));

    /// <summary>Gets whether <paramref name="directory"/> holds every file of a model kit model.</summary>
    public static bool IsComplete(string directory) =>
        ModelKit.ModelKit.FileNames.All(name => File.Exists(Path.Combine(directory, name)));

    /// <summary>Returns the demo model folder, writing it first when it is not there yet.</summary>
    /// <returns>The folder, and how long writing took (<see langword="null"/> when it was reused).</returns>
    public static (string Path, TimeSpan? Written) Ensure(ModelKitOptions options, string cacheRoot)
    {
        var directory = PathFor(options, cacheRoot);
        TimeSpan? written = null;
        if (!IsComplete(directory))
        {
            var stopwatch = Stopwatch.StartNew();
            Write(options, directory);
            written = stopwatch.Elapsed;
        }

        Prune(cacheRoot);
        return (directory, written);
    }

    /// <summary>
    /// Deletes the demo model folders under <paramref name="cacheRoot"/> that are not of this kit format:
    /// older formats and older layouts (named by the kit's build). Half-written folders
    /// (<c>.tmp-</c>) are left for an hour, since another run may be writing one.
    /// </summary>
    /// <returns>The folders deleted.</returns>
    public static IReadOnlyList<string> Prune(string cacheRoot)
    {
        var deleted = new List<string>();
        if (!Directory.Exists(cacheRoot))
        {
            return deleted;
        }

        // Every folder of this kit format stays: the samples keep models of other options (the agent sample's scripted
        // one) under the same root, and one sample must not delete a model another is running on.
        var current = string.Create(CultureInfo.InvariantCulture, $"{FolderPrefix}v{ModelKit.ModelKit.FormatVersion}-");
        foreach (var folder in Directory.GetDirectories(cacheRoot, FolderPrefix + "*"))
        {
            var name = Path.GetFileName(folder);
            var writing = name.Contains(".tmp-", StringComparison.Ordinal);
            if ((name.StartsWith(current, StringComparison.Ordinal) && !writing) || (writing && Directory.GetLastWriteTimeUtc(folder) > DateTime.UtcNow.AddHours(-1)))
            {
                continue;
            }

            try
            {
                Directory.Delete(folder, recursive: true);
                deleted.Add(folder);
            }
            catch (IOException)
            {
                // In use or gone: the next run tries again.
            }
            catch (UnauthorizedAccessException)
            {
            }
        }

        return deleted;
    }

    /// <summary>Describes a demo model's shape, e.g. <c>hidden 256, 4 layers, 4 heads, 2 KV heads, vocabulary 8000</c>.</summary>
    public static string Dimensions(ModelKitOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return string.Create(CultureInfo.InvariantCulture,
            $"hidden {options.HiddenSize}, {options.NumLayers} layers, {options.NumHeads} heads, {options.NumKvHeads} KV heads, vocabulary {options.VocabSize}");
    }

    /// <summary>Says where a demo model came from: <c>written in 0.2 s to</c> or <c>reused from</c>.</summary>
    public static string Origin(TimeSpan? written) => written is { } elapsed
        ? string.Create(CultureInfo.InvariantCulture, $"written in {elapsed.TotalSeconds:F1} s to")
        : "reused from";

    private static void Write(ModelKitOptions options, string directory)
    {
        // Write next to the final folder and move it into place, so an interrupted run leaves no half-written model.
        var parent = Path.GetDirectoryName(directory)!;
        Directory.CreateDirectory(parent);
        var temporary = Path.Combine(parent, $"{Path.GetFileName(directory)}.tmp-{Guid.NewGuid():N}");
        try
        {
            ModelKit.ModelKit.Write(options, temporary);
            if (Directory.Exists(directory))
            {
                Directory.Delete(directory, recursive: true); // An incomplete folder from an older layout.
            }

            Directory.Move(temporary, directory);
        }
        catch (IOException) when (IsComplete(directory))
        {
            // Another run wrote it at the same time.
        }
        finally
        {
            if (Directory.Exists(temporary))
            {
                Directory.Delete(temporary, recursive: true);
            }
        }
    }
}
