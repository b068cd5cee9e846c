using System.IO.Hashing;
using System.Runtime.InteropServices;

namespace KvChat;

/// <summary>
/// One slot of an <see cref="OwnedBackend"/>'s KV arena and the exact token ids it holds. Prefill runs on the backend in
/// chunks; each appended token joins the backend's next (possibly batched) decode step; a prefix of another owned
/// session is taken by a memory copy.
/// </summary>
/// <remarks>Used by one request at a time (the pool's lease).</remarks>
internal sealed class OwnedSession : IKvSession
{
    private readonly OwnedBackend _backend;
    private readonly List<int> _tokens = [];
    private readonly float[] _logits;
    private readonly OwnedBackend.StepRequest _step;
    private bool _logitsValid;
    private bool _disposed;

    public OwnedSession(OwnedBackend backend, int slot)
    {
        _backend = backend;
        Slot = slot;
        _logits = new float[backend.Vocab];
        _step = new OwnedBackend.StepRequest(slot, _logits);
    }

    /// <summary>Gets the arena slot that holds this session's KV.</summary>
    public int Slot { get; }

    /// <summary>
    /// Gets whether each decode step computes the previous token again together with the new one (a Run of two rows,
    /// <see cref="RowExactness.DecodesTwoRows"/>), so that no position this session holds comes from a one-row Run.
    /// </summary>
    public bool TwoRowSteps { get; init; }

    public IReadOnlyList<int> Tokens => _tokens;

    public int TokenCount => _tokens.Count;

    public int ContextTokens => _backend.Context;

    public bool CanFork => true;

    /// <inheritdoc/>
    public long ByteSize => _backend.BytesPerSession;

    public void Prefill(ReadOnlySpan<int> prompt, int keep)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (keep < 0 || keep >= prompt.Length || keep > _tokens.Count)
        {
            throw new ArgumentOutOfRangeException(nameof(keep), keep, "Keep must leave at least one prompt token to append.");
        }

        Extend(keep, prompt[keep..]);
    }

    public void Extend(int keep, ReadOnlySpan<int> tail)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentOutOfRangeException.ThrowIfNegative(keep);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(keep, _tokens.Count);
        if (keep + tail.Length > _backend.Context)
        {
            throw new ArgumentException($"{keep + tail.Length} tokens exceed the session's context of {_backend.Context}.", nameof(tail));
        }

        if (keep < _tokens.Count)
        {
            _tokens.RemoveRange(keep, _tokens.Count - keep);
            _logitsValid = false;
        }

        if (tail.IsEmpty)
        {
            return;
        }

        _logitsValid = false;
        _backend.Prefill(Slot, keep, tail, _logits);
        foreach (var id in tail)
        {
            _tokens.Add(id);
        }

        _logitsValid = true;
    }

    public void Append(int token)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_tokens.Count >= _backend.Context)
        {
            throw new InvalidOperationException($"The session holds its whole context of {_backend.Context} tokens.");
        }

        _logitsValid = false;
        _step.Token = _backend.CheckToken(token);
        _step.Past = _tokens.Count;

        // A two-row step needs a previous token; a first token alone is computed again, in two rows, by the next step.
        _step.Rows = TwoRowSteps && _tokens.Count > 0 ? 2 : 1;
        _step.Previous = _step.Rows == 2 ? _tokens[^1] : 0;
        _backend.Step(_step);
        _tokens.Add(token);
        _logitsValid = true;
    }

    public void ReadLastLogits(Span<float> destination)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!_logitsValid)
        {
            throw new InvalidOperationException("The session has no logits for its last position: append a token first.");
        }

        if (destination.Length != _logits.Length)
        {
            throw new ArgumentException($"The model's logits have {_logits.Length} values per position; the destination holds {destination.Length}.", nameof(destination));
        }

        _logits.CopyTo(destination);
    }

    public unsafe void CopyPrefixFrom(IKvSession source, ReadOnlySpan<int> tokens)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(source);
        var length = tokens.Length;
        if (source is OwnedSession owned && ReferenceEquals(owned._backend, _backend))
        {
            _tokens.Clear();
            _logitsValid = false;
            _backend.CopyPrefix(owned.Slot, Slot, length);
        }
        else if (source is ParkedSession parked && ReferenceEquals(parked.Backend, _backend))
        {
            using var kv = parked.AcquireKv(); // Before anything changes: a disposed copy throws and leaves this session as it was.
            _tokens.Clear();
            _logitsValid = false;
            _backend.WritePrefix(Slot, length, kv.Pointer, parked.TokenCount);
        }
        else
        {
            throw new NotSupportedException("A prefix can be copied only from a session of the same owned backend.");
        }

        foreach (var token in tokens)
        {
            _tokens.Add(token);
        }
    }

    public unsafe IKvSession Park(int length)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(length, _tokens.Count);
        // Native memory, not zeroed: every float is written by the copy before anything reads it.
        var kv = new NativeKvBuffer(_backend.Layers * 2L * _backend.KvHeads * length * _backend.HeadSize, _backend.ParkedMemory);
        try
        {
            using (var use = kv.Acquire())
            {
                _backend.ReadPrefix(Slot, length, use.Pointer);
            }

            return new ParkedSession(_backend, CollectionsMarshal.AsSpan(_tokens)[..length].ToArray(), kv);
        }
        catch
        {
            kv.Dispose();
            throw;
        }
    }

    public void Save(Stream destination, int length)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(destination);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(length, _tokens.Count);
        var hash = new XxHash64();
        KvSnapshotFormat.WriteHeader(destination, hash, _backend.Layout, CollectionsMarshal.AsSpan(_tokens)[..length]);
        var buffer = new float[_backend.KvHeads * length * _backend.HeadSize];
        for (var block = 0; block < _backend.Layers * 2; block++)
        {
            _backend.ReadKv(Slot, block, length, buffer);
            KvSnapshotFormat.Write(destination, hash, MemoryMarshal.AsBytes(buffer.AsSpan()));
        }

        KvSnapshotFormat.WriteChecksum(destination, hash);
    }

    public int Load(Stream source)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(source);
        _tokens.Clear();
        _logitsValid = false;
        var hash = new XxHash64();
        var ids = KvSnapshotFormat.ReadHeader(source, hash, _backend.Layout, _backend.Context);
        foreach (var id in ids)
        {
            if ((uint)id >= (uint)_backend.Vocab)
            {
                throw new InvalidDataException($"The KV snapshot holds token id {id}, outside the model's vocabulary.");
            }
        }

        var buffer = new float[_backend.KvHeads * ids.Length * _backend.HeadSize];
        for (var block = 0; block < _backend.Layers * 2; block++)
        {
            KvSnapshotFormat.Read(source, hash, MemoryMarshal.AsBytes(buffer.AsSpan()));
            _backend.WriteKv(Slot, block, ids.Length, buffer, ids.Length);
        }

        KvSnapshotFormat.ReadChecksum(source, hash);
        _tokens.AddRange(ids);
        return ids.Length;
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _tokens.Clear();
        _backend.ReleaseSlot(Slot);
    }
}
