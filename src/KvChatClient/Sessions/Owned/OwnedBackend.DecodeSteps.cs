using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;

namespace KvChat;

// OwnedBackend, part 2 of 3: decode steps of concurrent sessions gathered into batched Runs.
internal sealed unsafe partial class OwnedBackend
{
    /// <summary>The most padding rows a batched Run carries between two sessions' slots before it is split in two Runs.</summary>
    private const int MaxPaddingGap = 2;

    private readonly float[] _stepLogits;
    private readonly Lock _queueLock = new();
    private List<StepRequest> _waiting = [];
    private List<StepRequest> _running = [];
    private string? _batchingNote;
    private long _steps;
    private long _rows;
    private int _maxBatch;

    /// <summary>Gets the lock every Run and KV copy holds (tests hold it to gather a batch deterministically).</summary>
    internal Lock RunLock => _runLock;

    /// <summary>Gets the number of decode steps waiting for a Run.</summary>
    internal int WaitingSteps
    {
        get
        {
            lock (_queueLock)
            {
                return _waiting.Count;
            }
        }
    }

    /// <summary>Why decode steps run one session at a time, or <see langword="null"/> when they are batched.</summary>
    public string? BatchingNote => _batchingNote;

    public DecodeStepStatistics GetStepStatistics()
    {
        lock (_queueLock)
        {
            return new DecodeStepStatistics(_steps, _rows, _maxBatch, _batchingNote);
        }
    }

    /// <summary>
    /// Computes one token of one session (group commit): the request waits while a Run is in flight, and the first
    /// waiter to get the run lock runs every request that gathered meanwhile in one batched Run.
    /// </summary>
    /// <remarks>
    /// <para>
    /// <b>DecodeSteps.</b> A batched Run binds the adjacent slots from the lowest to the highest session's, as one
    /// <c>[rows, kv heads, context, head size]</c> tensor per layer and K/V. Row b's attention mask is right-padded: ones
    /// for its first past[b] + 1 positions, so GroupQueryAttention gives each row its own length and writes its token
    /// at position past[b]. A slot in between that has no request is a padding row: mask [1, 0, ...] makes it write
    /// position 0, which is saved before and restored after the Run (under the run lock, so nothing sees it).
    /// </para>
    /// <para>
    /// Exactness: at load, a probe compares batched with single steps bit for bit; on a decoder where they differ
    /// (int4 kernels that take another path for more rows, say) or that has an <c>If</c> node (LongRoPE switches its
    /// cos/sin cache on the mask width for the whole batch), every step runs alone (<see cref="BatchingNote"/>).
    /// </para>
    /// </remarks>
    internal void Step(StepRequest request)
    {
        request.Done = false;
        request.Error = null;
        lock (_queueLock)
        {
            _waiting.Add(request);
        }

        lock (_runLock)
        {
            if (!request.Done)
            {
                ThrowIfDisposed();
                RunWaitingSteps();
            }
        }

        if (request.Error is { } error)
        {
            ExceptionDispatchInfo.Throw(error);
        }
    }

    /// <summary>Runs the decode steps that are waiting. Under the run lock.</summary>
    private void RunWaitingSteps()
    {
        lock (_queueLock)
        {
            if (_waiting.Count == 0)
            {
                return;
            }

            (_waiting, _running) = (_running, _waiting);
        }

        try
        {
            _running.Sort(static (a, b) => a.Slot.CompareTo(b.Slot));
            var requests = CollectionsMarshal.AsSpan(_running);
            var i = 0;
            while (i < requests.Length)
            {
                var j = i + 1;
                if (_batchingNote is null)
                {
                    while (j < requests.Length && requests[j].Slot - requests[j - 1].Slot - 1 <= MaxPaddingGap)
                    {
                        j++;
                    }
                }

                RunGroup(requests[i..j]);
                i = j;
            }
        }
        finally
        {
            _running.Clear();
        }
    }

    /// <summary>One Run for requests on ascending slots; every request ends done, with logits or an error. Under the run lock.</summary>
    private void RunGroup(ReadOnlySpan<StepRequest> requests)
    {
        var first = requests[0].Slot;
        var rows = requests[^1].Slot - first + 1;
        var width = 1;
        foreach (var request in requests)
        {
            width = Math.Max(width, request.Past + 1);
        }

        var ids = new long[rows];
        var mask = new long[rows * width];
        var positions = _positionIds ? new long[rows] : null;
        var isPadding = new bool[rows];
        isPadding.AsSpan().Fill(true);
        foreach (var request in requests)
        {
            var row = request.Slot - first;
            isPadding[row] = false;
            ids[row] = request.Token;
            mask.AsSpan(row * width, request.Past + 1).Fill(1);
            if (positions is not null)
            {
                positions[row] = request.Past;
            }
        }

        var perPosition = KvHeads * HeadSize;
        float[]? saved = null;
        for (var row = 0; row < rows; row++)
        {
            if (isPadding[row])
            {
                mask[row * width] = 1;
                saved ??= new float[rows * _blocks.Length * perPosition];
                CopyPositionZero(first + row, saved.AsSpan(row * _blocks.Length * perPosition), save: true);
            }
        }

        try
        {
            Run(first, rows, ids, 1, mask, width, positions, _stepLogits.AsMemory(0, rows * Vocab));
            foreach (var request in requests)
            {
                _stepLogits.AsSpan((request.Slot - first) * Vocab, Vocab).CopyTo(request.Logits);
                request.Done = true;
            }
        }
        catch (Exception e)
        {
            foreach (var request in requests)
            {
                request.Error = e;
                request.Done = true;
            }
        }
        finally
        {
            if (saved is not null)
            {
                for (var row = 0; row < rows; row++)
                {
                    if (isPadding[row])
                    {
                        CopyPositionZero(first + row, saved.AsSpan(row * _blocks.Length * perPosition), save: false);
                    }
                }
            }

            lock (_queueLock)
            {
                _steps++;
                _rows += requests.Length;
                _maxBatch = Math.Max(_maxBatch, requests.Length);
            }
        }
    }

    private void CopyPositionZero(int slot, Span<float> store, bool save)
    {
        var offset = 0;
        foreach (var block in _blocks)
        {
            for (var h = 0; h < KvHeads; h++)
            {
                var kv = new Span<float>((void*)Position(block, slot, h, 0), HeadSize);
                var kept = store.Slice(offset, HeadSize);
                if (save)
                {
                    kv.CopyTo(kept);
                }
                else
                {
                    kept.CopyTo(kv);
                }

                offset += HeadSize;
            }
        }
    }

    /// <summary>One session's decode step: what it computes and where the result goes. Reused by its session.</summary>
    internal sealed class StepRequest(int slot, float[] logits)
    {
        public int Slot { get; } = slot;

        /// <summary>The session's logits buffer, written by the Run.</summary>
        public float[] Logits { get; } = logits;

        /// <summary>The position of the new token (the tokens the slot holds before it).</summary>
        public int Past { get; set; }

        public long Token { get; set; }

        /// <summary>Set under the run lock when the step ran (or failed).</summary>
        public bool Done { get; set; }

        public Exception? Error { get; set; }
    }
}
