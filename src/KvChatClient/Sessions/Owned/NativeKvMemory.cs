using System.Runtime.InteropServices;

namespace KvChat;

/// <summary>
/// Native blocks for one backend's parked KV: rented by <see cref="NativeKvBuffer"/>, given back when it is released,
/// and kept for reuse up to <see cref="MaxFreeBlocks"/> blocks, so a park in steady state (one conversation parked as
/// another comes back) copies into memory already mapped instead of faulting in fresh pages. Thread-safe.
/// </summary>
/// <remarks>
/// Blocks are sized in steps of the granularity given at creation (a whole number of token positions) so blocks of
/// conversations of similar length are interchangeable; a kept block is reused for a request when it is at most one step
/// larger than a new block for that request would be.
/// Every block is freed exactly once: when it is not kept, or by <see cref="Dispose"/>. After <see cref="Dispose"/>,
/// blocks still out are freed as they come back.
/// </remarks>
internal sealed unsafe class NativeKvMemory : IDisposable
{
    /// <summary>The most free blocks kept for reuse (their bytes are not KV in use, so the bound is small).</summary>
    public const int MaxFreeBlocks = 2;

    private const int Alignment = 64;

    private readonly long _granularity;
    private readonly Lock _lock = new();
    private readonly List<(nint Pointer, long Floats)> _free = [];
    private long _liveBytes;
    private long _liveBlocks;
    private long _freeBytes;
    private long _allocations;
    private long _frees;
    private long _reuses;
    private bool _disposed;

    /// <summary>Creates the memory of a backend whose blocks are sized in steps of <paramref name="granularity"/> floats.</summary>
    public NativeKvMemory(long granularity)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(granularity);
        _granularity = granularity;
    }

    /// <summary>Gets the bytes of blocks rented out and not yet given back.</summary>
    public long LiveBytes { get { lock (_lock) { return _liveBytes; } } }

    /// <summary>Gets the blocks rented out and not yet given back.</summary>
    public long LiveBlocks { get { lock (_lock) { return _liveBlocks; } } }

    /// <summary>Gets the bytes of free blocks kept for reuse.</summary>
    public long FreeBytes { get { lock (_lock) { return _freeBytes; } } }

    /// <summary>Gets the blocks allocated from the system so far.</summary>
    public long Allocations { get { lock (_lock) { return _allocations; } } }

    /// <summary>Gets the blocks given back to the system so far.</summary>
    public long Frees { get { lock (_lock) { return _frees; } } }

    /// <summary>Gets the rents served by a kept block.</summary>
    public long Reuses { get { lock (_lock) { return _reuses; } } }

    /// <summary>Rents a block of at least <paramref name="floats"/> floats, not zeroed.</summary>
    internal nint Rent(long floats, out long capacity)
    {
        var fresh = checked((floats + _granularity - 1) / _granularity * _granularity);
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var best = -1;
            for (var i = 0; i < _free.Count; i++)
            {
                var size = _free[i].Floats;
                if (size >= floats && size <= fresh + _granularity && (best < 0 || size < _free[best].Floats))
                {
                    best = i;
                }
            }

            if (best >= 0)
            {
                var (pointer, size) = _free[best];
                _free.RemoveAt(best);
                _freeBytes -= size * sizeof(float);
                _liveBytes += size * sizeof(float);
                _liveBlocks++;
                _reuses++;
                capacity = size;
                return pointer;
            }
        }

        capacity = fresh;
        var block = (nint)NativeMemory.AlignedAlloc(checked((nuint)(capacity * sizeof(float))), Alignment);
        lock (_lock)
        {
            _liveBytes += capacity * sizeof(float);
            _liveBlocks++;
            _allocations++;
        }

        return block;
    }

    /// <summary>Takes a block back: kept for reuse, or freed.</summary>
    internal void Return(nint pointer, long capacity)
    {
        lock (_lock)
        {
            _liveBytes -= capacity * sizeof(float);
            _liveBlocks--;
            if (!_disposed && _free.Count < MaxFreeBlocks)
            {
                _free.Add((pointer, capacity));
                _freeBytes += capacity * sizeof(float);
                return;
            }

            _frees++;
        }

        NativeMemory.AlignedFree((void*)pointer);
    }

    /// <summary>Frees the kept blocks; blocks still rented are freed when they come back.</summary>
    public void Dispose()
    {
        (nint Pointer, long Floats)[] free;
        lock (_lock)
        {
            _disposed = true;
            free = [.. _free];
            _free.Clear();
            _freeBytes = 0;
            _frees += free.Length;
        }

        foreach (var (pointer, _) in free)
        {
            NativeMemory.AlignedFree((void*)pointer);
        }
    }
}
