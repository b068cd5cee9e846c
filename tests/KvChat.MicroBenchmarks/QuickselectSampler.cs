using System.Buffers;
using System.Numerics;
using System.Runtime.InteropServices;
using KvChat;

namespace KvChat.MicroBenchmarks;

/// <summary>
/// The sampler this project shipped before <see cref="LogitSampler"/> stopped scaling with the vocabulary, kept
/// verbatim (but for its name) so the micro-benchmarks compare the two in one run. Not used by the library.
/// </summary>
/// <remarks>
/// What it did: a scalar pass that scales every logit and drops those that underflow, quickselect for top-k over all
/// the survivors, scalar exp over them, and partitions for top-p over them all.
/// </remarks>
internal sealed class QuickselectSampler
{
    // exp(x) is below the smallest normal float for x < -87.3: such tokens weigh nothing next to
    // the most likely token, whose weight is exp(0) = 1.
    private const float MinScaledLogit = -87.3f;

    private readonly List<int> _generatedDistinct = [];
    private Xoshiro256StarStar _random;
    private int[]? _counts;
    private float[]? _penalised;

    /// <summary>
    /// Creates a sampler.
    /// </summary>
    /// <param name="settings">The sampling settings; validated.</param>
    /// <param name="vocabSize">The number of logits per step; at least 1.</param>
    /// <exception cref="ArgumentOutOfRangeException">A setting or <paramref name="vocabSize"/> is out of range.</exception>
    public QuickselectSampler(SamplingSettings settings, int vocabSize)
    {
        settings.Validate();
        ArgumentOutOfRangeException.ThrowIfLessThan(vocabSize, 1);
        Settings = settings;
        VocabSize = vocabSize;
        _random = new Xoshiro256StarStar(settings.Seed ?? RandomSeed());
    }

    /// <summary>Gets the sampling settings.</summary>
    public SamplingSettings Settings { get; }

    /// <summary>Gets the number of logits per step.</summary>
    public int VocabSize { get; }

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

        var values = _generatedDistinct.Count > 0 ? ApplyPenalties(logits) : logits;
        return Settings.IsGreedy ? ArgMax(values) : Sample(values);
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

    private ReadOnlySpan<float> ApplyPenalties(ReadOnlySpan<float> logits)
    {
        _penalised ??= new float[VocabSize];
        logits.CopyTo(_penalised);
        var counts = _counts!;
        foreach (var token in _generatedDistinct)
        {
            _penalised[token] -= (Settings.FrequencyPenalty * counts[token]) + Settings.PresencePenalty;
        }

        return _penalised;
    }

    private int Sample(ReadOnlySpan<float> values)
    {
        var maxIndex = ArgMax(values);
        var inverseTemperature = 1f / Settings.Temperature;
        if (!float.IsFinite(inverseTemperature))
        {
            return maxIndex; // A temperature so small that it is greedy in all but name.
        }

        var max = values[maxIndex];
        var weights = ArrayPool<float>.Shared.Rent(values.Length);
        var ids = ArrayPool<int>.Shared.Rent(values.Length);
        try
        {
            var count = 0;
            for (var i = 0; i < values.Length; i++)
            {
                var scaled = (values[i] - max) * inverseTemperature;
                if (scaled >= MinScaledLogit)
                {
                    weights[count] = scaled;
                    ids[count] = i;
                    count++;
                }
            }

            if (Settings.TopK > 0 && Settings.TopK < count)
            {
                SelectTopK(weights, ids, count, Settings.TopK);
                count = Settings.TopK;
            }

            var total = 0d;
            for (var i = 0; i < count; i++)
            {
                var weight = MathF.Exp(weights[i]);
                weights[i] = weight;
                total += weight;
            }

            if (Settings.TopP < 1f)
            {
                count = SelectNucleus(weights, ids, count, Settings.TopP * total);
                total = Sum(weights, 0, count);
            }

            var target = _random.NextDouble() * total;
            var cumulative = 0d;
            for (var i = 0; i < count; i++)
            {
                cumulative += weights[i];
                if (target < cumulative)
                {
                    return ids[i];
                }
            }

            return ids[count - 1];
        }
        finally
        {
            ArrayPool<float>.Shared.Return(weights);
            ArrayPool<int>.Shared.Return(ids);
        }
    }

    /// <summary>Moves the <paramref name="k"/> greatest of <c>[0, count)</c> to <c>[0, k)</c>.</summary>
    private static void SelectTopK(float[] weights, int[] ids, int count, int k)
    {
        var lo = 0;
        var hi = count;
        while (hi - lo > 1)
        {
            var p = Partition(weights, ids, lo, hi);
            if (p == k || p == k - 1)
            {
                return;
            }

            if (p > k)
            {
                hi = p;
            }
            else
            {
                lo = p + 1;
            }
        }
    }

    /// <summary>
    /// Moves the smallest set of greatest weights whose sum reaches <paramref name="target"/> to the
    /// front and returns its size (at least 1).
    /// </summary>
    private static int SelectNucleus(float[] weights, int[] ids, int count, double target)
    {
        // Invariant: [0, lo) holds the greatest weights, with mass `below` < target; the answer is in (lo, hi].
        var lo = 0;
        var hi = count;
        var below = 0d;
        while (hi - lo > 1)
        {
            var p = Partition(weights, ids, lo, hi);
            var greater = Sum(weights, lo, p);
            if (below + greater >= target)
            {
                hi = p;
                continue;
            }

            below += greater + weights[p];
            if (below >= target)
            {
                return p + 1;
            }

            lo = p + 1;
        }

        return hi;
    }

    private static double Sum(float[] weights, int start, int end)
    {
        var sum = 0d;
        for (var i = start; i < end; i++)
        {
            sum += weights[i];
        }

        return sum;
    }

    /// <summary>
    /// Partitions <c>[lo, hi)</c> around a median-of-three pivot, in the order "greater weight, then
    /// lower id first"; returns the pivot's final index: greater items before it, lesser after.
    /// </summary>
    private static int Partition(float[] weights, int[] ids, int lo, int hi)
    {
        var last = hi - 1;
        var mid = lo + ((hi - lo) / 2);
        var pivot = MedianOfThree(weights, ids, lo, mid, last);
        Swap(weights, ids, pivot, last);
        var pivotWeight = weights[last];
        var pivotId = ids[last];
        var store = lo;
        for (var i = lo; i < last; i++)
        {
            if (Precedes(weights[i], ids[i], pivotWeight, pivotId))
            {
                Swap(weights, ids, i, store);
                store++;
            }
        }

        Swap(weights, ids, store, last);
        return store;
    }

    private static int MedianOfThree(float[] weights, int[] ids, int a, int b, int c)
    {
        var ab = Precedes(weights[a], ids[a], weights[b], ids[b]);
        var bc = Precedes(weights[b], ids[b], weights[c], ids[c]);
        if (ab == bc)
        {
            return b;
        }

        var ac = Precedes(weights[a], ids[a], weights[c], ids[c]);
        return ab == ac ? c : a;
    }

    private static bool Precedes(float weight, int id, float otherWeight, int otherId) =>
        weight > otherWeight || (weight == otherWeight && id < otherId);

    private static void Swap(float[] weights, int[] ids, int i, int j)
    {
        (weights[i], weights[j]) = (weights[j], weights[i]);
        (ids[i], ids[j]) = (ids[j], ids[i]);
    }
}
