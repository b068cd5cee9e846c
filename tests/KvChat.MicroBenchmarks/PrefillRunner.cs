using System.Diagnostics;
using System.IO.Hashing;
using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace KvChat.MicroBenchmarks;

/// <summary>
/// One ONNX Runtime session over a model folder's decoder, set up as the owned-KV backend sets up its own (the graph
/// rewritten for last-position logits, one KV block per layer and K/V bound as both past and present, intra-op threads,
/// one inter-op thread, sequential execution), with the session options of a configuration applied on top. Runs one
/// prefill Run of any length at any past, and hashes the KV it wrote, so that configurations can be compared for speed
/// and for bits.
/// </summary>
internal sealed unsafe class PrefillRunner : IDisposable
{
    private readonly SessionOptions _options;
    private readonly InferenceSession _session;
    private readonly RunOptions _runOptions = new();
    private readonly ModelFolder _folder;
    private readonly bool _positionIds;
    private readonly nint[] _blocks;
    private readonly float[] _logits;

    public PrefillRunner(ModelFolder folder, byte[] rewritten, int context, int threads, Action<SessionOptions>? configure)
    {
        _folder = folder;
        Context = context;
        _options = new SessionOptions { IntraOpNumThreads = threads, InterOpNumThreads = 1, ExecutionMode = ExecutionMode.ORT_SEQUENTIAL };
        _options.AddSessionConfigEntry("session.model_external_initializers_file_folder_path", Path.GetFullPath(folder.Path));
        configure?.Invoke(_options);
        _session = new InferenceSession(rewritten, _options);
        _positionIds = _session.InputMetadata.ContainsKey(folder.Decoder.PositionIds);
        _logits = new float[folder.VocabSize];
        _blocks = new nint[folder.Layers * 2];
        for (var i = 0; i < _blocks.Length; i++)
        {
            _blocks[i] = (nint)NativeMemory.AllocZeroed((nuint)(BlockFloats * sizeof(float)));
        }
    }

    /// <summary>Gets the positions of the KV blocks.</summary>
    public int Context { get; }

    /// <summary>Gets the last position's logits of the last Run.</summary>
    public ReadOnlySpan<float> Logits => _logits;

    private long BlockFloats => (long)_folder.KvHeads * Context * _folder.HeadSize;

    /// <summary>Reads the decoder with its weights referred to in place and rewrites it for last-position logits, as the owned backend does.</summary>
    public static byte[] Rewrite(ModelFolder folder)
    {
        var model = DecoderProtoReader.Read(Path.Combine(folder.Path, folder.Decoder.FileName), out _);
        if (LastPositionLogits.TryApply(model, folder.Decoder.Logits, 1, out _) is { } declined)
        {
            throw new InvalidOperationException($"The last-position rewrite declined: {declined}");
        }

        return LastPositionLogits.ToBytes(model);
    }

    /// <summary>Runs <paramref name="ids"/> at positions <paramref name="past"/>.. in one Run; returns the seconds it took.</summary>
    public double Run(int past, ReadOnlySpan<long> ids)
    {
        var n = ids.Length;
        var idArray = ids.ToArray();
        var mask = new long[past + n];
        mask.AsSpan().Fill(1);
        var positions = new long[n];
        for (var i = 0; i < n; i++)
        {
            positions[i] = past + i;
        }

        var names = _folder.Decoder;
        var values = new List<OrtValue>();
        var stopwatch = Stopwatch.StartNew();
        try
        {
            using var binding = _session.CreateIoBinding();
            var info = OrtMemoryInfo.DefaultInstance;
            values.Add(OrtValue.CreateTensorValueFromMemory(info, idArray.AsMemory(), [1, n]));
            binding.BindInput(names.InputIds, values[^1]);
            values.Add(OrtValue.CreateTensorValueFromMemory(info, mask.AsMemory(), [1, mask.Length]));
            binding.BindInput(names.AttentionMask, values[^1]);
            if (_positionIds)
            {
                values.Add(OrtValue.CreateTensorValueFromMemory(info, positions.AsMemory(), [1, n]));
                binding.BindInput(names.PositionIds, values[^1]);
            }

            long[] kvShape = [1, _folder.KvHeads, Context, _folder.HeadSize];
            for (var layer = 0; layer < _folder.Layers; layer++)
            {
                for (var kind = 0; kind < 2; kind++)
                {
                    var value = OrtValue.CreateTensorValueWithData(info, TensorElementType.Float, kvShape, _blocks[(layer * 2) + kind], BlockFloats * sizeof(float));
                    values.Add(value);
                    binding.BindInput(DecoderNames.Layer(kind == 0 ? names.PastKey : names.PastValue, layer), value);
                    binding.BindOutput(DecoderNames.Layer(kind == 0 ? names.PresentKey : names.PresentValue, layer), value);
                }
            }

            values.Add(OrtValue.CreateTensorValueFromMemory(info, _logits.AsMemory(), [1, 1, _folder.VocabSize]));
            binding.BindOutput(names.Logits, values[^1]);
            _session.RunWithBinding(_runOptions, binding);
            return stopwatch.Elapsed.TotalSeconds;
        }
        finally
        {
            foreach (var value in values)
            {
                value.Dispose();
            }
        }
    }

    /// <summary>Runs <paramref name="ids"/> from position 0 in Runs of at most <paramref name="chunk"/> tokens; returns the seconds.</summary>
    public double Prefill(ReadOnlySpan<long> ids, int chunk)
    {
        var seconds = 0.0;
        for (var offset = 0; offset < ids.Length; offset += chunk)
        {
            seconds += Run(offset, ids.Slice(offset, Math.Min(chunk, ids.Length - offset)));
        }

        return seconds;
    }

    /// <summary>Hashes the last logits and positions [0, <paramref name="length"/>) of every layer's K and V.</summary>
    public (ulong Logits, ulong Kv) Hash(int length)
    {
        var hash = new XxHash64();
        var perHead = (long)length * _folder.HeadSize;
        foreach (var block in _blocks)
        {
            for (var h = 0; h < _folder.KvHeads; h++)
            {
                var start = (float*)block + ((long)h * Context * _folder.HeadSize);
                hash.Append(new ReadOnlySpan<byte>(start, checked((int)(perHead * sizeof(float)))));
            }
        }

        return (XxHash64.HashToUInt64(MemoryMarshal.AsBytes(_logits.AsSpan())), hash.GetCurrentHashAsUInt64());
    }

    /// <summary>Ends ORT profiling (when the configuration enabled it) and returns the profile's file.</summary>
    public string EndProfiling() => _session.EndProfiling();

    public void Dispose()
    {
        _session.Dispose();
        _options.Dispose();
        _runOptions.Dispose();
        foreach (var block in _blocks)
        {
            NativeMemory.Free((void*)block);
        }
    }
}
