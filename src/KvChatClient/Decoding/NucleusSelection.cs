using System.Buffers;
using System.Diagnostics;
using System.Numerics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace KvChat;

/// <summary>
/// Finds top-p's cut (<see cref="NucleusCut"/>) without a sort: a radix selection on the bits of the weights (for
/// positive floats their order is the weights' order) that sums each bucket's mass where a radix sort would count.
/// </summary>
/// <remarks>
/// <para>
/// A positive float's 31 bits are read as three digits, most significant first: 11 bits (the exponent and 3 bits of
/// mantissa: buckets an eighth of a binary order wide), then 10, then 10. Each level sums the candidates' weights per
/// digit, walks the digits from the heaviest down until the mass above and in a digit reaches the target, keeps only
/// the candidates of that digit, and takes the mass above off the target. After the third level every candidate left
/// has one weight, the threshold, and the lowest ids among them are taken until the target is reached: the nucleus in
/// the order "greater weight, then lower id", cut where its mass first reaches the target, found in linear time.
/// </para>
/// <para>
/// Over the whole vocabulary (<see cref="Find"/>) the first level is one scalar pass into four interleaved histograms
/// (so that a run of tokens in one bucket does not wait on its own additions), then one vectorised scan gathers only
/// the tokens of the chosen bucket; the later levels see those few. The buffers come from the shared array pool: nothing
/// is allocated per call once the pool holds them.
/// </para>
/// <para>
/// Written here because no library serves it: <c>System.Numerics.Tensors.TensorPrimitives</c> gives the vectorised
/// max, exp and sums the sampler uses but no selection by mass, and a sort (<c>MemoryExtensions.Sort</c>) is
/// O(n log n) over the kept set: tens of milliseconds when a flat distribution keeps most of 262,144 tokens.
/// </para>
/// </remarks>
internal static class NucleusSelection
{
    /// <summary>The length of the histogram buffer <see cref="FindAmong"/> needs.</summary>
    public const int HistogramLength = 4 * FirstDigits;

    private const int FirstShift = 20;
    private const int FirstDigits = 1 << 11;
    private const int LaterDigits = 1 << 10;
    private const int Levels = 3;

    // From this many tokens the first level sums into four interleaved histograms.
    private const int InterleavedFrom = 16 * FirstDigits;

    /// <summary>
    /// A candidate: the weight's bits in the high half (positive weights: ordered as the weights), the id in the low half.
    /// </summary>
    public static ulong KeyOf(float weight, int id) => ((ulong)BitConverter.SingleToUInt32Bits(weight) << 32) | (uint)id;

    /// <summary>The weight of a candidate made by <see cref="KeyOf"/>.</summary>
    public static float WeightOf(ulong key) => BitConverter.UInt32BitsToSingle((uint)(key >> 32));

    /// <summary>The id of a candidate made by <see cref="KeyOf"/>.</summary>
    public static int IdOf(ulong key) => (int)(uint)key;

    /// <summary>
    /// The cut over a whole vocabulary's weights (indexed by id; all at least 0, some positive) for the given target mass.
    /// </summary>
    public static NucleusCut Find(ReadOnlySpan<float> weights, double target)
    {
        var histogram = ArrayPool<double>.Shared.Rent(HistogramLength);
        var candidates = ArrayPool<ulong>.Shared.Rent(1024);
        try
        {
            var digits = histogram.AsSpan(0, FirstDigits);
            FirstLevel(weights, histogram.AsSpan(0, HistogramLength));
            var (digit, above) = Choose(digits, target);
            var count = Gather(weights, new InFirstDigit(digit), ref candidates);
            return Finish(candidates.AsSpan(0, count), target - above, histogram);
        }
        finally
        {
            ArrayPool<double>.Shared.Return(histogram);
            ArrayPool<ulong>.Shared.Return(candidates);
        }
    }

    /// <summary>
    /// The cut among candidates (<see cref="KeyOf"/>, in id order, some of positive weight) for the given target mass.
    /// </summary>
    /// <param name="candidates">The candidates; left as they are.</param>
    /// <param name="target">The mass the nucleus must reach.</param>
    /// <param name="scratch">Room for as many keys as there are candidates.</param>
    /// <param name="histogram">At least <see cref="HistogramLength"/> values.</param>
    public static NucleusCut FindAmong(ReadOnlySpan<ulong> candidates, double target, Span<ulong> scratch, Span<double> histogram)
    {
        var digits = histogram[..FirstDigits];
        digits.Clear();
        foreach (var key in candidates)
        {
            digits[Digit(key, 0)] += WeightOf(key);
        }

        var (digit, above) = Choose(digits, target);
        var count = 0;
        foreach (var key in candidates)
        {
            if (Digit(key, 0) == digit && WeightOf(key) > 0f)
            {
                scratch[count++] = key;
            }
        }

        return Finish(scratch[..count], target - above, histogram);
    }

    /// <summary>
    /// Collects, in id order, the candidates of weight at least <paramref name="threshold"/> (greater than 0), growing
    /// the pooled buffer as needed; returns their count, and their mass in <paramref name="mass"/>.
    /// </summary>
    public static int GatherHeavier(ReadOnlySpan<float> weights, float threshold, ref ulong[] keys, out double mass)
    {
        var count = Gather(weights, new AtLeast(threshold), ref keys);
        mass = 0d;
        foreach (var key in keys.AsSpan(0, count))
        {
            mass += WeightOf(key);
        }

        return count;
    }

    /// <summary>
    /// Writes the mass <paramref name="cut"/> keeps in each block of <paramref name="blockSize"/> tokens (vectorised, in
    /// double precision, so that a token-by-token walk of a block agrees with its sum to about 1e-16) and returns the sum.
    /// </summary>
    public static double SumKeptBlocks(ReadOnlySpan<float> weights, NucleusCut cut, Span<double> blockSums, int blockSize)
    {
        var total = 0d;
        for (var b = 0; b < blockSums.Length; b++)
        {
            var start = b * blockSize;
            var sum = SumKept(weights.Slice(start, Math.Min(blockSize, weights.Length - start)), start, cut);
            blockSums[b] = sum;
            total += sum;
        }

        return total;
    }

    /// <summary>
    /// The mass <paramref name="cut"/> keeps among <paramref name="weights"/>, whose first token is id
    /// <paramref name="firstId"/>: vectorised (512-bit vectors where the CPU has them, where <see cref="Vector{T}"/> stays
    /// 256 bits wide, else <see cref="Vector{T}"/>), in double precision.
    /// </summary>
    public static double SumKept(ReadOnlySpan<float> weights, int firstId, NucleusCut cut)
    {
        var i = 0;
        var sum = 0d;
        ref var start = ref MemoryMarshal.GetReference(weights);
        if (Vector512.IsHardwareAccelerated && weights.Length >= Vector512<float>.Count)
        {
            var threshold = Vector512.Create(cut.Threshold);
            var lastTie = Vector512.Create(cut.LastTie);
            var ids = Vector512<int>.Indices + Vector512.Create(firstId);
            var step = Vector512.Create(Vector512<float>.Count);
            var accumulator = Vector512<double>.Zero;
            var last = weights.Length - Vector512<float>.Count;
            for (; i <= last; i += Vector512<float>.Count)
            {
                var current = Vector512.LoadUnsafe(ref start, (nuint)i);
                var keep = Vector512.GreaterThan(current, threshold) | (Vector512.Equals(current, threshold) & Vector512.LessThanOrEqual(ids, lastTie).AsSingle());
                var (low, high) = Vector512.Widen(Vector512.ConditionalSelect(keep, current, Vector512<float>.Zero));
                accumulator += low + high;
                ids += step;
            }

            sum = Vector512.Sum(accumulator);
        }
        else if (Vector.IsHardwareAccelerated && weights.Length >= Vector<float>.Count)
        {
            var width = Vector<float>.Count;
            var threshold = new Vector<float>(cut.Threshold);
            var lastTie = new Vector<int>(cut.LastTie);
            var ids = Vector<int>.Indices + new Vector<int>(firstId);
            var step = new Vector<int>(width);
            var accumulator = Vector<double>.Zero;
            var last = weights.Length - width;
            for (; i <= last; i += width)
            {
                var current = Vector.LoadUnsafe(ref start, (nuint)i);
                var keep = Vector.GreaterThan(current, threshold) | (Vector.Equals(current, threshold) & Vector.LessThanOrEqual(ids, lastTie));
                Vector.Widen(Vector.ConditionalSelect(keep, current, Vector<float>.Zero), out var low, out var high);
                accumulator += low + high;
                ids += step;
            }

            sum = Vector.Sum(accumulator);
        }

        for (; i < weights.Length; i++)
        {
            if (cut.Keeps(weights[i], firstId + i))
            {
                sum += weights[i];
            }
        }

        return sum;
    }

    /// <summary>
    /// The first digit's mass over the whole vocabulary, in the first histogram: past <see cref="InterleavedFrom"/>
    /// tokens, summed in four interleaved histograms, then into the first.
    /// </summary>
    private static void FirstLevel(ReadOnlySpan<float> weights, Span<double> histogram)
    {
        var i = 0;
        if (weights.Length < InterleavedFrom)
        {
            // A small vocabulary: clearing and summing four histograms would cost more than the tokens.
            histogram[..FirstDigits].Clear();
            for (; i < weights.Length; i++)
            {
                histogram[FirstDigit(weights[i])] += weights[i];
            }

            return;
        }

        histogram.Clear();
        for (; i + 4 <= weights.Length; i += 4)
        {
            var a = weights[i];
            var b = weights[i + 1];
            var c = weights[i + 2];
            var d = weights[i + 3];
            histogram[FirstDigit(a)] += a;
            histogram[FirstDigits + FirstDigit(b)] += b;
            histogram[(2 * FirstDigits) + FirstDigit(c)] += c;
            histogram[(3 * FirstDigits) + FirstDigit(d)] += d;
        }

        for (; i < weights.Length; i++)
        {
            histogram[FirstDigit(weights[i])] += weights[i];
        }

        for (var digit = 0; digit < FirstDigits; digit++)
        {
            histogram[digit] += histogram[FirstDigits + digit] + histogram[(2 * FirstDigits) + digit] + histogram[(3 * FirstDigits) + digit];
        }
    }

    /// <summary>Collects, in id order, the tokens <paramref name="filter"/> matches; one vector comparison passes over most.</summary>
    private static int Gather<TFilter>(ReadOnlySpan<float> weights, TFilter filter, ref ulong[] keys)
        where TFilter : struct, IWeightFilter
    {
        var count = 0;
        var i = 0;
        var width = Vector<float>.Count;
        if (Vector.IsHardwareAccelerated && weights.Length >= width)
        {
            ref var start = ref MemoryMarshal.GetReference(weights);
            var last = weights.Length - width;
            for (; i <= last; i += width)
            {
                if (!filter.Any(Vector.LoadUnsafe(ref start, (nuint)i)))
                {
                    continue;
                }

                for (var lane = i; lane < i + width; lane++)
                {
                    if (filter.Matches(weights[lane]))
                    {
                        Add(ref keys, ref count, KeyOf(weights[lane], lane));
                    }
                }
            }
        }

        for (; i < weights.Length; i++)
        {
            if (filter.Matches(weights[i]))
            {
                Add(ref keys, ref count, KeyOf(weights[i], i));
            }
        }

        return count;
    }

    /// <summary>The later levels over candidates that share their first digit, then the ties at the threshold.</summary>
    private static NucleusCut Finish(Span<ulong> candidates, double target, Span<double> histogram)
    {
        Debug.Assert(!candidates.IsEmpty, "The chosen digit always holds positive mass.");
        for (var level = 1; level < Levels; level++)
        {
            var digits = histogram[..LaterDigits];
            digits.Clear();
            foreach (var key in candidates)
            {
                digits[Digit(key, level)] += WeightOf(key);
            }

            var (digit, above) = Choose(digits, target);
            target -= above;
            var count = 0;
            foreach (var key in candidates)
            {
                if (Digit(key, level) == digit)
                {
                    candidates[count++] = key;
                }
            }

            candidates = candidates[..count];
        }

        // One weight left: the lowest ids first, until the target is reached (all of them when rounding never reaches it).
        var mass = 0d;
        foreach (var key in candidates)
        {
            mass += WeightOf(key);
            if (mass >= target)
            {
                return new NucleusCut(WeightOf(key), IdOf(key));
            }
        }

        return new NucleusCut(WeightOf(candidates[^1]), IdOf(candidates[^1]));
    }

    /// <summary>
    /// The heaviest digit whose mass, with all the digits above it, reaches <paramref name="target"/>, and the mass of
    /// the digits above it; when rounding leaves the whole short of the target, the lightest digit of positive mass.
    /// </summary>
    private static (int Digit, double Above) Choose(Span<double> digits, double target)
    {
        var above = 0d;
        var lowest = -1;
        for (var digit = digits.Length - 1; digit >= 0; digit--)
        {
            var mass = digits[digit];
            if (mass > 0d)
            {
                if (above + mass >= target)
                {
                    return (digit, above);
                }

                above += mass;
                lowest = digit;
            }
        }

        Debug.Assert(lowest >= 0, "Some candidate has positive weight.");
        return (lowest, above - digits[lowest]);
    }

    private static int FirstDigit(float weight) => (int)(BitConverter.SingleToUInt32Bits(weight) >> FirstShift);

    private static int Digit(ulong key, int level)
    {
        var bits = (uint)(key >> 32);
        return level switch
        {
            0 => (int)(bits >> FirstShift),
            1 => (int)((bits >> 10) & (LaterDigits - 1)),
            _ => (int)(bits & (LaterDigits - 1)),
        };
    }

    private static void Add(ref ulong[] keys, ref int count, ulong key)
    {
        if (count == keys.Length)
        {
            var larger = ArrayPool<ulong>.Shared.Rent(keys.Length * 2);
            keys.AsSpan(0, count).CopyTo(larger);
            ArrayPool<ulong>.Shared.Return(keys);
            keys = larger;
        }

        keys[count++] = key;
    }

    /// <summary>Which weights a gather collects: <see cref="Any"/> rules a vector out at once, <see cref="Matches"/> decides.</summary>
    private interface IWeightFilter
    {
        bool Any(Vector<float> weights);

        bool Matches(float weight);
    }

    /// <summary>The weights at least a threshold (greater than 0).</summary>
    private readonly struct AtLeast(float threshold) : IWeightFilter
    {
        public bool Any(Vector<float> weights) => Vector.GreaterThanOrEqualAny(weights, new Vector<float>(threshold));

        public bool Matches(float weight) => weight >= threshold;
    }

    /// <summary>The positive weights whose first digit is the given one.</summary>
    private readonly struct InFirstDigit(int digit) : IWeightFilter
    {
        public bool Any(Vector<float> weights) =>
            Vector.EqualsAny(Vector.ShiftRightLogical(Vector.AsVectorUInt32(weights), FirstShift), new Vector<uint>((uint)digit));

        public bool Matches(float weight) => FirstDigit(weight) == digit && weight > 0f;
    }
}
