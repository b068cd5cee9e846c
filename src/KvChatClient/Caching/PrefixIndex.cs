using System.Buffers;
using System.Buffers.Binary;
using System.IO.Hashing;
using System.Runtime.InteropServices;

namespace KvChat;

/// <summary>
/// Finds, among registered entries (KV-cache sessions), those whose tokens share a prefix with a
/// prompt, and how long that prefix is exactly.
/// </summary>
/// <typeparam name="TEntry">
/// The type of the indexed entries. Entries are compared by reference.
/// </typeparam>
/// <remarks>
/// <para>
/// Each entry is registered with the exact token ids it holds (<see cref="Set"/>); the index keeps
/// its own copy. Token sequences are cut into blocks of <c>blockSize</c> tokens and hashed as a
/// chain (<see cref="ComputeChain"/>): <c>h[k] = XxHash3(h[k-1] as 8 little-endian bytes, block k)</c>
/// with <c>h[-1] = seed</c>, so <c>h[k]</c> stands for the whole prefix of <c>k + 1</c> blocks.
/// </para>
/// <para>
/// Lookup uses the head of the chain, <c>h[0]</c>: every entry that shares at least one full block
/// with the prompt has the prompt's <c>h[0]</c>, so the bucket of <c>h[0]</c> holds all candidates
/// (plus, in theory, hash collisions). Each candidate is then verified token by token with a
/// vectorised comparison that stops at the first difference, which yields its exact common prefix.
/// A hash hit is only ever a hint; the reported lengths are always exact. Walking deeper blocks of
/// the chain would add no information: the exact length of every candidate is needed anyway (a
/// caller falls back to the second best when the best is busy), and the comparison that produces it
/// costs no more than the common prefix it reports. Lookup therefore costs one block hash, one
/// dictionary lookup and, per candidate, a comparison proportional to its common prefix; entries
/// that share no block with the prompt are never touched.
/// </para>
/// <para>
/// Entries holding fewer than <c>blockSize</c> tokens, and entries sharing fewer than
/// <c>blockSize</c> tokens with a prompt, are never candidates for it.
/// </para>
/// <para>
/// Hashes are an in-process lookup key; they are never persisted, and token ids are hashed in the
/// machine's byte order.
/// </para>
/// <para>
/// This type is not thread-safe: the owner (the session pool) serialises every call under its lock.
/// </para>
/// </remarks>
internal sealed class PrefixIndex<TEntry>
    where TEntry : class
{
    private const int StackBufferBytes = 1024;

    private readonly Dictionary<TEntry, Registration> _registrations = new(ReferenceEqualityComparer.Instance);
    private readonly Dictionary<ulong, List<Registration>> _buckets = [];
    private readonly ulong _hashMask;

    /// <summary>
    /// Creates an empty index.
    /// </summary>
    /// <param name="blockSize">The number of tokens in a hashed block; at least 1.</param>
    /// <param name="seed">
    /// The head of every hash chain: the identity of the model and chat template, so that chains of
    /// different models never meet.
    /// </param>
    public PrefixIndex(int blockSize, ulong seed)
        : this(blockSize, seed, ulong.MaxValue)
    {
    }

    /// <summary>
    /// Creates an empty index whose bucket keys are the chain hashes masked with
    /// <paramref name="hashMask"/>. A test seam: a narrow mask forges hash collisions.
    /// </summary>
    internal PrefixIndex(int blockSize, ulong seed, ulong hashMask)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(blockSize, 1);
        BlockSize = blockSize;
        Seed = seed;
        _hashMask = hashMask;
    }

    /// <summary>Gets the number of tokens in a hashed block.</summary>
    public int BlockSize { get; }

    /// <summary>Gets the head of every hash chain.</summary>
    public ulong Seed { get; }

    /// <summary>Gets the registered entries.</summary>
    public IReadOnlyCollection<TEntry> Entries => _registrations.Keys;

    /// <summary>Gets the number of registered entries.</summary>
    public int Count => _registrations.Count;

    /// <summary>
    /// Computes the chained hashes of the full blocks of <paramref name="tokens"/>.
    /// </summary>
    /// <param name="tokens">The token ids.</param>
    /// <param name="blockSize">The number of tokens in a block; at least 1.</param>
    /// <param name="seed">The head of the chain, <c>h[-1]</c>.</param>
    /// <param name="destination">
    /// Receives <c>h[0]</c> .. <c>h[n-1]</c>; must hold at least <c>tokens.Length / blockSize</c> values.
    /// </param>
    /// <returns>The number of full blocks, <c>n = tokens.Length / blockSize</c>.</returns>
    /// <remarks>
    /// A trailing partial block is not hashed. Equal token prefixes give equal chain prefixes; a
    /// change in block <c>k</c> changes <c>h[k]</c> and, through the chain, every later hash.
    /// Nothing is allocated unless a block exceeds 1 KiB, in which case one pooled buffer is rented.
    /// </remarks>
    public static int ComputeChain(ReadOnlySpan<int> tokens, int blockSize, ulong seed, Span<ulong> destination)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(blockSize, 1);
        var blocks = tokens.Length / blockSize;
        if (destination.Length < blocks)
        {
            throw new ArgumentException(
                $"The destination holds {destination.Length} hashes but the tokens have {blocks} full blocks.",
                nameof(destination));
        }

        if (blocks == 0)
        {
            return 0;
        }

        var byteCount = checked(sizeof(ulong) + (blockSize * sizeof(int)));
        byte[]? rented = null;
        var buffer = byteCount <= StackBufferBytes
            ? stackalloc byte[StackBufferBytes]
            : (rented = ArrayPool<byte>.Shared.Rent(byteCount));
        buffer = buffer[..byteCount];
        try
        {
            var previous = seed;
            var blockBytes = buffer[sizeof(ulong)..];
            for (var k = 0; k < blocks; k++)
            {
                BinaryPrimitives.WriteUInt64LittleEndian(buffer, previous);
                MemoryMarshal.AsBytes(tokens.Slice(k * blockSize, blockSize)).CopyTo(blockBytes);
                previous = XxHash3.HashToUInt64(buffer);
                destination[k] = previous;
            }
        }
        finally
        {
            if (rented is not null)
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }

        return blocks;
    }

    /// <summary>
    /// Registers <paramref name="entry"/> as holding exactly <paramref name="tokens"/>, replacing any
    /// earlier registration of it.
    /// </summary>
    /// <param name="entry">The entry.</param>
    /// <param name="tokens">
    /// The tokens the entry now holds; copied. May be empty (the entry is registered but is never a
    /// candidate).
    /// </param>
    /// <remarks>
    /// Made for the turn-by-turn pattern where the new tokens extend (or rewind and extend) the old
    /// ones: the stored buffer is reused (it grows geometrically and never shrinks), only the tokens after the common
    /// prefix are copied, and the head hash is recomputed only when the first block changes.
    /// </remarks>
    public void Set(TEntry entry, ReadOnlySpan<int> tokens)
    {
        ArgumentNullException.ThrowIfNull(entry);
        if (!_registrations.TryGetValue(entry, out var registration))
        {
            registration = new Registration(entry);
            _registrations.Add(entry, registration);
        }

        var common = tokens.CommonPrefixLength(registration.Tokens);
        if (registration.Buffer.Length < tokens.Length)
        {
            var grown = new int[Math.Max(tokens.Length, registration.Buffer.Length * 2)];
            tokens.CopyTo(grown);
            registration.Buffer = grown;
        }
        else
        {
            tokens[common..].CopyTo(registration.Buffer.AsSpan(common));
        }

        registration.Length = tokens.Length;

        var hasBlock = tokens.Length >= BlockSize;
        if (registration.IsIndexed && hasBlock && common >= BlockSize)
        {
            return; // The first block, hence the bucket, is unchanged.
        }

        if (registration.IsIndexed)
        {
            Unlink(registration);
        }

        if (hasBlock)
        {
            Link(registration, HeadHash(tokens));
        }
    }

    /// <summary>
    /// Removes <paramref name="entry"/> and its tokens from the index.
    /// </summary>
    /// <param name="entry">The entry.</param>
    /// <returns><see langword="true"/> if the entry was registered; otherwise <see langword="false"/>.</returns>
    public bool Remove(TEntry entry)
    {
        ArgumentNullException.ThrowIfNull(entry);
        if (!_registrations.Remove(entry, out var registration))
        {
            return false;
        }

        if (registration.IsIndexed)
        {
            Unlink(registration);
        }

        return true;
    }

    /// <summary>
    /// Gets whether <paramref name="entry"/> is registered.
    /// </summary>
    public bool Contains(TEntry entry)
    {
        ArgumentNullException.ThrowIfNull(entry);
        return _registrations.ContainsKey(entry);
    }

    /// <summary>
    /// Gets the tokens registered for <paramref name="entry"/>.
    /// </summary>
    /// <returns>A view of the index's copy, valid until the next <see cref="Set"/> or <see cref="Remove"/>.</returns>
    /// <exception cref="ArgumentException"><paramref name="entry"/> is not registered.</exception>
    public ReadOnlySpan<int> GetTokens(TEntry entry) => GetRegistration(entry).Tokens;

    /// <summary>
    /// Gets the exact number of leading tokens that <paramref name="entry"/>'s registered tokens and
    /// <paramref name="prompt"/> have in common (vectorised comparison).
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="entry"/> is not registered.</exception>
    public int GetCommonPrefixLength(TEntry entry, ReadOnlySpan<int> prompt) =>
        prompt.CommonPrefixLength(GetRegistration(entry).Tokens);

    /// <summary>
    /// Finds every entry that shares at least one full block with <paramref name="prompt"/>, with its
    /// exact common prefix length.
    /// </summary>
    /// <param name="prompt">The prompt's token ids.</param>
    /// <param name="results">
    /// Cleared, then filled with the candidates ordered by common prefix length, longest first; the
    /// order of equal lengths is unspecified. Every length is at least <see cref="BlockSize"/>.
    /// </param>
    /// <remarks>
    /// Hash hits are verified token by token: a candidate whose tokens differ from the prompt is
    /// reported with its exact (shorter) common prefix, or dropped when it shares less than one block.
    /// Allocates nothing beyond the growth of <paramref name="results"/>.
    /// </remarks>
    public void FindCandidates(ReadOnlySpan<int> prompt, List<PrefixCandidate<TEntry>> results)
    {
        ArgumentNullException.ThrowIfNull(results);
        results.Clear();
        if (prompt.Length < BlockSize || _buckets.Count == 0)
        {
            return;
        }

        if (!_buckets.TryGetValue(HeadHash(prompt), out var bucket))
        {
            return;
        }

        foreach (var registration in bucket)
        {
            var common = prompt.CommonPrefixLength(registration.Tokens);
            if (common >= BlockSize)
            {
                results.Add(new PrefixCandidate<TEntry>(registration.Entry, common));
            }
        }

        if (results.Count > 1)
        {
            results.Sort(static (a, b) => b.CommonPrefixLength.CompareTo(a.CommonPrefixLength));
        }
    }

    private Registration GetRegistration(TEntry entry)
    {
        ArgumentNullException.ThrowIfNull(entry);
        return _registrations.TryGetValue(entry, out var registration)
            ? registration
            : throw new ArgumentException("The entry is not registered in the index.", nameof(entry));
    }

    private ulong HeadHash(ReadOnlySpan<int> tokens)
    {
        Span<ulong> head = stackalloc ulong[1];
        ComputeChain(tokens[..BlockSize], BlockSize, Seed, head);
        return head[0] & _hashMask;
    }

    private void Link(Registration registration, ulong key)
    {
        if (!_buckets.TryGetValue(key, out var bucket))
        {
            bucket = [];
            _buckets.Add(key, bucket);
        }

        registration.Key = key;
        registration.Slot = bucket.Count;
        registration.IsIndexed = true;
        bucket.Add(registration);
    }

    private void Unlink(Registration registration)
    {
        var bucket = _buckets[registration.Key];
        var last = bucket[^1];
        bucket[registration.Slot] = last;
        last.Slot = registration.Slot;
        bucket.RemoveAt(bucket.Count - 1);
        if (bucket.Count == 0)
        {
            _buckets.Remove(registration.Key);
        }

        registration.IsIndexed = false;
    }

    /// <summary>The index's record of one entry: its tokens and its place in a bucket.</summary>
    private sealed class Registration(TEntry entry)
    {
        public TEntry Entry { get; } = entry;

        public int[] Buffer { get; set; } = [];

        public int Length { get; set; }

        public ReadOnlySpan<int> Tokens => Buffer.AsSpan(0, Length);

        public bool IsIndexed { get; set; }

        public ulong Key { get; set; }

        public int Slot { get; set; }
    }
}
