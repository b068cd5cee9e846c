using System.Buffers.Binary;
using System.IO.Hashing;
using System.Runtime.InteropServices;

namespace KvChat;

/// <summary>
/// The byte layout of a prefix file of <see cref="PrefixStore"/>: a 16-byte header naming the model, then a KV snapshot
/// (<see cref="KvSnapshotFormat"/>, which carries the layout, the token ids, the KV and a checksum).
/// </summary>
/// <remarks>
/// Header, little-endian: magic <c>KVPF</c> (4 bytes), version (u32, 1), the model's fingerprint (u64,
/// <see cref="ModelFingerprint"/>). Every byte of a file is checked before its KV is used: the header by comparison, the
/// snapshot's header against the backend's layout, its length against the token count, the rest by the checksum.
/// File names are <c>{fingerprint:x16}-{hash of the token ids:x16}.kvprefix</c>, so the same prefix of the same model
/// always rewrites the same file, and files of other models are told apart without opening them.
/// </remarks>
internal static class PrefixFileFormat
{
    public const string Extension = ".kvprefix";
    public const string TempMarker = ".tmp-";
    public const uint Version = 1;
    public const int HeaderBytes = 16;
    private static ReadOnlySpan<byte> Magic => "KVPF"u8;

    public static string NamePrefix(ulong fingerprint) => $"{fingerprint:x16}-";

    public static string FileName(ulong fingerprint, ReadOnlySpan<int> tokens)
    {
        var hash = XxHash64.HashToUInt64(MemoryMarshal.AsBytes(tokens));
        return $"{NamePrefix(fingerprint)}{hash:x16}{Extension}";
    }

    /// <summary>The length of a file holding <paramref name="tokens"/> tokens of <paramref name="layout"/>.</summary>
    public static long Length(KvSnapshotFormat.Layout layout, int tokens)
        => HeaderBytes + KvSnapshotFormat.HeaderBytes + (4L * tokens)
            + ((long)layout.Layers * 2 * layout.KvHeads * tokens * layout.HeadSize * sizeof(float)) + sizeof(ulong);

    public static void WriteHeader(Stream stream, ulong fingerprint)
    {
        Span<byte> header = stackalloc byte[HeaderBytes];
        Magic.CopyTo(header);
        BinaryPrimitives.WriteUInt32LittleEndian(header[4..], Version);
        BinaryPrimitives.WriteUInt64LittleEndian(header[8..], fingerprint);
        stream.Write(header);
    }

    /// <exception cref="InvalidDataException">The header is short, not a prefix file's, of another version or of another model.</exception>
    public static void ReadHeader(Stream stream, ulong fingerprint)
    {
        Span<byte> header = stackalloc byte[HeaderBytes];
        try
        {
            stream.ReadExactly(header);
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException("the file is shorter than a prefix file's header (truncated).", e);
        }

        if (!header[..4].SequenceEqual(Magic))
        {
            throw new InvalidDataException("the file is not a prefix file (no KVPF magic).");
        }

        var version = BinaryPrimitives.ReadUInt32LittleEndian(header[4..]);
        if (version != Version)
        {
            throw new InvalidDataException($"the file is version {version}; this client reads version {Version}.");
        }

        var written = BinaryPrimitives.ReadUInt64LittleEndian(header[8..]);
        if (written != fingerprint)
        {
            throw new InvalidDataException($"the file was written for another model, tokenizer or KV layout (fingerprint {written:x16}, this model's is {fingerprint:x16}).");
        }
    }
}
