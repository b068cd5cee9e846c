using KvChat;
using Xunit;

namespace KvChatClient.Tests.Decoding;

/// <summary>
/// Top-p's draws against the exact nucleus distribution, computed here the slow way, on hand-made vocabularies: small
/// ones (the nucleus found among the heaviest tokens) and flat ones of thousands of tokens (the nucleus found by the
/// selection over the whole vocabulary).
/// </summary>
public sealed class NucleusSamplingTests
{
    internal const int Draws = 40_000;

    /// <summary>
    /// The exact distribution: weights <c>exp((logit - max) / temperature)</c> (after the penalties), the k greatest
    /// logits with top-k, then the smallest prefix of "greater weight, then lower id" whose mass reaches <c>TopP</c> of
    /// the whole; each kept token's probability is its share of the kept mass.
    /// </summary>
    internal static double[] ExactDistribution(float[] logits, float temperature, float topP, int topK)
    {
        var max = logits.Max();
        var weights = logits.Select(l => (double)MathF.Exp((l - max) / temperature)).ToArray();
        IEnumerable<int> ids = Enumerable.Range(0, logits.Length);
        if (topK > 0 && topK < logits.Length)
        {
            ids = ids.OrderByDescending(i => logits[i]).ThenBy(i => i).Take(topK);
        }

        var order = ids.Where(i => weights[i] > 0).OrderByDescending(i => weights[i]).ThenBy(i => i).ToList();
        var total = order.Sum(i => weights[i]);
        var probabilities = new double[logits.Length];
        var mass = 0d;
        foreach (var id in order)
        {
            probabilities[id] = weights[id];
            mass += weights[id];
            if (mass >= topP * total)
            {
                break;
            }
        }

        for (var i = 0; i < probabilities.Length; i++)
        {
            probabilities[i] /= mass;
        }

        return probabilities;
    }

    internal static int[] Count(LogitSampler sampler, float[] logits, int draws)
    {
        var counts = new int[logits.Length];
        for (var i = 0; i < draws; i++)
        {
            counts[sampler.Next(logits)]++;
        }

        return counts;
    }

    /// <summary>
    /// Asserts that no token outside the nucleus is drawn and that the draws follow it: a chi-square over bins of kept
    /// tokens (in id order, each bin expecting at least 1/16 of the draws), against the 0.001 critical value.
    /// </summary>
    internal static void AssertFollows(double[] expected, int[] counts, int draws)
    {
        for (var i = 0; i < expected.Length; i++)
        {
            if (expected[i] == 0)
            {
                Assert.True(counts[i] == 0, $"Token {i} is outside the nucleus but was drawn {counts[i]} times.");
            }
        }

        var bins = new List<(double Expected, int Observed)>();
        var binExpected = 0d;
        var binObserved = 0;
        for (var i = 0; i < expected.Length; i++)
        {
            binExpected += expected[i];
            binObserved += counts[i];
            if (binExpected >= 1d / 16)
            {
                bins.Add((binExpected, binObserved));
                binExpected = 0;
                binObserved = 0;
            }
        }

        if (binExpected > 0 || binObserved > 0)
        {
            bins.Add((binExpected, binObserved));
        }

        var chiSquare = bins.Where(b => b.Expected > 0).Sum(b => Math.Pow(b.Observed - (b.Expected * draws), 2) / (b.Expected * draws));
        var freedom = Math.Max(1, bins.Count - 1);

        // Wilson-Hilferty: the chi-square quantile of 1 - 0.001 for that many degrees of freedom (z = 3.09).
        var critical = freedom * Math.Pow(1 - (2d / (9 * freedom)) + (3.09 * Math.Sqrt(2d / (9 * freedom))), 3);
        Assert.True(chiSquare < critical, $"chi2 = {chiSquare:F1} over {freedom} degrees of freedom (critical {critical:F1}).");
    }

    /// <summary>
    /// Asserts it of the sampler as it is (top-p without top-k by rejection) and of one that finds the nucleus by
    /// selection first (no draw from the whole distribution).
    /// </summary>
    private static void AssertDrawsFollowTheNucleus(float[] logits, float temperature, float topP, int topK, ulong seed)
    {
        var settings = new SamplingSettings(temperature, topP, topK, 0f, 0f, seed);
        var expected = ExactDistribution(logits, temperature, topP, topK);
        AssertFollows(expected, Count(new LogitSampler(settings, logits.Length), logits, Draws), Draws);
        AssertFollows(expected, Count(new LogitSampler(settings, logits.Length, rejectionDraws: 0), logits, Draws), Draws);
    }

    /// <summary>A flat vocabulary: <paramref name="count"/> logits spread evenly over [0, <paramref name="spread"/>), ids shuffled.</summary>
    internal static float[] Flat(int count, float spread, int seed)
    {
        var logits = Enumerable.Range(0, count).Select(i => spread * i / count).ToArray();
        new Random(seed).Shuffle(logits);
        return logits;
    }

    [Theory]
    [InlineData(1f, 0.7f, 0)]
    [InlineData(1f, 0.95f, 0)]
    [InlineData(2f, 0.5f, 0)]
    [InlineData(1f, 1f, 0)]
    [InlineData(1f, 0.8f, 4)]
    [InlineData(0.5f, 0.9f, 3)]
    public void Next_SmallFlatVocabulary_FollowsTheNucleus(float temperature, float topP, int topK)
    {
        AssertDrawsFollowTheNucleus([0.5f, 0.1f, 0.4f, 0.0f, 0.3f, 0.2f], temperature, topP, topK, seed: 21);
    }

    [Theory]
    [InlineData(1f, 0.9f, 0)]
    [InlineData(1f, 0.99f, 0)]
    [InlineData(0.7f, 0.9f, 0)]
    [InlineData(1f, 0.99f, 3)]
    public void Next_SmallPeakedVocabulary_FollowsTheNucleus(float temperature, float topP, int topK)
    {
        AssertDrawsFollowTheNucleus([0f, 5f, -1f, 3f, 1f, 0f, -2f, 2.5f], temperature, topP, topK, seed: 22);
    }

    [Theory]
    [InlineData(1f, 0.5f, 0)]
    [InlineData(1f, 0.9f, 0)]
    [InlineData(1.5f, 0.3f, 0)]
    [InlineData(1f, 1f, 0)]
    [InlineData(1f, 0.6f, 500)]
    public void Next_LargeFlatVocabulary_FollowsTheNucleus(float temperature, float topP, int topK)
    {
        // 6,000 tokens, none with 1/1024 of the mass: the cut comes from the selection over the whole vocabulary.
        AssertDrawsFollowTheNucleus(Flat(6000, 2f, seed: 23), temperature, topP, topK, seed: 24);
    }

    [Fact]
    public void Next_TiesAtTheThreshold_KeepsTheLowestIdsOfTheTie()
    {
        // Weights e^2 (id 2) and e^1 three times (ids 1, 3, 4), e^0 (id 0): 7.39 + 2.72 = 10.11 of 16.54 is 0.611,
        // enough for 0.6, so one of the tied tokens is kept: the lowest id, 1.
        float[] logits = [0f, 1f, 2f, 1f, 1f];
        var expected = ExactDistribution(logits, 1f, 0.6f, 0);
        Assert.Equal(new[] { 1, 2 }, Enumerable.Range(0, logits.Length).Where(id => expected[id] > 0));

        var counts = Count(new LogitSampler(new SamplingSettings(1f, 0.6f, 0, 0f, 0f, 25), logits.Length), logits, Draws);

        AssertFollows(expected, counts, Draws);
        Assert.Equal(0, counts[3] + counts[4]);
    }

    [Theory]
    [InlineData(1000, 0, 783)]
    [InlineData(100, 300, 18)]
    public void Next_LargeTieAtTheThreshold_KeepsTheLowestIdsOfTheTie(int group, int topK, int keptOfTie)
    {
        // One group of logit 1, two groups of logit 0.5 and of logit 0, ids shuffled: top-p 0.5 takes all of the first
        // group and the lowest ids of the second: 783 of 2,000 (474.4 / e^-0.5; at 5,000 tokens none has 1/1024 of the
        // mass, so the cut comes from the selection over the whole vocabulary), or with top-k the first two groups and 18
        // of 200 of the second (10.6 / e^-0.5). A threshold that kept the whole tie would pass the mass too.
        var logits = Enumerable.Repeat(1f, group).Concat(Enumerable.Repeat(0.5f, 2 * group)).Concat(Enumerable.Repeat(0f, 2 * group)).ToArray();
        new Random(26).Shuffle(logits);
        var tied = Enumerable.Range(0, logits.Length).Where(i => logits[i] == 0.5f).ToList();
        var expected = ExactDistribution(logits, 1f, 0.5f, topK);
        Assert.Equal(keptOfTie, tied.Count(i => expected[i] > 0));
        Assert.True(tied.Take(keptOfTie).All(i => expected[i] > 0), "The reference keeps the lowest ids of the tie.");

        var counts = Count(new LogitSampler(new SamplingSettings(1f, 0.5f, topK, 0f, 0f, 27), logits.Length), logits, Draws);

        AssertFollows(expected, counts, Draws);
        Assert.Equal(0, tied.Skip(keptOfTie).Sum(i => counts[i]));
        Assert.True(tied.Skip(keptOfTie - 10).Take(10).Sum(i => counts[i]) > 0, "The tokens of the tie at the cut are drawn.");
    }

    [Theory]
    [InlineData(0.5f)]
    [InlineData(0.9f)]
    [InlineData(0.999f)]
    public void Next_NearlyEqualWeights_KeepsTheSmallestSetReachingTheMass(float topP)
    {
        // 4,000 distinct weights within 4 % of each other, ids shuffled: they share the selection's first digit and most
        // share the second, so the last digit decides. Keeping one token too many would still pass the mass; the nucleus
        // is exactly the heaviest n, where n is the smallest count whose mass reaches topP.
        var logits = Enumerable.Range(0, 4000).Select(i => -i * 1e-5f).ToArray();
        new Random(28).Shuffle(logits);
        var expected = ExactDistribution(logits, 1f, topP, 0);
        var byWeight = Enumerable.Range(0, logits.Length).OrderByDescending(i => logits[i]).ToList();
        var n = expected.Count(p => p > 0);
        var weights = byWeight.Select(i => (double)MathF.Exp(logits[i] - logits.Max())).ToList();
        Assert.True(weights.Take(n - 1).Sum() < topP * weights.Sum() && weights.Take(n).Sum() >= topP * weights.Sum());

        var counts = Count(new LogitSampler(new SamplingSettings(1f, topP, 0, 0f, 0f, 29), logits.Length), logits, Draws);

        AssertFollows(expected, counts, Draws);
        Assert.Equal(0, byWeight.Skip(n).Sum(i => counts[i]));
        Assert.True(byWeight.Skip(n - 10).Take(10).Sum(i => counts[i]) > 0, "The lightest tokens of the nucleus are drawn.");
    }

    [Fact]
    public void Next_PenaltiesWithTopP_FollowTheNucleusOfThePenalisedLogits()
    {
        float[] logits = [2f, 1.8f, 1.5f, 1f, 0.5f, 0f, -0.5f, -1f];
        var sampler = new LogitSampler(new SamplingSettings(1f, 0.8f, 0, 0.4f, 0.3f, 30), logits.Length);
        sampler.Accept(0);
        sampler.Accept(0);
        sampler.Accept(2);

        // 2 - (0.8 + 0.3) = 0.9 and 1.5 - (0.4 + 0.3) = 0.8.
        var penalised = (float[])logits.Clone();
        penalised[0] = 2f - ((0.4f * 2) + 0.3f);
        penalised[2] = 1.5f - (0.4f + 0.3f);
        var expected = ExactDistribution(penalised, 1f, 0.8f, 0);

        AssertFollows(expected, Count(sampler, logits, Draws), Draws);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Next_TinyTopP_DrawsTheArgMax(bool flat)
    {
        var logits = flat ? Flat(6000, 0.5f, seed: 31) : [0.1f, 3f, 0.2f, 2.9f, 0f];
        var argMax = Array.IndexOf(logits, logits.Max());
        var sampler = new LogitSampler(new SamplingSettings(1.3f, 1e-7f, 0, 0f, 0f, 32), logits.Length);

        Assert.All(Enumerable.Range(0, 300).Select(_ => sampler.Next(logits)), token => Assert.Equal(argMax, token));
    }

    [Theory]
    [InlineData(0.9f, 0)]
    [InlineData(0.9f, 100)]
    [InlineData(1f, 0)]
    public void Next_SameSeedOnAFlatVocabulary_SameTokens(float topP, int topK)
    {
        var random = new Random(33);
        var steps = Enumerable.Range(0, 50).Select(_ => Enumerable.Range(0, 20_000).Select(_ => random.NextSingle()).ToArray()).ToArray();
        var a = new LogitSampler(new SamplingSettings(1f, topP, topK, 0f, 0f, 34), 20_000);
        var b = new LogitSampler(new SamplingSettings(1f, topP, topK, 0f, 0f, 34), 20_000);

        var first = steps.Select(l => a.Next(l)).ToArray();

        Assert.Equal(first, steps.Select(l => b.Next(l)).ToArray());
        Assert.True(first.Distinct().Count() > 40, "The draws spread over the nucleus.");
    }
}
