using KvChat;
using Xunit;

namespace KvChatClient.Tests.Decoding;

/// <summary>
/// Top-p without top-k by rejection: a draw from the whole distribution kept when the token is in the nucleus
/// (<see cref="NucleusMembership"/>), the nucleus found by selection after too many draws outside it.
/// </summary>
public sealed class NucleusRejectionTests
{
    /// <summary>Weights of several shapes, as the selection's tests make them: spread, nearly equal, few distinct, some zero.</summary>
    public static TheoryData<string, int> Shapes => new()
    {
        { "lognormal", 5003 },
        { "lognormal", 37 },
        { "nearly equal", 4099 },
        { "few distinct", 5000 },
        { "few distinct", 11 },
        { "with zeros", 3001 },
        { "one heavy", 2000 },
    };

    private static float[] Weights(string shape, int count, Random random) => WeightShapes.Make(shape, count, random, count / 3, 1e-4f);

    [Theory]
    [MemberData(nameof(Shapes))]
    public void MassAhead_EveryToken_IsTheMassBeforeItInTheOrderOfTheNucleus(string shape, int count)
    {
        var weights = Weights(shape, count, new Random(count));
        var order = Enumerable.Range(0, count).Where(i => weights[i] > 0).OrderByDescending(i => weights[i]).ThenBy(i => i).ToList();
        var total = order.Sum(i => (double)weights[i]);
        var ahead = 0d;
        foreach (var id in order)
        {
            Assert.Equal(ahead, NucleusMembership.MassAhead(weights, id), ahead * 1e-12);
            ahead += weights[id];
        }

        Assert.Equal(total, NucleusMembership.Sum(weights), total * 1e-12);
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void MassAhead_BelowTheTarget_ExactlyForTheTokensOfTheSortedNucleus(string shape, int count)
    {
        var weights = Weights(shape, count, new Random(count + 1));
        var order = Enumerable.Range(0, count).Where(i => weights[i] > 0).OrderByDescending(i => weights[i]).ThenBy(i => i).ToList();
        var total = order.Sum(i => (double)weights[i]);
        foreach (var topP in new[] { 0.5, 0.9, 0.99 })
        {
            var target = topP * total;
            var nucleus = new HashSet<int>();
            var mass = 0d;
            foreach (var id in order)
            {
                nucleus.Add(id);
                mass += weights[id];
                if (mass >= target)
                {
                    break;
                }
            }

            Assert.All(order, id => Assert.True(
                nucleus.Contains(id) == (NucleusMembership.MassAhead(weights, id) < target),
                $"Token {id} of weight {weights[id]}: in the nucleus {nucleus.Contains(id)}, top-p {topP}."));
        }
    }

    [Theory]
    [InlineData(4, 0.5f, 2)]
    [InlineData(8, 0.75f, 6)]
    [InlineData(40, 0.5f, 20)]
    public void Next_EqualWeightsReachingTheTargetExactly_TakesNoTokenPastTheCut(int count, float topP, int kept)
    {
        // Weights of exactly 1 and a target that is a whole number: the token right past the cut has exactly the target
        // ahead of it (kept if the test were "at most"), and the last token kept has one weight less (dropped if the test
        // counted the token's own weight).
        var logits = new float[count];
        var sampler = new LogitSampler(new SamplingSettings(1f, topP, 0, 0f, 0f, 41), count);
        var expected = Enumerable.Range(0, count).Select(i => i < kept ? 1d / kept : 0d).ToArray();

        var counts = NucleusSamplingTests.Count(sampler, logits, NucleusSamplingTests.Draws);

        NucleusSamplingTests.AssertFollows(expected, counts, NucleusSamplingTests.Draws);
        Assert.Equal(0, counts.Skip(kept).Sum());
        Assert.True(counts[kept - 1] > 0, "The last token of the nucleus is drawn.");
    }

    [Fact]
    public void Next_HalfTheMass_FallsBackToTheSelectionAndStaysExact()
    {
        // Top-p 0.5 on a flat vocabulary: a draw lands in the nucleus about half the time, so about 1 pick in 8 misses it
        // three times and finds the nucleus by selection; the picks together follow the nucleus.
        var logits = NucleusSamplingTests.Flat(6000, 1f, seed: 42);
        var sampler = new LogitSampler(new SamplingSettings(1f, 0.5f, 0, 0f, 0f, 43), logits.Length);
        var expected = NucleusSamplingTests.ExactDistribution(logits, 1f, 0.5f, 0);

        var counts = NucleusSamplingTests.Count(sampler, logits, NucleusSamplingTests.Draws);

        NucleusSamplingTests.AssertFollows(expected, counts, NucleusSamplingTests.Draws);
        // A pick falls back when three draws miss the nucleus, each with probability 1 - its share of the mass.
        var weights = logits.Select(l => Math.Exp(l - logits.Max())).ToArray();
        var inNucleus = Enumerable.Range(0, logits.Length).Where(i => expected[i] > 0).Sum(i => weights[i]) / weights.Sum();
        var share = (double)sampler.NucleusFallbacks / NucleusSamplingTests.Draws;
        Assert.InRange(share, Math.Pow(1 - inNucleus, 3) - 0.01, Math.Pow(1 - inNucleus, 3) + 0.01);
    }

    [Fact]
    public void Next_NoRejectionDraws_AlwaysFindsTheNucleusBySelection()
    {
        var logits = NucleusSamplingTests.Flat(3000, 2f, seed: 44);
        var sampler = new LogitSampler(new SamplingSettings(1f, 0.9f, 0, 0f, 0f, 45), logits.Length, rejectionDraws: 0);

        NucleusSamplingTests.Count(sampler, logits, 100);

        Assert.Equal(100, sampler.NucleusFallbacks);
    }

    [Theory]
    [InlineData(0.9f, 40)]
    [InlineData(0.3f, 0)]
    [InlineData(1f, 0)]
    public void Next_TopKOrSmallTopPOrNoTopP_DrawsNoRejection(float topP, int topK)
    {
        // With top-k the nucleus is among the k; below MinRejectionTopP it is found by selection at once; without top-p
        // there is no nucleus. None of them counts a fallback.
        var logits = NucleusSamplingTests.Flat(3000, 2f, seed: 46);
        var sampler = new LogitSampler(new SamplingSettings(1f, topP, topK, 0f, 0f, 47), logits.Length);

        NucleusSamplingTests.Count(sampler, logits, 500);

        Assert.Equal(0, sampler.NucleusFallbacks);
    }

    [Theory]
    [InlineData(float.NaN)]
    [InlineData(float.PositiveInfinity)]
    public void Next_TopPWithNaNOrPositiveInfinity_Throws(float bad)
    {
        var logits = NucleusSamplingTests.Flat(3000, 2f, seed: 48);
        logits[2999] = bad;
        var sampler = new LogitSampler(new SamplingSettings(1f, 0.9f, 0, 0f, 0f, 49), logits.Length);

        Assert.Throws<ArgumentException>(() => sampler.Next(logits));
    }

    [Fact]
    public void Next_TopPWithBannedTokens_NeverDrawsThemAndThrowsWhenAllAreBanned()
    {
        var logits = new float[64];
        for (var i = 0; i < logits.Length; i += 3)
        {
            logits[i] = float.NegativeInfinity;
        }

        var sampler = new LogitSampler(new SamplingSettings(1f, 0.95f, 0, 0f, 0f, 50), logits.Length);

        var counts = NucleusSamplingTests.Count(sampler, logits, 4000);

        Assert.All(Enumerable.Range(0, logits.Length).Where(i => i % 3 == 0), i => Assert.Equal(0, counts[i]));
        Assert.Throws<ArgumentException>(() => sampler.Next(Enumerable.Repeat(float.NegativeInfinity, 64).ToArray()));
    }
}
