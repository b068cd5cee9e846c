using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace KvChat;

/// <summary>
/// The owned-KV backend: the folder's decoder run on ONNX Runtime directly (one <see cref="InferenceSession"/> per
/// client, weights loaded once) over KV memory this class allocates. Every session is a slot of one arena per layer and
/// K/V, <c>[slots, kv heads, context, head size]</c> float32; the same <see cref="OrtValue"/> over a slot is bound as
/// <c>past_key_values.N.*</c> input and <c>present.N.*</c> output, so GroupQueryAttention takes its share-buffer path
/// and writes new positions in place. Rewinding is bookkeeping; copying a prefix is a memory copy.
/// </summary>
/// <remarks>
/// <para>
/// <b>One Run at a time.</b> Every Run and every read or write of KV memory happens under one lock: two Runs on two
/// cores would only contend, and a batched step may write into a slot it pads (see <see cref="Step"/>).
/// </para>
/// <para>
/// <b>Prefill in chunks.</b> A prefill runs <see cref="PrefillChunk"/> tokens per Run and, before each chunk, runs the
/// decode steps waiting, so a long prefill delays running decodes by one chunk per token rather than stalling them.
/// </para>
/// <para>
/// Why hand-written: GenAI cannot write a generator's KV (owned-kv.md), its Engine API batches only statically on CPU,
/// and no .NET library drives an ONNX decoder's KV binding; ONNX Runtime's IO binding over our own memory is the
/// documented way to do it.
/// </para>
/// </remarks>
internal sealed unsafe partial class OwnedBackend : IKvBackend
{
    /// <summary>The most prompt tokens one prefill Run computes.</summary>
    public const int PrefillChunk = 128;

    /// <summary>The last positions whose logits a prefill Run computes, when the graph is rewritten (<see cref="LastPositionLogits"/>).</summary>
    public const int LastLogitPositions = 1;

    /// <summary>
    /// Gets the tokens of the next prefill chunk when <paramref name="remaining"/> are left: at most
    /// <see cref="PrefillChunk"/>, and one fewer where that would leave a last chunk of one token (a one-row Run may
    /// compute other bits than a prefill, <see cref="RowExactness"/>).
    /// </summary>
    internal static int ChunkLength(int remaining)
    {
        var n = Math.Min(PrefillChunk, remaining);
        return remaining - n == 1 ? n - 1 : n;
    }

    private readonly SessionOptions _sessionOptions;
    private readonly InferenceSession _session;
    private readonly RunOptions _runOptions = new();
    private readonly DecoderNames _names;
    private readonly string[] _pastKey;
    private readonly string[] _pastValue;
    private readonly string[] _presentKey;
    private readonly string[] _presentValue;
    private readonly bool _positionIds;
    private readonly nint[] _blocks;
    private readonly bool[] _slotUsed;
    private readonly Lock _runLock = new();
    private readonly Lock _slotLock = new();
    private readonly float[] _prefillLogits;
    private readonly int _logitPositions;
    private bool _batchOfOne;
    private bool _disposed;

    private OwnedBackend(SessionOptions sessionOptions, InferenceSession session, ModelFolder folder, int context, int slots, bool positionIds, int logitPositions)
    {
        _logitPositions = logitPositions;
        _sessionOptions = sessionOptions;
        _session = session;
        _names = folder.Decoder;
        Layers = folder.Layers;
        KvHeads = folder.KvHeads;
        HeadSize = folder.HeadSize;
        Vocab = folder.VocabSize;
        Context = context;
        Slots = slots;
        _positionIds = positionIds;
        _pastKey = LayerNames(_names.PastKey);
        _pastValue = LayerNames(_names.PastValue);
        _presentKey = LayerNames(_names.PresentKey);
        _presentValue = LayerNames(_names.PresentValue);
        _slotUsed = new bool[slots];
        _prefillLogits = new float[LogitRows(PrefillChunk) * Vocab];
        _stepLogits = new float[slots * Vocab];
        _blocks = new nint[Layers * 2];
        ParkedMemory = new NativeKvMemory((long)ParkedBlockTokens * Layers * 2 * KvHeads * HeadSize);
        var bytes = checked((nuint)(SlotFloats * slots * sizeof(float)));
        try
        {
            for (var i = 0; i < _blocks.Length; i++)
            {
                // calloc: zero pages are mapped lazily, so memory is touched only where KV is written.
                _blocks[i] = (nint)NativeMemory.AllocZeroed(bytes);
            }
        }
        catch
        {
            FreeBlocks();
            throw;
        }
    }

    public KvSessionBackend Kind => KvSessionBackend.Owned;

    /// <summary>Gets how many last positions of a prefill Run the graph computes logits for (0: every position, as exported).</summary>
    public int LogitPositions => _logitPositions;

    public bool CanFork => true;

    /// <summary>Gets how the decoder's Runs agree, probed at load (<see cref="RowExactness.Exact"/> until then).</summary>
    public RowExactness RowExactness { get; private set; } = RowExactness.Exact;

    public int Layers { get; }

    public int KvHeads { get; }

    public int HeadSize { get; }

    public int Vocab { get; }

    /// <summary>Gets the positions of one slot: a session's context.</summary>
    public int Context { get; }

    /// <summary>Gets the number of slots in the arena.</summary>
    public int Slots { get; }

    /// <summary>Gets the floats of one slot in one layer's K (or V) block.</summary>
    public long SlotFloats => (long)KvHeads * Context * HeadSize;

    /// <summary>Gets the KV bytes of one session (all positions, allocated with the arena as GenAI's share-buffer does).</summary>
    public long BytesPerSession => Layers * 2L * SlotFloats * sizeof(float);

    public KvSnapshotFormat.Layout Layout => new(Layers, KvHeads, HeadSize);

    public IKvSession CreateSession() => new OwnedSession(this, AcquireSlot());

    public void Dispose()
    {
        lock (_runLock)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            FreeBlocks();
        }

        ParkedMemory.Dispose();
        _session.Dispose();
        _sessionOptions.Dispose();
        _runOptions.Dispose();
    }

    internal void ReleaseSlot(int slot)
    {
        lock (_slotLock)
        {
            _slotUsed[slot] = false;
        }
    }

    /// <summary>Computes <paramref name="tail"/> at positions <paramref name="past"/>.. of a slot; the last position's logits go to <paramref name="lastLogits"/>.</summary>
    internal void Prefill(int slot, int past, ReadOnlySpan<int> tail, Span<float> lastLogits)
    {
        for (var offset = 0; offset < tail.Length;)
        {
            var n = ChunkLength(tail.Length - offset);

            var ids = new long[n];
            for (var i = 0; i < n; i++)
            {
                ids[i] = CheckToken(tail[offset + i]);
            }

            var start = past + offset;
            var mask = new long[start + n];
            mask.AsSpan().Fill(1);
            long[]? positions = null;
            if (_positionIds)
            {
                positions = new long[n];
                for (var i = 0; i < n; i++)
                {
                    positions[i] = start + i;
                }
            }

            lock (_runLock)
            {
                ThrowIfDisposed();
                RunWaitingSteps();
                var rows = LogitRows(n);
                Run(slot, 1, ids, n, mask, start + n, positions, _prefillLogits.AsMemory(0, rows * Vocab));
                if (offset + n == tail.Length)
                {
                    _prefillLogits.AsSpan((rows - 1) * Vocab, Vocab).CopyTo(lastLogits);
                }
            }

            offset += n;
        }
    }

    /// <summary>Copies positions [0, <paramref name="length"/>) of every layer's K and V from one slot to another.</summary>
    internal void CopyPrefix(int fromSlot, int toSlot, int length)
    {
        lock (_runLock)
        {
            ThrowIfDisposed();
            var bytes = (long)length * HeadSize * sizeof(float);
            foreach (var block in _blocks)
            {
                for (var h = 0; h < KvHeads; h++)
                {
                    Buffer.MemoryCopy((void*)Position(block, fromSlot, h, 0), (void*)Position(block, toSlot, h, 0), bytes, bytes);
                }
            }
        }
    }

    /// <summary>The token positions a parked block grows by: blocks of conversations of similar length are reused.</summary>
    public const int ParkedBlockTokens = 256;

    /// <summary>Gets the native memory of parked KV copies made from this backend's sessions (rented, kept, freed).</summary>
    public NativeKvMemory ParkedMemory { get; }

    /// <summary>
    /// Copies positions [0, <paramref name="length"/>) of every layer's K and V of a slot to <paramref name="destination"/>,
    /// laid out <c>[layers x K/V, kv heads, length, head size]</c> (one lock for all layers).
    /// </summary>
    internal void ReadPrefix(int slot, int length, float* destination)
    {
        lock (_runLock)
        {
            ThrowIfDisposed();
            var perHead = (long)length * HeadSize;
            var bytes = perHead * sizeof(float);
            foreach (var block in _blocks)
            {
                for (var h = 0; h < KvHeads; h++)
                {
                    Buffer.MemoryCopy((void*)Position(block, slot, h, 0), destination, bytes, bytes);
                    destination += perHead;
                }
            }
        }
    }

    /// <summary>
    /// Writes the first <paramref name="length"/> positions of a <c>[layers x K/V, kv heads, sourcePositions, head size]</c>
    /// copy (see <see cref="ReadPrefix"/>) into positions [0, <paramref name="length"/>) of a slot.
    /// </summary>
    internal void WritePrefix(int slot, int length, float* source, int sourcePositions)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(length, sourcePositions);
        lock (_runLock)
        {
            ThrowIfDisposed();
            var bytes = (long)length * HeadSize * sizeof(float);
            var perHead = (long)sourcePositions * HeadSize;
            foreach (var block in _blocks)
            {
                for (var h = 0; h < KvHeads; h++)
                {
                    Buffer.MemoryCopy(source, (void*)Position(block, slot, h, 0), bytes, bytes);
                    source += perHead;
                }
            }
        }
    }

    /// <summary>Copies the first <paramref name="length"/> positions of one layer's K or V of a slot into <paramref name="destination"/> (<c>[kv heads, length, head size]</c>).</summary>
    internal void ReadKv(int slot, int blockIndex, int length, Span<float> destination)
    {
        lock (_runLock)
        {
            ThrowIfDisposed();
            var perHead = length * HeadSize;
            for (var h = 0; h < KvHeads; h++)
            {
                new ReadOnlySpan<float>((void*)Position(_blocks[blockIndex], slot, h, 0), perHead).CopyTo(destination.Slice(h * perHead, perHead));
            }
        }
    }

    /// <summary>
    /// Writes the first <paramref name="length"/> positions of <c>[kv heads, sourcePositions, head size]</c> floats into
    /// the first positions of one layer's K or V of a slot.
    /// </summary>
    internal void WriteKv(int slot, int blockIndex, int length, ReadOnlySpan<float> source, int sourcePositions)
    {
        lock (_runLock)
        {
            ThrowIfDisposed();
            var perHead = length * HeadSize;
            for (var h = 0; h < KvHeads; h++)
            {
                source.Slice(h * sourcePositions * HeadSize, perHead).CopyTo(new Span<float>((void*)Position(_blocks[blockIndex], slot, h, 0), perHead));
            }
        }
    }

    /// <summary>Gets the KV bytes of one token (all layers, K and V).</summary>
    public long BytesPerToken => Layers * 2L * KvHeads * HeadSize * sizeof(float);

    internal long CheckToken(int token)
        => (uint)token < (uint)Vocab
            ? token
            : throw new ArgumentOutOfRangeException(nameof(token), token, $"Token id {token} is outside the model's vocabulary (0..{Vocab - 1}).");

    /// <summary>The logit rows a Run of <paramref name="sequence"/> positions writes.</summary>
    private int LogitRows(int sequence) => _logitPositions == 0 ? sequence : Math.Min(_logitPositions, sequence);

    private nint Position(nint block, int slot, int head, int position)
        => block + (nint)(((((long)slot * KvHeads) + head) * Context + position) * HeadSize * sizeof(float));

    private int AcquireSlot()
    {
        lock (_slotLock)
        {
            for (var i = 0; i < _slotUsed.Length; i++)
            {
                if (!_slotUsed[i])
                {
                    _slotUsed[i] = true;
                    return i;
                }
            }
        }

        throw new InvalidOperationException($"All {Slots} KV slots of the owned backend are in use.");
    }

    /// <summary>One Run over <paramref name="rows"/> adjacent slots from <paramref name="firstSlot"/>. Under the run lock.</summary>
    private void Run(int firstSlot, int rows, long[] ids, int sequence, long[] mask, int width, long[]? positions, Memory<float> logits)
    {
        var values = new List<OrtValue>((Layers * 2) + 4);
        try
        {
            using var binding = _session.CreateIoBinding();
            var info = OrtMemoryInfo.DefaultInstance;
            values.Add(OrtValue.CreateTensorValueFromMemory(info, ids.AsMemory(0, rows * sequence), [rows, sequence]));
            binding.BindInput(_names.InputIds, values[^1]);
            values.Add(OrtValue.CreateTensorValueFromMemory(info, mask.AsMemory(0, rows * width), [rows, width]));
            binding.BindInput(_names.AttentionMask, values[^1]);
            if (positions is not null)
            {
                values.Add(OrtValue.CreateTensorValueFromMemory(info, positions.AsMemory(0, rows * sequence), [rows, sequence]));
                binding.BindInput(_names.PositionIds, values[^1]);
            }

            long[] kvShape = [rows, KvHeads, Context, HeadSize];
            var kvBytes = rows * SlotFloats * sizeof(float);
            for (var layer = 0; layer < Layers; layer++)
            {
                for (var kind = 0; kind < 2; kind++)
                {
                    var pointer = _blocks[(layer * 2) + kind] + (nint)(firstSlot * SlotFloats * sizeof(float));
                    var value = OrtValue.CreateTensorValueWithData(info, TensorElementType.Float, kvShape, pointer, kvBytes);
                    values.Add(value);
                    binding.BindInput(kind == 0 ? _pastKey[layer] : _pastValue[layer], value);
                    binding.BindOutput(kind == 0 ? _presentKey[layer] : _presentValue[layer], value);
                }
            }

            values.Add(OrtValue.CreateTensorValueFromMemory(info, logits, [rows, LogitRows(sequence), Vocab]));
            binding.BindOutput(_names.Logits, values[^1]);
            _session.RunWithBinding(_runOptions, binding);
        }
        finally
        {
            foreach (var value in values)
            {
                value.Dispose();
            }
        }
    }

    private string[] LayerNames(string pattern) => [.. Enumerable.Range(0, Layers).Select(i => DecoderNames.Layer(pattern, i))];

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    private void FreeBlocks()
    {
        for (var i = 0; i < _blocks.Length; i++)
        {
            if (_blocks[i] != 0)
            {
                NativeMemory.Free((void*)_blocks[i]);
                _blocks[i] = 0;
            }
        }
    }
}
