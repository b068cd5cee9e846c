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
/// none under a condition on each element, and no .NET library samples top-p over raw logits. The mass ahead is
/// summed by <see cref="NucleusSelection"/>'s own kept-mass sum, in double precision, so that the two agree on which
/// tokens are kept but for a token whose mass ahead lies within rounding error (about 1e-16 of the whole) of the
/// target.
/// </para>
/// </remarks>
internal static class NucleusMembership
{
    /// <summary>
    /// The mass ahead of token <paramref name="id"/> in the order "greater weight, then lower id": every weight greater
    /// than its own, and its own weight once for each token of the same weight and a lower id. That is the mass of the
    /// cut at its weight that keeps the ties below its id (<see cref="NucleusCut.Keeps"/>, summed by
    /// <see cref="NucleusSelection.SumKept"/>), so membership and selection apply one rule.
    /// </summary>
    /// <param name="weights">The weights, indexed by id; all at least 0.</param>
    /// <param name="id">The token; its weight is positive.</param>
    public static double MassAhead(ReadOnlySpan<float> weights, int id)
        => NucleusSelection.SumKept(weights, 0, new NucleusCut(weights[id], id - 1));

    /// <summary>
    /// The sum of a block of weights in double precision, vectorised as <see cref="NucleusSelection.SumKept"/> is: the
    /// same value, to the bit, as it gives for a block under <see cref="NucleusCut.All"/>.
    /// </summary>
    public static double Sum(ReadOnlySpan<float> weights)
    {
        var i = 0;
        var sum = 0d;
        ref var start = ref MemoryMarshal.GetReference(weights);
        if (Vector512.IsHardwareAccelerated && weights.Length >= Vector512<float>.Count)
        {
            var accumulator = Vector512<double>.Zero;
            var last = weights.Length - Vector512<float>.Count;
            for (; i <= last; i += Vector512<float>.Count)
            {
                var (low, high) = Vector512.Widen(Vector512.LoadUnsafe(ref start, (nuint)i));
                accumulator += low + high;
            }

            sum = Vector512.Sum(accumulator);
        }
        else if (Vector.IsHardwareAccelerated && weights.Length >= Vector<float>.Count)
        {
            var accumulator = Vector<double>.Zero;
            var last = weights.Length - Vector<float>.Count;
            for (; i <= last; i += Vector<float>.Count)
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
}
