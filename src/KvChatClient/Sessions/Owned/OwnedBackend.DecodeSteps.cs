using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;

namespace KvChat;

// OwnedBackend, part 2 of 3: decode steps of concurrent sessions gathered into batched Runs.
internal sealed unsafe partial class OwnedBackend
{
    /// <summary>The most padding rows a batched Run carries between two sessions' slots before it is split in two Runs.</summary>
    private const int MaxPaddingGap = 2;

    private float[] _stepLogits;
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
    /// <b>Two-row steps</b> (<see cref="StepRequest.Rows"/> = 2, on a decoder whose one-row Runs drift from prefills,
    /// <see cref="RowExactness.DecodesTwoRows"/>): the Run carries the slot's previous token again and the new one, at
    /// positions past - 1 and past, so every position is computed in a Run of two rows and gets the bits of one prefill;
    /// the previous position's KV is rewritten to the bits it had. ONNX Runtime's CPU GroupQueryAttention takes several
    /// rows after cached positions for a batch of one only, so such steps run one session at a time
    /// (<see cref="BatchingNote"/>); the layout below still holds for them (a padding row would write positions 0 and 1).
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
                    while (j < requests.Length && requests[j].Slot - requests[j - 1].Slot - 1 <= MaxPaddingGap && requests[j].Rows == requests[i].Rows)
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

    /// <summary>
    /// One Run for requests on ascending slots, all of the same <see cref="StepRequest.Rows"/>; every request ends done,
    /// with logits or an error. Under the run lock.
    /// </summary>
    private void RunGroup(ReadOnlySpan<StepRequest> requests)
    {
        var first = requests[0].Slot;
        var sequence = requests[0].Rows;
        var rows = requests[^1].Slot - first + 1;
        var width = sequence;
        foreach (var request in requests)
        {
            width = Math.Max(width, request.Past + 1);
        }

        var ids = new long[rows * sequence];
        var mask = new long[rows * width];
        var positions = _positionIds ? new long[rows * sequence] : null;
        var isPadding = new bool[rows];
        isPadding.AsSpan().Fill(true);
        foreach (var request in requests)
        {
            var row = request.Slot - first;
            isPadding[row] = false;
            ids[(row * sequence) + sequence - 1] = request.Token;
            if (sequence == 2)
            {
                ids[row * sequence] = request.Previous;
            }

            mask.AsSpan(row * width, request.Past + 1).Fill(1);
            if (positions is not null)
            {
                for (var s = 0; s < sequence; s++)
                {
                    positions[(row * sequence) + s] = request.Past - sequence + 1 + s;
                }
            }
        }

        // A padding row computes positions [0, sequence) of its slot: they are saved before the Run and restored after.
        var saved = sequence * _blocks.Length * KvHeads * HeadSize;
        float[]? store = null;
        for (var row = 0; row < rows; row++)
        {
            if (isPadding[row])
            {
                mask.AsSpan(row * width, sequence).Fill(1);
                store ??= new float[rows * saved];
                CopyFirstPositions(first + row, sequence, store.AsSpan(row * saved, saved), save: true);
            }
        }

        try
        {
            var logitRows = LogitRows(sequence);
            if (_stepLogits.Length < rows * logitRows * Vocab)
            {
                _stepLogits = new float[Slots * logitRows * Vocab];
            }

            Run(first, rows, ids, sequence, mask, width, positions, _stepLogits.AsMemory(0, rows * logitRows * Vocab));
            foreach (var request in requests)
            {
                _stepLogits.AsSpan((((request.Slot - first) * logitRows) + logitRows - 1) * Vocab, Vocab).CopyTo(request.Logits);
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
            if (store is not null)
            {
                for (var row = 0; row < rows; row++)
                {
                    if (isPadding[row])
                    {
                        CopyFirstPositions(first + row, sequence, store.AsSpan(row * saved, saved), save: false);
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

    /// <summary>Saves (or restores) positions [0, <paramref name="count"/>) of every layer's K and V of a slot.</summary>
    private void CopyFirstPositions(int slot, int count, Span<float> store, bool save)
    {
        var length = count * HeadSize;
        var offset = 0;
        foreach (var block in _blocks)
        {
            for (var h = 0; h < KvHeads; h++)
            {
                var kv = new Span<float>((void*)Position(block, slot, h, 0), length);
                var kept = store.Slice(offset, length);
                if (save)
                {
                    kv.CopyTo(kept);
                }
                else
                {
                    kept.CopyTo(kv);
                }

                offset += length;
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

        /// <summary>
        /// The rows the step computes: 1 (the new token), or 2 (the token at <see cref="Past"/> - 1 again, then the new
        /// one: a two-row step, see <see cref="Step"/>).
        /// </summary>
        public int Rows { get; set; } = 1;

        /// <summary>The token at position <see cref="Past"/> - 1, computed again by a two-row step.</summary>
        public long Previous { get; set; }

        /// <summary>Set under the run lock when the step ran (or failed).</summary>
        public bool Done { get; set; }

        public Exception? Error { get; set; }
    }
}
