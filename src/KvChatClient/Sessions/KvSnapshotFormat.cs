using System.Buffers.Binary;
using System.IO.Hashing;
using System.Runtime.InteropServices;

namespace KvChat;

/// <summary>
/// The byte layout of a session's KV snapshot (<see cref="IKvSession.Save"/> / <see cref="IKvSession.Load"/>).
/// </summary>
/// <remarks>
/// All integers little-endian:
/// <list type="number">
/// <item><description>magic <c>KVSN</c> (4 bytes), format version (u32, 1);</description></item>
/// <item><description>layers, KV heads, head size (u32 each), element type (u32, 1 = float32);</description></item>
/// <item><description>token count n (u32), then the n token ids (i32 each);</description></item>
/// <item><description>for each layer, K then V: <c>[kv heads, n, head size]</c> float32 (the first n positions);</description></item>
/// <item><description>an XxHash64 (u64) of every byte before it.</description></item>
/// </list>
/// A snapshot says nothing about which model wrote it beyond its layout: a caller that keeps snapshots across
/// processes records the model's identity next to it.
/// </remarks>
internal static class KvSnapshotFormat
{
    public const uint Version = 1;
    public const uint Float32 = 1;
    public const int HeaderBytes = 4 + (6 * 4);
    private static ReadOnlySpan<byte> Magic => "KVSN"u8;

    /// <summary>The layout a snapshot describes.</summary>
    public readonly record struct Layout(int Layers, int KvHeads, int HeadSize);

    /// <summary>Writes the header and the token ids.</summary>
    public static void WriteHeader(Stream stream, XxHash64 hash, Layout layout, ReadOnlySpan<int> tokens)
    {
        Span<byte> header = stackalloc byte[HeaderBytes];
        Magic.CopyTo(header);
        BinaryPrimitives.WriteUInt32LittleEndian(header[4..], Version);
        BinaryPrimitives.WriteUInt32LittleEndian(header[8..], (uint)layout.Layers);
        BinaryPrimitives.WriteUInt32LittleEndian(header[12..], (uint)layout.KvHeads);
        BinaryPrimitives.WriteUInt32LittleEndian(header[16..], (uint)layout.HeadSize);
        BinaryPrimitives.WriteUInt32LittleEndian(header[20..], Float32);
        BinaryPrimitives.WriteUInt32LittleEndian(header[24..], (uint)tokens.Length);
        Write(stream, hash, header);
        var ids = new int[tokens.Length];
        for (var i = 0; i < tokens.Length; i++)
        {
            ids[i] = BitConverter.IsLittleEndian ? tokens[i] : BinaryPrimitives.ReverseEndianness(tokens[i]);
        }

        Write(stream, hash, MemoryMarshal.AsBytes(ids.AsSpan()));
    }

    /// <summary>Reads and checks the header against <paramref name="expected"/>; returns the token ids.</summary>
    /// <exception cref="InvalidDataException">The header is malformed or of another layout, or there are more tokens than <paramref name="maxTokens"/>.</exception>
    public static int[] ReadHeader(Stream stream, XxHash64 hash, Layout expected, int maxTokens)
    {
        Span<byte> header = stackalloc byte[HeaderBytes];
        Read(stream, hash, header);
        if (!header[..4].SequenceEqual(Magic))
        {
            throw new InvalidDataException("Not a KV snapshot (no KVSN magic).");
        }

        var version = BinaryPrimitives.ReadUInt32LittleEndian(header[4..]);
        var layout = new Layout(
            (int)BinaryPrimitives.ReadUInt32LittleEndian(header[8..]),
            (int)BinaryPrimitives.ReadUInt32LittleEndian(header[12..]),
            (int)BinaryPrimitives.ReadUInt32LittleEndian(header[16..]));
        var type = BinaryPrimitives.ReadUInt32LittleEndian(header[20..]);
        var count = BinaryPrimitives.ReadUInt32LittleEndian(header[24..]);
        if (version != Version || type != Float32 || layout != expected)
        {
            throw new InvalidDataException(
                $"The KV snapshot is version {version}, element type {type}, {layout}; this session needs version {Version}, float32, {expected}.");
        }

        if (count == 0 || count > maxTokens)
        {
            throw new InvalidDataException($"The KV snapshot holds {count} tokens; a session holds 1 to {maxTokens}.");
        }

        var ids = new int[count];
        Read(stream, hash, MemoryMarshal.AsBytes(ids.AsSpan()));
        if (!BitConverter.IsLittleEndian)
        {
            BinaryPrimitives.ReverseEndianness(ids, ids);
        }

        return ids;
    }

    /// <summary>Writes the checksum of everything written so far.</summary>
    public static void WriteChecksum(Stream stream, XxHash64 hash)
    {
        Span<byte> sum = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(sum, hash.GetCurrentHashAsUInt64());
        stream.Write(sum);
    }

    /// <summary>Reads the checksum and compares it with everything read so far.</summary>
    /// <exception cref="InvalidDataException">The checksum is missing or differs.</exception>
    public static void ReadChecksum(Stream stream, XxHash64 hash)
    {
        Span<byte> sum = stackalloc byte[8];
        try
        {
            stream.ReadExactly(sum);
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException("The KV snapshot is truncated (no checksum).", e);
        }

        if (BinaryPrimitives.ReadUInt64LittleEndian(sum) != hash.GetCurrentHashAsUInt64())
        {
            throw new InvalidDataException("The KV snapshot's checksum does not match its contents (corrupted).");
        }
    }

    public static void Write(Stream stream, XxHash64 hash, ReadOnlySpan<byte> bytes)
    {
        hash.Append(bytes);
        stream.Write(bytes);
    }

    /// <exception cref="InvalidDataException">The stream ends early.</exception>
    public static void Read(Stream stream, XxHash64 hash, Span<byte> bytes)
    {
        try
        {
            stream.ReadExactly(bytes);
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException("The KV snapshot is truncated.", e);
        }

        hash.Append(bytes);
    }
}
