using System.Buffers;
using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace KvChat;

/// <summary>
/// Picks the next token from a model's logits: greedy, or sampled with temperature, top-k and top-p,
/// after OpenAI-style frequency and presence penalties.
/// </summary>
/// <remarks>
/// <para>
/// One instance serves one generation: it counts the tokens passed to <see cref="Accept"/> (the
/// generated tokens only, never the prompt) for the penalties, and owns the random generator. Not
/// thread-safe.
/// </para>
/// <para>
/// Order of operations: penalties (<c>logit[t] -= FrequencyPenalty * count[t] + PresencePenalty *
/// (count[t] &gt; 0 ? 1 : 0)</c>), then greedy argmax (ties go to the lowest token id), or else
/// temperature, top-k (the k greatest logits, the lower id first among equal logits), the weights
/// <c>exp((logit - max) / temperature)</c> as floats, and top-p: the smallest set of the heaviest tokens
/// whose mass is at least <c>TopP</c> of the whole (of the k with top-k), never empty, in the order
/// "greater weight, then lower id", so the kept sets are well defined even among ties. Tokens whose
/// weight underflows <see cref="float"/> are never drawn; negative infinity marks a banned token.
/// </para>
/// <para>
/// The draw: one uniform number scaled by the kept mass, walking the kept tokens in id order. Top-p without
/// top-k (from a <c>TopP</c> of <see cref="MinRejectionTopP"/>) draws that way over the whole vocabulary
/// and keeps the token if it is in the nucleus (<see cref="NucleusMembership"/>), which is a draw from the
/// nucleus (the whole distribution conditioned on it); after <see cref="DefaultRejectionDraws"/> draws
/// outside it, or below that <c>TopP</c>, it finds the nucleus and draws over it. With a
/// <see cref="SamplingSettings.Seed"/>, the same logits sequence gives the same tokens on every run on the
/// same hardware (xoshiro256**; see <see cref="Xoshiro256StarStar"/>); exp and the sums are vectorised, so
/// on a CPU with another vector width a draw that falls within rounding error of a boundary between two
/// tokens can go the other way. Without a seed, the generator is seeded at random. (Changes of the draw
/// for a given seed, each from the same distribution: before top-p without top-k drew by rejection, it
/// drew once over the nucleus found first, so the same seed now draws other tokens there (top-k, with or
/// without top-p, and temperature alone draw as before); before this sampler's top-p selection, the kept
/// tokens of top-k and top-p were walked in the order "greater logit, then lower id", and top-p ordered
/// tokens by logit rather than weight, which differs only for distinct logits whose float weights are
/// equal; before that, in the order quickselect left them.)
/// </para>
/// <para>
/// Cost, none of it a sort of the vocabulary or of the kept set: greedy is one vectorised pass (max and
/// validation) and allocates nothing. Top-k is that pass plus one vectorised scan that keeps the k best
/// in a heap (a token enters only when it beats the heap's worst, which one vector comparison rules out
/// for almost all); temperature and exp then apply to those k only. Temperature alone, or top-p alone,
/// need the whole softmax's mass: one pass that scales, exponentiates
/// (<see cref="TensorPrimitives.Exp(ReadOnlySpan{float}, Span{float})"/>) and sums in double precision a
/// chunk of 2,048 tokens at a time, while the chunk is in the first-level cache; the draw then walks the
/// block sums and one block. Top-p alone adds, per draw, one vectorised pass that sums the mass ahead of
/// the drawn token; a draw is kept with probability at least <c>TopP</c> (at 0.9, 1.11 passes a token on
/// average, at most 3). Only when three draws miss, or below a <c>TopP</c> of 0.5, does top-p find its cut
/// by selection, never by sorting (<see cref="NucleusSelection"/>): among the tokens of at least 1/1024 of
/// the mass when they reach <c>TopP</c> (a peaked distribution), otherwise by a radix selection on the
/// weights' bits over the whole vocabulary, linear in it, and the draw walks the kept mass's block sums.
/// Penalties copy the logits once (a vectorised copy) and adjust only the tokens generated so far.
/// Scratch buffers are rented from the shared array pool per call; nothing is allocated per token.
/// </para>
/// <para>
/// Written here because no .NET library samples top-k and top-p over raw logits (GenAI's own sampler runs
/// inside its generator, on its own logits); <c>System.Numerics.Tensors.TensorPrimitives</c> does the
/// vector math it can (exp), and the rest are plain vectorised loops.
/// </para>
/// </remarks>
internal sealed class LogitSampler
{
    // exp(x) is below the smallest normal float for x < -87.3: such tokens weigh nothing next to
    // the most likely token, whose weight is exp(0) = 1.
    private const float MinScaledLogit = -87.3f;

    // Block of the vectorised partial sums the full-vocabulary draw walks.
    private const int SumBlock = 512;

    // Tokens scaled, exponentiated and summed at a time: 8 KiB of logits and 8 KiB of weights, a whole number of blocks.
    private const int WeighChunk = 4 * SumBlock;

    // Top-p without top-k samples by rejection from this TopP on (a draw is kept with probability at least TopP), at
    // most DefaultRejectionDraws draws; then, or below it, the nucleus is found by selection and drawn from.
    internal const float MinRejectionTopP = 0.5f;
    internal const int DefaultRejectionDraws = 3;

    private readonly int _rejectionDraws;

    private readonly List<int> _generatedDistinct = [];
    private Xoshiro256StarStar _random;
    private int[]? _counts;

    /// <summary>
    /// Creates a sampler.
    /// </summary>
    /// <param name="settings">The sampling settings; validated.</param>
    /// <param name="vocabSize">The number of logits per step; at least 1.</param>
    /// <exception cref="ArgumentOutOfRangeException">A setting or <paramref name="vocabSize"/> is out of range.</exception>
    public LogitSampler(SamplingSettings settings, int vocabSize)
        : this(settings, vocabSize, DefaultRejectionDraws)
    {
    }

    /// <summary>
    /// Creates a sampler that makes at most <paramref name="rejectionDraws"/> draws from the whole distribution for
    /// top-p without top-k before it finds the nucleus by selection (0: always by selection, as before rejection).
    /// </summary>
    /// <param name="settings">The sampling settings; validated.</param>
    /// <param name="vocabSize">The number of logits per step; at least 1.</param>
    /// <param name="rejectionDraws">At least 0.</param>
    /// <exception cref="ArgumentOutOfRangeException">A setting or an argument is out of range.</exception>
    internal LogitSampler(SamplingSettings settings, int vocabSize, int rejectionDraws)
    {
        settings.Validate();
        ArgumentOutOfRangeException.ThrowIfLessThan(vocabSize, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(rejectionDraws);
        Settings = settings;
        VocabSize = vocabSize;
        _rejectionDraws = rejectionDraws;
        _random = new Xoshiro256StarStar(settings.Seed ?? RandomSeed());
    }

    /// <summary>Gets the sampling settings.</summary>
    public SamplingSettings Settings { get; }

    /// <summary>Gets the number of logits per step.</summary>
    public int VocabSize { get; }

    /// <summary>
    /// Gets how many top-p picks without top-k found the nucleus by selection after every draw from the whole
    /// distribution they were allowed fell outside it.
    /// </summary>
    internal long NucleusFallbacks { get; private set; }

    /// <summary>
    /// Picks the next token.
    /// </summary>
    /// <param name="logits">The logits of the next position; exactly <see cref="VocabSize"/> values.</param>
    /// <returns>The token id.</returns>
    /// <exception cref="ArgumentException">
    /// <paramref name="logits"/> has the wrong length, contains NaN or positive infinity (the model
    /// output is broken: failing is better than emitting an arbitrary token), or is negative infinity
    /// everywhere (no token can be chosen). Negative infinity marks a banned token and is allowed.
    /// </exception>
    public int Next(ReadOnlySpan<float> logits)
    {
        if (logits.Length != VocabSize)
        {
            throw new ArgumentException($"Expected {VocabSize} logits but got {logits.Length}.", nameof(logits));
        }

        if (_generatedDistinct.Count == 0)
        {
            return Choose(logits);
        }

        var penalised = ArrayPool<float>.Shared.Rent(VocabSize);
        try
        {
            return Choose(ApplyPenalties(logits, penalised.AsSpan(0, VocabSize)));
        }
        finally
        {
            ArrayPool<float>.Shared.Return(penalised);
        }
    }

    /// <summary>
    /// Records a generated token for the frequency and presence penalties. Call once per generated
    /// token; never for prompt tokens.
    /// </summary>
    /// <param name="token">The token id; in [0, <see cref="VocabSize"/>).</param>
    public void Accept(int token)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(token);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(token, VocabSize);
        if (!Settings.HasPenalties)
        {
            return;
        }

        _counts ??= new int[VocabSize];
        if (_counts[token]++ == 0)
        {
            _generatedDistinct.Add(token);
        }
    }

    /// <summary>
    /// Returns the index of the largest value, the lowest index among equals, in one vectorised pass.
    /// </summary>
    /// <exception cref="ArgumentException">
    /// <paramref name="values"/> is empty, contains NaN or positive infinity, or is negative infinity everywhere.
    /// </exception>
    internal static int ArgMax(ReadOnlySpan<float> values)
    {
        if (values.IsEmpty)
        {
            throw new ArgumentException("The logits are empty.", nameof(values));
        }

        int best;
        float bestValue;
        bool invalid;
        int i;
        var width = Vector<float>.Count;
        if (Vector.IsHardwareAccelerated && values.Length >= 2 * width)
        {
            ref var start = ref MemoryMarshal.GetReference(values);
            var positiveInfinity = new Vector<float>(float.PositiveInfinity);
            var step = new Vector<int>(width);
            var bestValues = Vector.LoadUnsafe(ref start);
            var indices = Vector<int>.Indices;
            var bestIndices = indices;
            var bad = ~Vector.Equals(bestValues, bestValues) | Vector.Equals(bestValues, positiveInfinity);
            var last = values.Length - width;
            for (i = width; i <= last; i += width)
            {
                var current = Vector.LoadUnsafe(ref start, (nuint)i);
                indices += step;
                var greater = Vector.GreaterThan(current, bestValues);
                bestValues = Vector.ConditionalSelect(greater, current, bestValues);
                bestIndices = Vector.ConditionalSelect(greater, indices, bestIndices);
                bad |= ~Vector.Equals(current, current) | Vector.Equals(current, positiveInfinity);
            }

            invalid = bad != Vector<int>.Zero;
            best = bestIndices[0];
            bestValue = bestValues[0];
            for (var lane = 1; lane < width; lane++)
            {
                var value = bestValues[lane];
                var index = bestIndices[lane];
                if (value > bestValue || (value == bestValue && index < best))
                {
                    best = index;
                    bestValue = value;
                }
            }
        }
        else
        {
            best = 0;
            bestValue = values[0];
            invalid = float.IsNaN(bestValue) || float.IsPositiveInfinity(bestValue);
            i = 1;
        }

        for (; i < values.Length; i++)
        {
            var value = values[i];
            invalid |= float.IsNaN(value) || float.IsPositiveInfinity(value);
            if (value > bestValue)
            {
                bestValue = value;
                best = i;
            }
        }

        if (invalid)
        {
            throw new ArgumentException("The logits contain NaN or positive infinity.", nameof(values));
        }

        if (float.IsNegativeInfinity(bestValue))
        {
            throw new ArgumentException("Every logit is negative infinity: no token can be chosen.", nameof(values));
        }

        return best;
    }

    private static ulong RandomSeed()
    {
#pragma warning disable CA5394 // Seeds a sampler, not a secret.
        return unchecked((ulong)Random.Shared.NextInt64(long.MinValue, long.MaxValue));
#pragma warning restore CA5394
    }

    private ReadOnlySpan<float> ApplyPenalties(ReadOnlySpan<float> logits, Span<float> penalised)
    {
        logits.CopyTo(penalised);
        var counts = _counts!;
        foreach (var token in _generatedDistinct)
        {
            penalised[token] -= (Settings.FrequencyPenalty * counts[token]) + Settings.PresencePenalty;
        }

        return penalised;
    }

    private int Choose(ReadOnlySpan<float> values)
    {
        var maxIndex = ArgMax(values);
        if (Settings.IsGreedy)
        {
            return maxIndex;
        }

        var inverseTemperature = 1f / Settings.Temperature;
        if (!float.IsFinite(inverseTemperature))
        {
            return maxIndex; // A temperature so small that it is greedy in all but name.
        }

        var max = values[maxIndex];
        return Settings.TopK > 0 && Settings.TopK < values.Length
            ? SampleTopK(values, max, inverseTemperature)
            : SampleAll(values, max, inverseTemperature);
    }

    /// <summary>Top-k (then top-p over those k): only the k best are scaled and exponentiated.</summary>
    private int SampleTopK(ReadOnlySpan<float> values, float max, float inverseTemperature)
    {
        var k = Settings.TopK;
        var keys = ArrayPool<ulong>.Shared.Rent(k);
        var weights = ArrayPool<float>.Shared.Rent(k);
        try
        {
            var kept = keys.AsSpan(0, k);
            SelectTopK(values, kept);

            // The k ids in id order, each with its weight.
            for (var i = 0; i < k; i++)
            {
                kept[i] = (uint)IdOf(kept[i]);
            }

            kept.Sort();
            var scaled = weights.AsSpan(0, k);
            for (var i = 0; i < k; i++)
            {
                var s = (values[(int)kept[i]] - max) * inverseTemperature;
                scaled[i] = s >= MinScaledLogit ? s : float.NegativeInfinity;
            }

            TensorPrimitives.Exp(scaled, scaled);
            var total = 0d;
            for (var i = 0; i < k; i++)
            {
                kept[i] = NucleusSelection.KeyOf(scaled[i], (int)kept[i]);
                total += scaled[i];
            }

            return DrawAmong(kept, total);
        }
        finally
        {
            ArrayPool<ulong>.Shared.Return(keys);
            ArrayPool<float>.Shared.Return(weights);
        }
    }

    /// <summary>Temperature alone, or with top-p: the softmax over the whole vocabulary, vectorised.</summary>
    private int SampleAll(ReadOnlySpan<float> values, float max, float inverseTemperature)
    {
        var length = values.Length;
        var buffer = ArrayPool<float>.Shared.Rent(length);
        var blocks = (length + SumBlock - 1) / SumBlock;
        var blockSums = ArrayPool<double>.Shared.Rent(blocks);
        try
        {
            var weights = buffer.AsSpan(0, length);
            var sums = blockSums.AsSpan(0, blocks);
            var total = Weigh(values, max, inverseTemperature, weights, sums);
            if (Settings.TopP >= 1f)
            {
                return DrawInIdOrder(weights, sums, total, NucleusCut.All);
            }

            if (Settings.TopP >= MinRejectionTopP)
            {
                // A draw from the whole distribution, kept when it is in the nucleus, is a draw from the nucleus; it is
                // kept with probability the nucleus's share of the mass, at least TopP.
                var target = Settings.TopP * total;
                for (var draw = 0; draw < _rejectionDraws; draw++)
                {
                    var token = DrawInIdOrder(weights, sums, total, NucleusCut.All);
                    if (NucleusMembership.MassAhead(weights, token) < target)
                    {
                        return token;
                    }
                }

                NucleusFallbacks++;
            }

            return SampleNucleus(weights, sums, total);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(buffer);
            ArrayPool<double>.Shared.Return(blockSums);
        }
    }

    /// <summary>
    /// Top-p over the whole vocabulary: when the tokens of at least 1/1024 of the mass (1,024 at the most) reach
    /// <c>TopP</c>, the nucleus is among them; otherwise the radix selection over every weight finds the cut. Either way
    /// the draw walks the kept tokens in id order.
    /// </summary>
    private int SampleNucleus(ReadOnlySpan<float> weights, Span<double> blockSums, double total)
    {
        var target = Settings.TopP * total;
        var keys = ArrayPool<ulong>.Shared.Rent(1024);
        try
        {
            // The heaviest token weighs exp(0) = 1: past a total of 1024 no token has 1/1024 of the mass.
            var heavy = total / 1024;
            if (heavy <= 1d)
            {
                var count = NucleusSelection.GatherHeavier(weights, (float)heavy, ref keys, out var mass);
                if (mass >= target)
                {
                    return DrawAmong(keys.AsSpan(0, count), total);
                }
            }

            var cut = NucleusSelection.Find(weights, target);
            return DrawInIdOrder(weights, blockSums, NucleusSelection.SumKeptBlocks(weights, cut, blockSums, SumBlock), cut);
        }
        finally
        {
            ArrayPool<ulong>.Shared.Return(keys);
        }
    }

    /// <summary>
    /// The draw among candidates (<see cref="NucleusSelection.KeyOf"/>, in id order) that hold the nucleus of
    /// <c>TopP * total</c>: the cut among them, then one uniform number over the kept mass, walking them in id order.
    /// </summary>
    private int DrawAmong(ReadOnlySpan<ulong> candidates, double total)
    {
        var cut = NucleusCut.All;
        if (Settings.TopP < 1f)
        {
            var scratch = ArrayPool<ulong>.Shared.Rent(candidates.Length);
            var histogram = ArrayPool<double>.Shared.Rent(NucleusSelection.HistogramLength);
            try
            {
                cut = NucleusSelection.FindAmong(candidates, Settings.TopP * total, scratch, histogram);
            }
            finally
            {
                ArrayPool<ulong>.Shared.Return(scratch);
                ArrayPool<double>.Shared.Return(histogram);
            }
        }

        var mass = 0d;
        foreach (var key in candidates)
        {
            var weight = NucleusSelection.WeightOf(key);
            if (cut.Keeps(weight, NucleusSelection.IdOf(key)))
            {
                mass += weight;
            }
        }

        var point = _random.NextDouble() * mass;
        var cumulative = 0d;
        var lastKept = -1;
        foreach (var key in candidates)
        {
            var weight = NucleusSelection.WeightOf(key);
            var id = NucleusSelection.IdOf(key);
            if (cut.Keeps(weight, id))
            {
                cumulative += weight;
                lastKept = id;
                if (point < cumulative)
                {
                    return id;
                }
            }
        }

        // Rounding left the point past the last weight: the last token kept.
        return lastKept;
    }

    /// <summary>The draw over the tokens <paramref name="cut"/> keeps, in id order, walking the block sums first.</summary>
    private int DrawInIdOrder(ReadOnlySpan<float> weights, ReadOnlySpan<double> blockSums, double total, NucleusCut cut)
    {
        var point = _random.NextDouble() * total;
        var cumulative = 0d;
        var lastKept = -1;
        for (var b = 0; b < blockSums.Length; b++)
        {
            if (cumulative + blockSums[b] <= point)
            {
                cumulative += blockSums[b];
                continue;
            }

            var end = Math.Min((b + 1) * SumBlock, weights.Length);
            for (var i = b * SumBlock; i < end; i++)
            {
                var weight = weights[i];
                if (cut.Keeps(weight, i))
                {
                    cumulative += weight;
                    lastKept = i;
                    if (point < cumulative)
                    {
                        return i;
                    }
                }
            }
        }

        // Rounding left the point past the last weight: the last token kept.
        if (lastKept < 0)
        {
            lastKept = weights.Length - 1;
        }

        while (!cut.Keeps(weights[lastKept], lastKept))
        {
            lastKept--;
        }

        return lastKept;
    }

    /// <summary>
    /// Writes each token's weight <c>exp((value - max) * inverseTemperature)</c> (0 where that underflows) and each
    /// block's sum in double precision, <see cref="WeighChunk"/> tokens at a time so that the scale, exp and sums of a
    /// chunk run while it is in the first-level cache; returns the whole mass.
    /// </summary>
    private static double Weigh(ReadOnlySpan<float> values, float max, float inverseTemperature, Span<float> weights, Span<double> blockSums)
    {
        var total = 0d;
        for (var start = 0; start < values.Length; start += WeighChunk)
        {
            var length = Math.Min(WeighChunk, values.Length - start);
            var chunk = weights.Slice(start, length);
            ScaleForExp(values.Slice(start, length), max, inverseTemperature, chunk);
            TensorPrimitives.Exp(chunk, chunk);
            for (var offset = 0; offset < length; offset += SumBlock)
            {
                var sum = NucleusMembership.Sum(chunk.Slice(offset, Math.Min(SumBlock, length - offset)));
                blockSums[(start + offset) / SumBlock] = sum;
                total += sum;
            }
        }

        return total;
    }

    /// <summary>
    /// Writes <c>(value - max) * inverseTemperature</c>, or negative infinity where that underflows exp, so that
    /// exp gives each token's weight (0 for the banned and the negligible).
    /// </summary>
    private static void ScaleForExp(ReadOnlySpan<float> values, float max, float inverseTemperature, Span<float> scaled)
    {
        var i = 0;
        if (Vector.IsHardwareAccelerated && values.Length >= Vector<float>.Count)
        {
            ref var source = ref MemoryMarshal.GetReference(values);
            ref var target = ref MemoryMarshal.GetReference(scaled);
            var maxes = new Vector<float>(max);
            var factor = new Vector<float>(inverseTemperature);
            var floor = new Vector<float>(MinScaledLogit);
            var negativeInfinity = new Vector<float>(float.NegativeInfinity);
            var last = values.Length - Vector<float>.Count;
            for (; i <= last; i += Vector<float>.Count)
            {
                var s = (Vector.LoadUnsafe(ref source, (nuint)i) - maxes) * factor;
                Vector.ConditionalSelect(Vector.GreaterThanOrEqual(s, floor), s, negativeInfinity).StoreUnsafe(ref target, (nuint)i);
            }
        }

        for (; i < values.Length; i++)
        {
            var s = (values[i] - max) * inverseTemperature;
            scaled[i] = s >= MinScaledLogit ? s : float.NegativeInfinity;
        }
    }

    /// <summary>
    /// Fills <paramref name="heap"/> with the keys of the <c>heap.Length</c> greatest values (lower id first among
    /// equals), in heap order (the worst kept, the greatest key, at the root), in one scan: a vector of values none of
    /// which beats the root is passed over with one comparison.
    /// </summary>
    private static void SelectTopK(ReadOnlySpan<float> values, Span<ulong> heap)
    {
        var k = heap.Length;
        for (var i = 0; i < k; i++)
        {
            heap[i] = KeyOf(values[i], i);
        }

        for (var i = (k / 2) - 1; i >= 0; i--)
        {
            SiftDown(heap, i);
        }

        // Ids rise along the scan, so a later token beats the root only with a strictly greater value.
        var rootValue = values[IdOf(heap[0])];
        var index = k;
        var width = Vector<float>.Count;
        if (Vector.IsHardwareAccelerated && values.Length - k >= width)
        {
            ref var start = ref MemoryMarshal.GetReference(values);
            var thresholds = new Vector<float>(rootValue);
            var last = values.Length - width;
            for (; index <= last; index += width)
            {
                if (!Vector.GreaterThanAny(Vector.LoadUnsafe(ref start, (nuint)index), thresholds))
                {
                    continue;
                }

                for (var lane = index; lane < index + width; lane++)
                {
                    if (values[lane] > rootValue)
                    {
                        heap[0] = KeyOf(values[lane], lane);
                        SiftDown(heap, 0);
                        rootValue = values[IdOf(heap[0])];
                    }
                }

                thresholds = new Vector<float>(rootValue);
            }
        }

        for (; index < values.Length; index++)
        {
            if (values[index] > rootValue)
            {
                heap[0] = KeyOf(values[index], index);
                SiftDown(heap, 0);
                rootValue = values[IdOf(heap[0])];
            }
        }
    }

    /// <summary>Restores the heap below <paramref name="i"/>: every parent's key is at least its children's.</summary>
    private static void SiftDown(Span<ulong> heap, int i)
    {
        var item = heap[i];
        while (true)
        {
            var child = (2 * i) + 1;
            if (child >= heap.Length)
            {
                break;
            }

            if (child + 1 < heap.Length && heap[child + 1] > heap[child])
            {
                child++;
            }

            if (heap[child] <= item)
            {
                break;
            }

            heap[i] = heap[child];
            i = child;
        }

        heap[i] = item;
    }

    /// <summary>
    /// A sort key in the order "greater logit, then lower id" (ascending keys): the logit's bits made order-preserving
    /// and inverted in the high half, the id in the low half. Sorting plain integers allocates nothing, where a
    /// comparer would.
    /// </summary>
    private static ulong KeyOf(float logit, int id)
    {
        var bits = BitConverter.SingleToUInt32Bits(logit + 0f); // -0 becomes +0: equal logits, ordered by id.
        var ascending = (bits & 0x8000_0000u) != 0 ? ~bits : bits | 0x8000_0000u;
        return ((ulong)~ascending << 32) | (uint)id;
    }

    private static int IdOf(ulong key) => (int)(uint)key;
}
