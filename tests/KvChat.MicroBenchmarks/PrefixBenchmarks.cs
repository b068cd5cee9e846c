using System.IO.Hashing;
using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;

namespace KvChat.MicroBenchmarks;

/// <summary>Random token ids of a vocabulary of 32000, the same for a given seed.</summary>
internal static class TokenData
{
    public const int Vocabulary = 32000;

    public static int[] Random(int count, int seed)
    {
        var random = new Random(seed);
        var tokens = new int[count];
        for (var i = 0; i < tokens.Length; i++)
        {
#pragma warning disable CA5394 // Benchmark data, not a secret.
            tokens[i] = random.Next(Vocabulary);
#pragma warning restore CA5394
        }

        return tokens;
    }
}

/// <summary>
/// Hashing 1,000 prompt tokens into the chain of 16-token blocks (<see cref="PrefixIndex{TEntry}.ComputeChain"/>), against
/// one XxHash3 of the same 4,000 bytes: what chaining 62 blocks costs over hashing the bytes once. A lookup hashes only
/// the first block (<c>HeadBlock</c>).
/// </summary>
[MemoryDiagnoser]
public class PrefixHashingBenchmarks
{
    private const int BlockSize = 16;
    private readonly int[] _tokens = TokenData.Random(1000, seed: 1);
    private readonly ulong[] _chain = new ulong[1000 / BlockSize];

    [Benchmark(Baseline = true, Description = "XxHash3 of the 1,000 tokens at once")]
    public ulong XxHash3Once() => XxHash3.HashToUInt64(MemoryMarshal.AsBytes(_tokens.AsSpan()));

    [Benchmark(Description = "ComputeChain, 1,000 tokens (62 blocks)")]
    public int ComputeChain() => PrefixIndex<object>.ComputeChain(_tokens, BlockSize, 0, _chain);

    [Benchmark(Description = "ComputeChain, first block only (a lookup)")]
    public int HeadBlock() => PrefixIndex<object>.ComputeChain(_tokens.AsSpan(0, BlockSize), BlockSize, 0, _chain);
}

/// <summary>
/// Registering a session's tokens after a turn: 100 new tokens after 1,000 registered ones
/// (<see cref="PrefixIndex{TEntry}.Set"/>), against removing the entry and registering all 1,100 tokens anew.
/// </summary>
/// <remarks>
/// Each invocation sets two sequences that share their first 1,000 tokens and differ in the last 100, in turn: each
/// <c>Set</c> then compares 1,000 tokens, copies 100 and keeps the bucket, which is the work of appending 100 tokens to
/// a 1,000-token registration, without a reset between invocations.
/// </remarks>
[MemoryDiagnoser]
public class PrefixIndexSetBenchmarks
{
    private readonly object _entry = new();
    private PrefixIndex<object> _index = null!;
    private int[] _a = null!;
    private int[] _b = null!;

    [GlobalSetup]
    public void Setup()
    {
        var shared = TokenData.Random(1000, seed: 2);
        _a = [.. shared, .. TokenData.Random(100, seed: 3)];
        _b = [.. shared, .. TokenData.Random(100, seed: 4)];
        _index = new PrefixIndex<object>(16, seed: 0);
        _index.Set(_entry, shared);
        _index.Set(_entry, _a);
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = 2, Description = "Remove + Set of 1,100 tokens (no reuse)")]
    public int RemoveAndSet()
    {
        _index.Remove(_entry);
        _index.Set(_entry, _b);
        _index.Remove(_entry);
        _index.Set(_entry, _a);
        return _index.Count;
    }

    [Benchmark(OperationsPerInvoke = 2, Description = "Set after a turn: 1,000 kept + 100 new")]
    public int SetAfterTurn()
    {
        _index.Set(_entry, _b);
        _index.Set(_entry, _a);
        return _index.Count;
    }
}

/// <summary>
/// Finding the cached session for a 1,000-token prompt among 1 or 64 sessions of 900 tokens that share a 500-token
/// system prompt and differ after it; the prompt continues session 0's conversation (its 900 tokens and 100 new ones).
/// </summary>
/// <remarks>
/// Every session shares the prompt's first block, so all of them are candidates and each is compared token by token:
/// the index cannot prune sessions that share a system prompt (it prunes those that share no block). The baseline
/// does the same work without the index: compare the prompt with every session and sort. <c>Acquire + commit +
/// release</c> is a whole request's bookkeeping in <see cref="SessionPool{TSession}"/> (fake sessions, no model):
/// the lookup under the pool's lock, the lease, the commit of the session's tokens and the release.
/// </remarks>
[MemoryDiagnoser]
public class PrefixLookupBenchmarks
{
    private const int BlockSize = 16;
    private const int IdentityLength = 520;
    private const int ReplyStart = 860;
    private readonly List<PrefixCandidate<object>> _results = [];
    private readonly List<PrefixCandidate<object>> _scanResults = [];
    private int[][] _conversations = null!;
    private object[] _entries = null!;
    private int[] _prompt = null!;
    private PrefixIndex<object> _index = null!;
    private SessionPool<FakeSession> _pool = null!;
    private bool _disposed;

    [Params(1, 64)]
    public int Sessions { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var system = TokenData.Random(500, seed: 10);
        _conversations = [.. Enumerable.Range(0, Sessions).Select(i => (int[])[.. system, .. TokenData.Random(400, seed: 100 + i)])];
        _prompt = [.. _conversations[0], .. TokenData.Random(100, seed: 99)];
        _entries = [.. Enumerable.Range(0, Sessions).Select(_ => new object())];
        _index = new PrefixIndex<object>(BlockSize, seed: 0);
        for (var i = 0; i < Sessions; i++)
        {
            _index.Set(_entries[i], _conversations[i]);
        }

        _pool = new SessionPool<FakeSession>(Sessions, 1L << 40, () => new FakeSession(), BusySessionPolicy.TakeOther, BlockSize);
        foreach (var conversation in _conversations)
        {
            var lease = Acquire(conversation);
            _pool.Commit(lease, conversation, ReplyStart);
            lease.Release();
        }

        var statistics = _pool.GetStatistics();
        if (statistics.Sessions != Sessions || FindCandidates() != 900 || LinearScan() != 900 || AcquireCommitRelease() != 900)
        {
            throw new InvalidOperationException($"Setup failed: {statistics.Sessions} sessions, best prefix {FindCandidates()}.");
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        if (!_disposed)
        {
            _disposed = true;
            _pool?.Dispose();
        }
    }

    [Benchmark(Baseline = true, Description = "Linear scan: compare with every session, sort")]
    public int LinearScan()
    {
        _scanResults.Clear();
        for (var i = 0; i < _conversations.Length; i++)
        {
            var common = _prompt.AsSpan().CommonPrefixLength(_conversations[i]);
            if (common >= BlockSize)
            {
                _scanResults.Add(new PrefixCandidate<object>(_entries[i], common));
            }
        }

        _scanResults.Sort(static (a, b) => b.CommonPrefixLength.CompareTo(a.CommonPrefixLength));
        return _scanResults[0].CommonPrefixLength;
    }

    [Benchmark(Description = "PrefixIndex.FindCandidates")]
    public int FindCandidates()
    {
        _index.FindCandidates(_prompt, _results);
        return _results[0].CommonPrefixLength;
    }

    [Benchmark(Description = "SessionPool: acquire + commit + release")]
    public int AcquireCommitRelease()
    {
        var lease = Acquire(_prompt);
        _pool.Commit(lease, _conversations[0], ReplyStart);
        lease.Release();
        return lease.CommonPrefixLength;
    }

    private SessionPool<FakeSession>.Lease Acquire(int[] prompt)
    {
        var pending = _pool.AcquireAsync(prompt, IdentityLength);
        return pending.IsCompletedSuccessfully
            ? pending.Result
            : throw new InvalidOperationException("The pool made the request wait.");
    }

    /// <summary>A session with no model: the pool's bookkeeping alone.</summary>
    internal sealed class FakeSession : IPooledSession
    {
        public long ByteSize => 24 * 1024 * 900;

        public void Dispose()
        {
        }
    }
}
