using System.Numerics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace KvChat;

/// <summary>
/// Whether one token is in top-p's nucleus, in one vectorised pass over the weights, without finding the nucleus: the
/// token is kept exactly when the mass ahead of it in the order "greater weight, then lower id" is below the target
/// (the nucleus is the shortest prefix of that order whose mass reaches the target).
/// </summary>
/// <remarks>
/// <para>
/// The sampler uses it to sample top-p by rejection: a token drawn from the whole distribution and kept only if it is
/// in the nucleus is distributed as the nucleus renormalised (the whole distribution conditioned on the nucleus), and
/// a draw is kept with probability the nucleus's share of the mass, at least <c>TopP</c>. One pass per draw costs far
/// less than finding the cut (<see cref="NucleusSelection"/>) when a flat distribution keeps most of the vocabulary.
/// </para>
/// <para>
/// Written here because no library serves it: <c>System.Numerics.Tensors.TensorPrimitives</c> has vectorised sums but
/// none under a condition on each element, and no .NET library samples top-p over raw logits. The masses are summed
/// in double precision, as <see cref="NucleusSelection"/> sums them, so that the two agree on which tokens are kept
/// but for a token whose mass ahead lies within rounding error (about 1e-16 of the whole) of the target.
/// </para>
/// </remarks>
internal static class NucleusMembership
{
    /// <summary>
    /// The mass ahead of token <paramref name="id"/> in the order "greater weight, then lower id": every weight greater
    /// than its own, and its own weight once for each token of the same weight and a lower id.
    /// </summary>
    /// <param name="weights">The weights, indexed by id; all at least 0.</param>
    /// <param name="id">The token; its weight is positive.</param>
    public static double MassAhead(ReadOnlySpan<float> weights, int id)
    {
        var weight = weights[id];
        return SumWhere(weights[..id], new AtLeast(weight)) + SumWhere(weights[id..], new Greater(weight));
    }

    /// <summary>
    /// The sum of a block of weights in double precision, vectorised: the same value, to the bit, as
    /// <see cref="NucleusSelection.SumKeptBlocks"/> gives for a block under <see cref="NucleusCut.All"/>.
    /// </summary>
    public static double Sum(ReadOnlySpan<float> weights)
    {
        var i = 0;
        var sum = 0d;
        var width = Vector<float>.Count;
        if (Vector.IsHardwareAccelerated && weights.Length >= width)
        {
            ref var start = ref MemoryMarshal.GetReference(weights);
            var accumulator = Vector<double>.Zero;
            var last = weights.Length - width;
            for (; i <= last; i += width)
            {
                Vector.Widen(Vector.LoadUnsafe(ref start, (nuint)i), out var low, out var high);
                accumulator += low + high;
            }

            sum = Vector.Sum(accumulator);
        }

        for (; i < weights.Length; i++)
        {
            sum += weights[i];
        }

        return sum;
    }

    /// <summary>
    /// The sum of the weights <paramref name="condition"/> takes: 512-bit vectors where the CPU has them (where
    /// <see cref="Vector{T}"/> stays 256 bits wide), else <see cref="Vector{T}"/>, widened to double precision.
    /// </summary>
    private static double SumWhere<TCondition>(ReadOnlySpan<float> weights, TCondition condition)
        where TCondition : struct, ICondition
    {
        var i = 0;
        var sum = 0d;
        var width = Vector<float>.Count;
        ref var start = ref MemoryMarshal.GetReference(weights);
        if (Vector512.IsHardwareAccelerated && weights.Length >= Vector512<float>.Count)
        {
            var lows = Vector512<double>.Zero;
            var highs = Vector512<double>.Zero;
            var last = weights.Length - Vector512<float>.Count;
            for (; i <= last; i += Vector512<float>.Count)
            {
                var current = Vector512.LoadUnsafe(ref start, (nuint)i);
                var (low, high) = Vector512.Widen(Vector512.ConditionalSelect(condition.Holds(current), current, Vector512<float>.Zero));
                lows += low;
                highs += high;
            }

            sum = Vector512.Sum(lows + highs);
        }
        else if (Vector.IsHardwareAccelerated && weights.Length >= width)
        {
            var lows = Vector<double>.Zero;
            var highs = Vector<double>.Zero;
            var last = weights.Length - width;
            for (; i <= last; i += width)
            {
                var current = Vector.LoadUnsafe(ref start, (nuint)i);
                Vector.Widen(Vector.ConditionalSelect(condition.Holds(current), current, Vector<float>.Zero), out var low, out var high);
                lows += low;
                highs += high;
            }

            sum = Vector.Sum(lows + highs);
        }

        for (; i < weights.Length; i++)
        {
            if (condition.Holds(weights[i]))
            {
                sum += weights[i];
            }
        }

        return sum;
    }

    /// <summary>Which weights a sum takes, for a vector of them and for one.</summary>
    private interface ICondition
    {
        Vector512<float> Holds(Vector512<float> weights);

        Vector<int> Holds(Vector<float> weights);

        bool Holds(float weight);
    }

    /// <summary>The weights at least the given one: ahead of a token among those of lower id.</summary>
    private readonly struct AtLeast(float weight) : ICondition
    {
        public Vector512<float> Holds(Vector512<float> weights) => Vector512.GreaterThanOrEqual(weights, Vector512.Create(weight));

        public Vector<int> Holds(Vector<float> weights) => Vector.GreaterThanOrEqual(weights, new Vector<float>(weight));

        public bool Holds(float other) => other >= weight;
    }

    /// <summary>The weights greater than the given one: ahead of a token among those of its id and above.</summary>
    private readonly struct Greater(float weight) : ICondition
    {
        public Vector512<float> Holds(Vector512<float> weights) => Vector512.GreaterThan(weights, Vector512.Create(weight));

        public Vector<int> Holds(Vector<float> weights) => Vector.GreaterThan(weights, new Vector<float>(weight));

        public bool Holds(float other) => other > weight;
    }
}
