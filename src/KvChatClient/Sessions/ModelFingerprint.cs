using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text;

namespace KvChat;

/// <summary>
/// The identity of what a KV snapshot on disk depends on: the model's weights and configuration, its tokenizer and chat
/// template, the KV layout and element type. A prefix file written under one fingerprint is used only under the same.
/// </summary>
/// <remarks>
/// <para>
/// <b>Small files</b> (the folder's JSON and Jinja files: <c>genai_config.json</c>, <c>tokenizer.json</c>,
/// <c>tokenizer_config.json</c>, ...; any file up to <see cref="WholeFileLimit"/>) are hashed whole: they are read at load
/// anyway and a change of one byte (another template, an added token) must give another fingerprint.
/// </para>
/// <para>
/// <b>Weight files</b> (the decoder <c>.onnx</c> and its external data, every file whose name starts with the decoder's)
/// larger than that contribute their size, last-write time and a hash of their first and last MiB. Hashing gigabytes at
/// every start would cost seconds (a cold disk reads a 2 GB file in several). The last-write time changes whenever a file
/// is written (an export, a download, a copy without preserved times), so weights changed in the middle of a file of the
/// same size are caught; the head and tail catch a different file given an old time (a copy with preserved times). The
/// price of the time is a cold start after a plain copy of an unchanged model (its files are then rewritten under the new
/// fingerprint and the old ones pruned as least recently used): a miss costs a prefill, a false hit would serve wrong KV.
/// </para>
/// </remarks>
internal static class ModelFingerprint
{
    /// <summary>Files up to this size are hashed whole.</summary>
    public const long WholeFileLimit = 16L << 20;

    private const int SampleBytes = 1 << 20;

    /// <summary>Computes the fingerprint of a model folder as a client uses it.</summary>
    /// <param name="folder">The model folder.</param>
    /// <param name="chatTemplate">The chat template in use (an option may replace the folder's).</param>
    /// <exception cref="IOException">A file could not be read.</exception>
    public static ulong Compute(ModelFolder folder, string? chatTemplate)
    {
        var hash = new XxHash64();
        Append(hash, "KvChat prefix fingerprint 1; KV float32");
        Span<byte> numbers = stackalloc byte[12];
        BinaryPrimitives.WriteInt32LittleEndian(numbers, folder.Layers);
        BinaryPrimitives.WriteInt32LittleEndian(numbers[4..], folder.KvHeads);
        BinaryPrimitives.WriteInt32LittleEndian(numbers[8..], folder.HeadSize);
        hash.Append(numbers);
        Append(hash, chatTemplate ?? string.Empty);
        var decoder = folder.Decoder.FileName;
        var files = Directory.EnumerateFiles(folder.Path)
            .Select(path => Path.GetFileName(path))
            .OfType<string>()
            .Where(name => name.StartsWith(decoder, StringComparison.Ordinal)
                || name.EndsWith(".json", StringComparison.OrdinalIgnoreCase)
                || name.EndsWith(".jinja", StringComparison.OrdinalIgnoreCase))
            .Order(StringComparer.Ordinal);
        foreach (var name in files)
        {
            AppendFile(hash, Path.Combine(folder.Path, name), name);
        }

        return hash.GetCurrentHashAsUInt64();
    }

    private static void AppendFile(XxHash64 hash, string path, string name)
    {
        Append(hash, name);
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete, 1, FileOptions.SequentialScan);
        var length = stream.Length;
        Span<byte> header = stackalloc byte[16];
        BinaryPrimitives.WriteInt64LittleEndian(header, length);
        if (length <= WholeFileLimit)
        {
            hash.Append(header[..8]);
            var all = new byte[length];
            stream.ReadExactly(all);
            hash.Append(all);
            return;
        }

        BinaryPrimitives.WriteInt64LittleEndian(header[8..], File.GetLastWriteTimeUtc(path).Ticks);
        hash.Append(header);
        var sample = new byte[SampleBytes];
        stream.ReadExactly(sample);
        hash.Append(sample);
        stream.Seek(-SampleBytes, SeekOrigin.End);
        stream.ReadExactly(sample);
        hash.Append(sample);
    }

    private static void Append(XxHash64 hash, string text)
    {
        hash.Append(Encoding.UTF8.GetBytes(text));
        hash.Append([0]);
    }
}
