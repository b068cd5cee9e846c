using System.IO.Hashing;
using System.Runtime.InteropServices;

namespace KvChat;

/// <summary>
/// A parked copy of an owned session's first tokens and their KV, in native memory (no arena slot): one
/// <see cref="NativeKvBuffer"/> laid out <c>[layers x K/V, kv heads, TokenCount, head size]</c>, its block rounded up to
/// <see cref="OwnedBackend.ParkedBlockTokens"/> positions so the backend reuses it for the next park.
/// The pool keeps one for a conversation whose session another request takes over; the conversation comes back by a
/// fork (<see cref="OwnedSession.CopyPrefixFrom"/>) instead of a prefill.
/// </summary>
/// <remarks>
/// Read-only once made; it is never leased, so everything that would change it throws. Disposing it frees the memory
/// (once: later uses throw <see cref="ObjectDisposedException"/>); a copy in flight keeps it until the copy ends.
/// </remarks>
internal sealed class ParkedSession : IKvSession
{
    private readonly int[] _tokens;
    private readonly NativeKvBuffer _kv;

    public ParkedSession(OwnedBackend backend, int[] tokens, NativeKvBuffer kv)
    {
        var floats = backend.Layers * 2L * backend.KvHeads * tokens.Length * backend.HeadSize;
        if (kv.Floats != floats)
        {
            throw new ArgumentException($"A parked KV buffer of {tokens.Length} tokens holds {floats} floats, not {kv.Floats}.", nameof(kv));
        }

        Backend = backend;
        _tokens = tokens;
        _kv = kv;
    }

    public OwnedBackend Backend { get; }

    public IReadOnlyList<int> Tokens => _tokens;

    public int TokenCount => _tokens.Length;

    public int ContextTokens => Backend.Context;

    public bool CanFork => true;

    /// <inheritdoc/>
    /// <remarks>The bytes of the native block behind the copy: its positions, rounded up to whole reusable blocks.</remarks>
    public long ByteSize => _kv.Bytes;

    /// <summary>Takes a reference to the KV memory for one copy; dispose the result when the copy ends.</summary>
    /// <exception cref="ObjectDisposedException">The parked session was disposed.</exception>
    public NativeKvBuffer.Use AcquireKv() => _kv.Acquire();

    public void Prefill(ReadOnlySpan<int> prompt, int keep) => throw ReadOnly();

    public void Extend(int keep, ReadOnlySpan<int> tail) => throw ReadOnly();

    public void Append(int token) => throw ReadOnly();

    public void ReadLastLogits(Span<float> destination) => throw ReadOnly();

    public void CopyPrefixFrom(IKvSession source, ReadOnlySpan<int> tokens) => throw ReadOnly();

    public IKvSession Park(int length) => throw ReadOnly();

    public int Load(Stream source) => throw ReadOnly();

    public void Save(Stream destination, int length)
    {
        ArgumentNullException.ThrowIfNull(destination);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(length, _tokens.Length);
        using var kv = _kv.Acquire();
        var hash = new XxHash64();
        KvSnapshotFormat.WriteHeader(destination, hash, Backend.Layout, _tokens.AsSpan(0, length));
        var perHead = length * Backend.HeadSize;
        var headFloats = (long)_tokens.Length * Backend.HeadSize;
        for (var block = 0; block < Backend.Layers * 2; block++)
        {
            for (var h = 0; h < Backend.KvHeads; h++)
            {
                var offset = (((long)block * Backend.KvHeads) + h) * headFloats;
                KvSnapshotFormat.Write(destination, hash, MemoryMarshal.AsBytes(kv.Slice(offset, perHead)));
            }
        }

        KvSnapshotFormat.WriteChecksum(destination, hash);
    }

    public void Dispose() => _kv.Dispose();

    private static InvalidOperationException ReadOnly() => new("A parked session is a copy of cached KV: it is only a fork source.");
}
