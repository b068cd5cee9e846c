using System.Runtime.InteropServices;

namespace KvChat;

/// <summary>
/// A block of native memory that holds KV floats outside the managed heap: not zeroed (every byte is written before it
/// is read), not moved or scanned by the GC, and freed exactly once, by <see cref="SafeHandle.Dispose()"/> or, should
/// an owner forget, by the finalizer.
/// </summary>
/// <remarks>
/// <para>
/// Readers and writers go through <see cref="Acquire"/>: it adds a reference (so a concurrent dispose frees the memory
/// only when the last use ends) and throws <see cref="ObjectDisposedException"/> once the buffer is disposed, so a use
/// after free cannot happen.
/// </para>
/// <para>
/// Why hand-written: parked KV is tens of MiB per conversation; as managed arrays each park allocated (and zeroed) that
/// much on the large object heap and its release waited for a gen-2 collection. <see cref="SafeHandle"/> is the
/// runtime's own guard for native resources; no library offers a counted, aligned float block.
/// </para>
/// </remarks>
internal sealed unsafe class NativeKvBuffer : SafeHandle
{
    private readonly NativeKvMemory _memory;

    /// <summary>Takes <paramref name="floats"/> uninitialised floats (or more: a reused block) from <paramref name="memory"/>.</summary>
    public NativeKvBuffer(long floats, NativeKvMemory memory)
        : base(0, ownsHandle: true)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(floats);
        _memory = memory;
        Floats = floats;
        SetHandle(memory.Rent(floats, out var capacity));
        Capacity = capacity;
    }

    /// <summary>Gets the number of floats asked for (the usable length).</summary>
    public long Floats { get; }

    /// <summary>Gets the floats of the block behind the buffer (at least <see cref="Floats"/>).</summary>
    public long Capacity { get; }

    /// <summary>Gets the bytes of the block behind the buffer: what it costs in memory.</summary>
    public long Bytes => Capacity * sizeof(float);

    /// <inheritdoc/>
    public override bool IsInvalid => handle == 0;

    /// <summary>Takes a reference for one use of the memory; dispose the result to end it.</summary>
    /// <exception cref="ObjectDisposedException">The buffer was disposed.</exception>
    public Use Acquire()
    {
        var added = false;
        DangerousAddRef(ref added);
        return new Use(this);
    }

    /// <inheritdoc/>
    protected override bool ReleaseHandle()
    {
        _memory.Return(handle, Capacity);
        return true;
    }

    /// <summary>One use of the buffer's memory: valid until disposed.</summary>
    public readonly ref struct Use
    {
        private readonly NativeKvBuffer _buffer;

        internal Use(NativeKvBuffer buffer) => _buffer = buffer;

        /// <summary>Gets the first float.</summary>
        public float* Pointer => (float*)_buffer.handle;

        /// <summary>Gets <paramref name="length"/> floats from <paramref name="offset"/>, bounds-checked.</summary>
        public Span<float> Slice(long offset, int length)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(offset);
            ArgumentOutOfRangeException.ThrowIfNegative(length);
            ArgumentOutOfRangeException.ThrowIfGreaterThan(offset + length, _buffer.Floats);
            return new Span<float>(Pointer + offset, length);
        }

        public void Dispose() => _buffer.DangerousRelease();
    }
}

