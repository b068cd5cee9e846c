using System.IO.Hashing;
using System.Runtime.InteropServices;

namespace KvChat;

/// <summary>
/// A parked copy of an owned session's first tokens and their KV, in managed memory of exactly that many positions
/// (no arena slot). The pool keeps one for a conversation whose session another request takes over; the conversation
/// comes back by a fork (<see cref="OwnedSession.CopyPrefixFrom"/>) instead of a prefill.
/// </summary>
/// <remarks>Read-only once made; it is never leased, so everything that would change it throws.</remarks>
internal sealed class ParkedSession : IKvSession
{
    private readonly int[] _tokens;
    private float[][]? _blocks;

    public ParkedSession(OwnedBackend backend, int[] tokens, float[][] blocks)
    {
        Backend = backend;
        _tokens = tokens;
        _blocks = blocks;
    }

    public OwnedBackend Backend { get; }

    public IReadOnlyList<int> Tokens => _tokens;

    public int TokenCount => _tokens.Length;

    public int ContextTokens => Backend.Context;

    public bool CanFork => true;

    /// <inheritdoc/>
    public long ByteSize => _tokens.Length * Backend.BytesPerToken;

    /// <summary>Gets one layer's K (even) or V (odd) block: <c>[kv heads, TokenCount, head size]</c>.</summary>
    public ReadOnlySpan<float> Block(int index) => (_blocks ?? throw new ObjectDisposedException(nameof(ParkedSession)))[index];

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
        var hash = new XxHash64();
        KvSnapshotFormat.WriteHeader(destination, hash, Backend.Layout, _tokens.AsSpan(0, length));
        var perHead = length * Backend.HeadSize;
        for (var block = 0; block < Backend.Layers * 2; block++)
        {
            var data = Block(block);
            for (var h = 0; h < Backend.KvHeads; h++)
            {
                KvSnapshotFormat.Write(destination, hash, MemoryMarshal.AsBytes(data.Slice(h * _tokens.Length * Backend.HeadSize, perHead)));
            }
        }

        KvSnapshotFormat.WriteChecksum(destination, hash);
    }

    public void Dispose() => _blocks = null;

    private static InvalidOperationException ReadOnly() => new("A parked session is a copy of cached KV: it is only a fork source.");
}
