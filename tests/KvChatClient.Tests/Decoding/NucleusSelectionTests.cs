using KvChat;
using Xunit;

namespace KvChatClient.Tests.Decoding;

/// <summary>The radix selection of top-p's cut against a sort of the same weights.</summary>
public sealed class NucleusSelectionTests
{
    /// <summary>The cut by sorting: "greater weight, then lower id", the shortest prefix whose mass reaches the target.</summary>
    private static NucleusCut SortedCut(float[] weights, double target)
    {
        var order = Enumerable.Range(0, weights.Length).Where(i => weights[i] > 0).OrderByDescending(i => weights[i]).ThenBy(i => i).ToList();
        var mass = 0d;
        foreach (var id in order)
        {
            mass += weights[id];
            if (mass >= target)
            {
                return new NucleusCut(weights[id], id);
            }
        }

        return new NucleusCut(weights[order[^1]], order[^1]);
    }

    private static NucleusCut CutAmong(float[] weights, double target)
    {
        var candidates = Enumerable.Range(0, weights.Length).Select(i => NucleusSelection.KeyOf(weights[i], i)).ToArray();
        return NucleusSelection.FindAmong(candidates, target, new ulong[candidates.Length], new double[NucleusSelection.HistogramLength]);
    }

    /// <summary>Weights of several shapes: spread over many orders of magnitude, nearly equal, few distinct (ties), some zero.</summary>
    public static TheoryData<string, int> Shapes => new()
    {
        { "lognormal", 5000 },
        { "lognormal", 70_000 },
        { "lognormal", 37 },
        { "nearly equal", 5000 },
        { "few distinct", 5000 },
        { "few distinct", 11 },
        { "with zeros", 3000 },
        { "one heavy", 2000 },
    };

    private static float[] Weights(string shape, int count, Random random) => WeightShapes.Make(shape, count, random, count / 2, 1e-6f);

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Find_AnyTarget_EqualsTheCutOfASort(string shape, int count)
    {
        var random = new Random(count + shape.Length);
        for (var trial = 0; trial < (count > 10_000 ? 2 : 20); trial++)
        {
            var weights = Weights(shape, count, random);
            var total = weights.Sum(w => (double)w);
            foreach (var p in new[] { 1e-9, 0.1, 0.5, 0.9, 0.99, 0.999999, random.NextDouble() })
            {
                var expected = SortedCut(weights, p * total);

                Assert.Equal(expected, NucleusSelection.Find(weights, p * total));
                Assert.Equal(expected, CutAmong(weights, p * total));
            }
        }
    }

    [Fact]
    public void Find_TargetAboveTheRoundedTotal_KeepsEveryPositiveWeight()
    {
        float[] weights = [0.25f, 0f, 0.5f, 0.25f, 0f];

        var cut = NucleusSelection.Find(weights, 1.0000001);

        Assert.Equal(new NucleusCut(0.25f, 3), cut);
        Assert.Equal(new[] { true, false, true, true, false }, weights.Select((w, i) => cut.Keeps(w, i)));
    }

    [Fact]
    public void SumKeptBlocks_SumsWhatTheCutKeeps()
    {
        var random = new Random(3);
        var weights = Enumerable.Range(0, 10_007).Select(_ => (random.Next(5) + 1) / 8f).ToArray();
        var cut = new NucleusCut(0.5f, 6000);
        var blocks = new double[(weights.Length + 511) / 512];

        var total = NucleusSelection.SumKeptBlocks(weights, cut, blocks, 512);

        var expected = weights.Select((w, i) => w > 0.5f || (w == 0.5f && i <= 6000) ? (double)w : 0d).ToArray();
        Assert.Equal(expected.Sum(), total, 1e-9);
        for (var b = 0; b < blocks.Length; b++)
        {
            Assert.Equal(expected.Skip(b * 512).Take(512).Sum(), blocks[b], 1e-9);
        }
    }
}
