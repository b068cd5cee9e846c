using System.Text;

namespace KvChat.ModelKit;

/// <summary>GGUF tensor element types the kit writes (values from ggml's <c>ggml_type</c>).</summary>
internal enum GgufTensorType : uint
{
    F32 = 0,
    Q4_0 = 2,
}

/// <summary>
/// A small writer of GGUF version 3 files (llama.cpp's model format): metadata key/values, tensor infos, then the
/// tensor data, each aligned to 32 bytes. Tensor data is produced one tensor at a time while writing, so a large model
/// never needs all its weights in memory at once.
/// </summary>
/// <remarks>
/// Hand-written because no library served to this project writes GGUF: no NuGet package does (LLamaSharp reads models
/// but exposes no writer), and the model kit should not depend on a native inference backend to write a file format of
/// a header, key/values and aligned blobs.
/// </remarks>
internal sealed class GgufWriter
{
    public const int Alignment = 32;
    private const uint Magic = 0x46554747; // "GGUF" little-endian
    private const uint Version = 3;

    private readonly List<(string Key, Action<BinaryWriter> Write)> _metadata = [];
    private readonly List<Tensor> _tensors = [];

    private enum ValueType : uint
    {
        UInt32 = 4,
        Int32 = 5,
        Float32 = 6,
        Bool = 7,
        String = 8,
        Array = 9,
    }

    private sealed record Tensor(string Name, GgufTensorType Type, long[] Dims, long ByteSize, Func<byte[]> Data);

    public void Add(string key, string value) => AddValue(key, w => { w.Write((uint)ValueType.String); WriteString(w, value); });

    public void Add(string key, uint value) => AddValue(key, w => { w.Write((uint)ValueType.UInt32); w.Write(value); });

    public void Add(string key, float value) => AddValue(key, w => { w.Write((uint)ValueType.Float32); w.Write(value); });

    public void Add(string key, bool value) => AddValue(key, w => { w.Write((uint)ValueType.Bool); w.Write(value ? (byte)1 : (byte)0); });

    public void Add(string key, IReadOnlyList<string> values) => AddValue(key, w =>
    {
        w.Write((uint)ValueType.Array);
        w.Write((uint)ValueType.String);
        w.Write((ulong)values.Count);
        foreach (var value in values)
        {
            WriteString(w, value);
        }
    });

    public void Add(string key, IReadOnlyList<int> values) => AddValue(key, w =>
    {
        w.Write((uint)ValueType.Array);
        w.Write((uint)ValueType.Int32);
        w.Write((ulong)values.Count);
        foreach (var value in values)
        {
            w.Write(value);
        }
    });

    /// <summary>Adds a tensor. <paramref name="dims"/> are ggml's order: the fastest-varying (row length) first.</summary>
    public void AddTensor(string name, GgufTensorType type, long[] dims, Func<byte[]> data)
    {
        var elements = dims.Aggregate(1L, (a, b) => a * b);
        var size = type switch
        {
            GgufTensorType.F32 => elements * 4,
            GgufTensorType.Q4_0 when dims[0] % Int4Blocks.BlockSize == 0 => elements / Int4Blocks.BlockSize * Int4Blocks.Q40BlockBytes,
            _ => throw new ArgumentException($"Tensor '{name}': {type} needs rows that are a multiple of {Int4Blocks.BlockSize}.", nameof(dims)),
        };
        _tensors.Add(new Tensor(name, type, dims, size, data));
    }

    public void Write(Stream stream)
    {
        using var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
        w.Write(Magic);
        w.Write(Version);
        w.Write((ulong)_tensors.Count);
        w.Write((ulong)(_metadata.Count + 1));
        AddAlignment(w);
        foreach (var (key, write) in _metadata)
        {
            WriteString(w, key);
            write(w);
        }

        long offset = 0;
        foreach (var tensor in _tensors)
        {
            WriteString(w, tensor.Name);
            w.Write((uint)tensor.Dims.Length);
            foreach (var dim in tensor.Dims)
            {
                w.Write((ulong)dim);
            }

            w.Write((uint)tensor.Type);
            w.Write((ulong)offset);
            offset = Align(offset + tensor.ByteSize);
        }

        w.Flush();
        Pad(w, stream.Position);
        foreach (var tensor in _tensors)
        {
            var data = tensor.Data();
            if (data.LongLength != tensor.ByteSize)
            {
                throw new InvalidOperationException($"Tensor '{tensor.Name}' has {data.LongLength} bytes, expected {tensor.ByteSize}.");
            }

            w.Write(data);
            Pad(w, tensor.ByteSize);
        }
    }

    private static void AddAlignment(BinaryWriter w)
    {
        WriteString(w, "general.alignment");
        w.Write((uint)ValueType.UInt32);
        w.Write((uint)Alignment);
    }

    private void AddValue(string key, Action<BinaryWriter> write)
    {
        if (_metadata.Any(m => m.Key == key))
        {
            throw new ArgumentException($"Duplicate GGUF key '{key}'.", nameof(key));
        }

        _metadata.Add((key, write));
    }

    private static void WriteString(BinaryWriter w, string value)
    {
        var bytes = Encoding.UTF8.GetBytes(value);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    private static long Align(long value) => (value + Alignment - 1) / Alignment * Alignment;

    private static void Pad(BinaryWriter w, long written)
    {
        for (var i = written; i < Align(written); i++)
        {
            w.Write((byte)0);
        }
    }
}
