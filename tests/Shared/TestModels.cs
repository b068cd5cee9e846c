using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using KvChat.ModelKit;

namespace KvChat.Testing;

/// <summary>
/// Generates kit models on first use into one temporary folder per test run, keyed by their options, so every test
/// that needs the same model shares one copy.
/// </summary>
internal static class TestModels
{
    private static readonly ConcurrentDictionary<string, Lazy<ModelKitResult>> Cache = new();

    public static string RunDirectory { get; } = CreateRunDirectory();

    public static ModelKitOptions Tiny => ModelKitOptions.Tiny;

    public static ModelKitOptions TinyConcat => ModelKitOptions.Tiny with { Variant = ModelVariant.Concat };

    public static ModelKitResult Get(ModelKitOptions options)
    {
        var key = Key(options);
        return Cache.GetOrAdd(key, k => new Lazy<ModelKitResult>(() => ModelKit.ModelKit.Write(options, Path.Combine(RunDirectory, k)))).Value;
    }

    public static string PathOf(ModelKitOptions options) => Get(options).Directory;

    private static string Key(ModelKitOptions o)
    {
        var text = new StringBuilder()
            .Append(o with { ScriptByMessageCount = null, TokenScript = null })
            .Append('|')
            .Append(o.TokenScript)
            .Append('|');
        if (o.ScriptByMessageCount is not null)
        {
            foreach (var pair in o.ScriptByMessageCount.OrderBy(p => p.Key))
            {
                text.Append(pair.Key).Append('=').Append(pair.Value).Append(';');
            }
        }

        var hash = SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString()));
        return $"{o.Variant}-{o.TemplateFamily}-{Convert.ToHexStringLower(hash.AsSpan(0, 6))}";
    }

    private static string CreateRunDirectory()
    {
        var directory = Path.Combine(Path.GetTempPath(), "kvchat-tests", $"{Environment.ProcessId}-{Guid.NewGuid():N}"[..20]);
        Directory.CreateDirectory(directory);
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try
            {
                Directory.Delete(directory, recursive: true);
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        };
        return directory;
    }
}
