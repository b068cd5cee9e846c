using System.Numerics;
using System.Numerics.Tensors;
using KvChat;
using Xunit;

namespace KvChatClient.Tests.Decoding;

public sealed class LogitSamplerTests
{
    private static SamplingSettings Sampling(float temperature = 1f, float topP = 1f, int topK = 0, ulong? seed = 1) =>
        new(temperature, topP, topK, 0f, 0f, seed);

    private static float[] RandomLogits(Random random, int count, float scale = 4f)
    {
        var logits = new float[count];
        for (var i = 0; i < count; i++)
        {
            logits[i] = (float)(random.NextDouble() * scale);
        }

        return logits;
    }

    private static int ReferenceArgMax(float[] values)
    {
        var best = 0;
        for (var i = 1; i < values.Length; i++)
        {
            if (values[i] > values[best])
            {
                best = i;
            }
        }

        return best;
    }

    private static int[] Draw(LogitSampler sampler, float[] logits, int count)
    {
        var draws = new int[count];
        for (var i = 0; i < draws.Length; i++)
        {
            draws[i] = sampler.Next(logits);
        }

        return draws;
    }

    [Fact]
    public void Xoshiro_SplitMix64_MatchesReferenceOutputs()
    {
        // Reference values of SplitMix64 (Vigna) started at 1234567.
        var state = 1234567UL;
        ulong[] expected = [6457827717110365317, 3203168211198807973, 9817491932198370423, 4593380528125082431, 16408922859458223821];

        foreach (var value in expected)
        {
            Assert.Equal(value, Xoshiro256StarStar.SplitMix64(ref state));
        }
    }

    [Fact]
    public void Xoshiro_Seed42_MatchesReferenceAlgorithm()
    {
        // Computed with a port of the reference C code, seeded with SplitMix64(42).
        var random = new Xoshiro256StarStar(42);
        ulong[] expected = [1546998764402558742, 6990951692964543102, 12544586762248559009, 17057574109182124193, 18295552978065317476];

        foreach (var value in expected)
        {
            Assert.Equal(value, random.NextUInt64());
        }
    }

    [Fact]
    public void Xoshiro_NextDouble_InUnitInterval()
    {
        var random = new Xoshiro256StarStar(3);
        var sum = 0d;
        for (var i = 0; i < 10_000; i++)
        {
            var value = random.NextDouble();
            Assert.InRange(value, 0d, Math.BitDecrement(1d));
            sum += value;
        }

        Assert.InRange(sum / 10_000, 0.48, 0.52);
    }

    [Theory]
    [InlineData(0f, 0, true)]
    [InlineData(0.7f, 1, true)]
    [InlineData(0.7f, 0, false)]
    [InlineData(0.7f, 40, false)]
    public void IsGreedy_TemperatureZeroOrTopKOne(float temperature, int topK, bool expected)
    {
        Assert.Equal(expected, Sampling(temperature, topK: topK).IsGreedy);
    }

    [Theory]
    [InlineData(-0.1f, 1f, 0, 0f)]
    [InlineData(float.NaN, 1f, 0, 0f)]
    [InlineData(float.PositiveInfinity, 1f, 0, 0f)]
    [InlineData(1f, 0f, 0, 0f)]
    [InlineData(1f, 1.01f, 0, 0f)]
    [InlineData(1f, float.NaN, 0, 0f)]
    [InlineData(1f, 1f, -1, 0f)]
    [InlineData(1f, 1f, 0, float.NaN)]
    public void Constructor_SettingOutOfRange_Throws(float temperature, float topP, int topK, float penalty)
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new LogitSampler(new SamplingSettings(temperature, topP, topK, penalty, 0f, null), 10));
    }

    [Fact]
    public void Constructor_VocabSizeZero_Throws()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new LogitSampler(SamplingSettings.Greedy, 0));
    }

    [Fact]
    public void Next_Greedy_PicksArgMax()
    {
        var random = new Random(1);
        var sampler = new LogitSampler(SamplingSettings.Greedy, 50_000);
        for (var trial = 0; trial < 20; trial++)
        {
            var logits = RandomLogits(random, 50_000);
            Assert.Equal(ReferenceArgMax(logits), sampler.Next(logits));
        }
    }

    [Fact]
    public void Next_GreedyTies_PicksLowestId()
    {
        var logits = new float[100];
        logits[77] = 3f;
        logits[41] = 3f;
        logits[99] = 3f;

        Assert.Equal(41, new LogitSampler(SamplingSettings.Greedy, 100).Next(logits));
    }

    [Fact]
    public void ArgMax_RandomLengthsWithManyTies_MatchesFirstIndexOfMax()
    {
        // Few distinct values make ties within and across vector lanes and in the scalar tail.
        var random = new Random(2);
        for (var length = 1; length <= 4 * Vector<float>.Count + 7; length++)
        {
            for (var trial = 0; trial < 50; trial++)
            {
                var values = new float[length];
                for (var i = 0; i < length; i++)
                {
                    values[i] = random.Next(4) == 0 ? float.NegativeInfinity : random.Next(3);
                }

                values[random.Next(length)] = random.Next(3); // At least one finite value.
                Assert.Equal(ReferenceArgMax(values), LogitSampler.ArgMax(values));
            }
        }
    }

    [Fact]
    public void ArgMax_NegativeZeroAndZero_TreatedAsEqual()
    {
        var values = new float[40];
        Array.Fill(values, -1f);
        values[30] = 0f;
        values[3] = -0f;

        Assert.Equal(3, LogitSampler.ArgMax(values));
    }

    [Theory]
    [InlineData(5)]
    [InlineData(1000)]
    [InlineData(1003)]
    public void Next_NaNAnywhere_ThrowsArgumentException(int position)
    {
        var logits = new float[1004];
        logits[position] = float.NaN;

        Assert.Throws<ArgumentException>(() => new LogitSampler(SamplingSettings.Greedy, logits.Length).Next(logits));
        Assert.Throws<ArgumentException>(() => new LogitSampler(Sampling(), logits.Length).Next(logits));
    }

    [Fact]
    public void Next_PositiveInfinity_ThrowsArgumentException()
    {
        var logits = new float[64];
        logits[17] = float.PositiveInfinity;

        Assert.Throws<ArgumentException>(() => new LogitSampler(SamplingSettings.Greedy, 64).Next(logits));
    }

    [Fact]
    public void Next_AllNegativeInfinity_ThrowsArgumentException()
    {
        var logits = Enumerable.Repeat(float.NegativeInfinity, 64).ToArray();

        Assert.Throws<ArgumentException>(() => new LogitSampler(Sampling(), 64).Next(logits));
    }

    [Fact]
    public void Next_WrongLength_ThrowsArgumentException()
    {
        var ex = Assert.Throws<ArgumentException>(() => new LogitSampler(SamplingSettings.Greedy, 10).Next(new float[9]));

        Assert.Equal("logits", ex.ParamName);
    }

    [Fact]
    public void Next_BannedTokens_NeverSampled()
    {
        var logits = new float[8];
        logits[2] = float.NegativeInfinity;
        logits[5] = float.NegativeInfinity;
        var sampler = new LogitSampler(Sampling(temperature: 5f), 8);

        var draws = Draw(sampler, logits, 4000);

        Assert.DoesNotContain(2, draws);
        Assert.DoesNotContain(5, draws);
        Assert.Equal(6, draws.Distinct().Count());
    }

    [Fact]
    public void Next_TemperatureNearZero_ConvergesToArgMax()
    {
        var logits = new float[] { 1.0f, 1.5f, 1.49f, 1.2f };
        var fractions = new List<double>();
        foreach (var temperature in new[] { 1f, 0.1f, 0.01f, 1e-4f })
        {
            var sampler = new LogitSampler(Sampling(temperature, seed: 11), logits.Length);
            fractions.Add(Draw(sampler, logits, 4000).Count(t => t == 1) / 4000d);
        }

        // Expected about 0.29, 0.51, 0.73, then exactly 1: the runner-up weighs e^-100.
        Assert.Equal(fractions.Order(), fractions);
        Assert.InRange(fractions[0], 0.25, 0.33);
        Assert.InRange(fractions[2], 0.70, 0.76);
        Assert.Equal(1d, fractions[3]);
    }

    [Fact]
    public void Next_HighTemperature_SpreadsOverAllTokens()
    {
        var logits = new float[] { 1.0f, 1.5f, 1.49f, 1.2f };
        var sampler = new LogitSampler(Sampling(temperature: 1f), logits.Length);

        Assert.Equal(4, Draw(sampler, logits, 2000).Distinct().Count());
    }

    [Fact]
    public void Next_TopKOne_EqualsGreedyAtAnyTemperature()
    {
        var random = new Random(3);
        var sampler = new LogitSampler(Sampling(temperature: 3f, topK: 1), 1000);
        for (var trial = 0; trial < 50; trial++)
        {
            var logits = RandomLogits(random, 1000, scale: 0.5f);
            Assert.Equal(ReferenceArgMax(logits), sampler.Next(logits));
        }
    }

    [Fact]
    public void Next_TopK_DrawsExactlyFromKLargest()
    {
        var random = new Random(4);
        var logits = RandomLogits(random, 5000, scale: 0.01f); // Nearly flat: the cut matters.
        var topK = logits.Select((value, id) => (value, id)).OrderByDescending(p => p.value).Take(25).Select(p => p.id).ToHashSet();
        var sampler = new LogitSampler(Sampling(topK: 25), logits.Length);

        var drawn = Draw(sampler, logits, 5000).ToHashSet();

        Assert.True(drawn.SetEquals(topK), "The drawn tokens are not the 25 largest.");
    }

    [Fact]
    public void Next_TopKWithTies_KeepsLowestIds()
    {
        var logits = new float[10];
        var sampler = new LogitSampler(Sampling(topK: 3), logits.Length);

        var drawn = Draw(sampler, logits, 2000).ToHashSet();

        Assert.True(drawn.SetEquals([0, 1, 2]));
    }

    [Fact]
    public void Next_TinyTopP_KeepsOnlyTheBest()
    {
        var random = new Random(5);
        var logits = RandomLogits(random, 3000, scale: 0.1f);
        var sampler = new LogitSampler(Sampling(topP: 1e-6f), logits.Length);

        Assert.All(Draw(sampler, logits, 500), token => Assert.Equal(ReferenceArgMax(logits), token));
    }

    [Fact]
    public void Next_TopP_DrawsExactlyFromSmallestSetReachingMass()
    {
        var random = new Random(6);
        for (var trial = 0; trial < 5; trial++)
        {
            var logits = RandomLogits(random, 20, scale: 3f);
            const float TopP = 0.7f;
            var weights = logits.Select(l => Math.Exp(l)).ToArray();
            var total = weights.Sum();
            var nucleus = new HashSet<int>();
            var mass = 0d;
            foreach (var id in Enumerable.Range(0, 20).OrderByDescending(i => weights[i]))
            {
                nucleus.Add(id);
                mass += weights[id];
                if (mass >= TopP * total)
                {
                    break;
                }
            }

            var sampler = new LogitSampler(Sampling(topP: TopP, seed: (ulong)trial), logits.Length);
            var drawn = Draw(sampler, logits, 20_000).ToHashSet();

            Assert.True(drawn.SetEquals(nucleus), $"Trial {trial}: drew [{string.Join(",", drawn.Order())}], nucleus [{string.Join(",", nucleus.Order())}].");
        }
    }

    [Fact]
    public void Next_TopKThenTopP_AppliesBoth()
    {
        // Probabilities 0.4, 0.3, 0.2, 0.1 ; top-k 3 leaves 4/9, 3/9, 2/9 ; top-p 0.7 then keeps 0 and 1 (7/9).
        var logits = new[] { 0.4, 0.3, 0.2, 0.1 }.Select(p => (float)Math.Log(p)).ToArray();
        var sampler = new LogitSampler(Sampling(topK: 3, topP: 0.7f), 4);

        var drawn = Draw(sampler, logits, 4000).ToHashSet();

        Assert.True(drawn.SetEquals([0, 1]));
    }

    [Fact]
    public void Next_LargeVocabulary_TopPAndTopKReturnValidTokens()
    {
        var random = new Random(7);
        var logits = RandomLogits(random, 150_000, scale: 10f);
        var best = logits.Select((value, id) => (value, id)).OrderByDescending(p => p.value).Take(40).Select(p => p.id).ToHashSet();
        var topP = new LogitSampler(Sampling(topP: 0.9f), logits.Length);
        var topK = new LogitSampler(Sampling(topK: 40), logits.Length);

        for (var i = 0; i < 20; i++)
        {
            Assert.InRange(topP.Next(logits), 0, logits.Length - 1);
            Assert.Contains(topK.Next(logits), best);
        }
    }

    /// <summary>
    /// The sampler's definition, written the slow way: sort the whole vocabulary ("greater logit, then lower id"), cut
    /// top-k, weigh each token with float exp (TensorPrimitives'), sort what is left by "greater weight, then lower id",
    /// sum in double precision, cut top-p against the whole mass, and draw one uniform number over the kept mass, walking
    /// the kept tokens in id order. Top-p without top-k (from <see cref="LogitSampler.MinRejectionTopP"/>) first draws
    /// over every token, in id order, up to <see cref="LogitSampler.DefaultRejectionDraws"/> times, and takes the first
    /// draw in the nucleus. Tokens whose scaled logit underflows exp are never kept.
    /// </summary>
    private sealed class ReferenceSampler
    {
        private readonly int[] _kept;
        private readonly double[] _weights;
        private readonly double _mass;
        private readonly int[] _all;
        private readonly double[] _allWeights;
        private readonly double _total;
        private readonly int _rejectionDraws;

        public ReferenceSampler(float[] logits, SamplingSettings settings)
        {
            var max = logits.Max();
            var inverse = 1f / settings.Temperature;
            bool Eligible(int id) => (logits[id] - max) * inverse >= -87.3f;

            // The sampler's exp (vectorised), so that the reference's weights are the sampler's to the bit.
            var weights = logits.Select(l => (l - max) * inverse).ToArray();
            TensorPrimitives.Exp(weights, weights);
            float Weight(int id) => weights[id];
            IEnumerable<int> order = Enumerable.Range(0, logits.Length);
            if (settings.TopK > 0 && settings.TopK < logits.Length)
            {
                order = order.OrderByDescending(i => logits[i]).ThenBy(i => i).Take(settings.TopK);
            }

            var eligible = order.Where(Eligible).OrderByDescending(Weight).ThenBy(i => i).ToList();
            var total = eligible.Sum(i => (double)Weight(i));
            var kept = new List<int>();
            var mass = 0d;
            foreach (var id in eligible)
            {
                kept.Add(id);
                mass += Weight(id);
                if (settings.TopP < 1f && mass >= settings.TopP * total)
                {
                    break;
                }
            }

            kept.Sort();
            _kept = [.. kept];
            _weights = [.. kept.Select(i => (double)Weight(i))];
            _mass = mass;
            _all = [.. eligible.Order()];
            _allWeights = [.. _all.Select(i => (double)Weight(i))];
            _total = total;
            var byRejection = settings.TopP < 1f && settings.TopP >= LogitSampler.MinRejectionTopP && !(settings.TopK > 0 && settings.TopK < logits.Length);
            _rejectionDraws = byRejection ? LogitSampler.DefaultRejectionDraws : 0;
        }

        public int Next(ref Xoshiro256StarStar random)
        {
            for (var draw = 0; draw < _rejectionDraws; draw++)
            {
                var token = Walk(_all, _allWeights, random.NextDouble() * _total);
                if (Array.BinarySearch(_kept, token) >= 0)
                {
                    return token;
                }
            }

            return Walk(_kept, _weights, random.NextDouble() * _mass);
        }

        private static int Walk(int[] ids, double[] weights, double point)
        {
            var sum = 0d;
            for (var i = 0; i < ids.Length; i++)
            {
                sum += weights[i];
                if (point < sum)
                {
                    return ids[i];
                }
            }

            return ids[^1];
        }
    }

    [Theory]
    [InlineData(1000, 0.8f, 1f, 0, true)]
    [InlineData(1000, 0.8f, 0.9f, 0, true)]
    [InlineData(1000, 0.8f, 1f, 40, true)]
    [InlineData(1000, 0.8f, 0.9f, 40, true)]
    [InlineData(40_000, 1.3f, 1f, 0, true)]
    [InlineData(40_000, 0.7f, 0.95f, 0, true)]
    [InlineData(40_000, 0.7f, 0.5f, 0, true)]
    [InlineData(40_000, 0.7f, 1f, 50, true)]
    [InlineData(40_000, 0.7f, 0.9f, 50, true)]
    [InlineData(40_000, 1f, 0.9f, 0, false)]
    [InlineData(40_000, 0.7f, 0.5f, 0, false)]
    [InlineData(40_000, 1f, 0.9f, 2000, false)]
    public void Next_SameSeed_DrawsWhatTheSortingReferenceDraws(int vocabulary, float temperature, float topP, int topK, bool peaked)
    {
        // Logits like a trained model's (normal, 16 tokens raised) or a flat one (normal only: top-p keeps much of the
        // vocabulary), a few banned, and many ties (rounded to 1/8), so both the order among equal weights and the
        // cut-offs matter.
        var values = new Random(vocabulary + topK);
        var logits = new float[vocabulary];
        for (var i = 0; i < vocabulary; i++)
        {
            logits[i] = MathF.Round((float)(2 * Math.Sqrt(-2 * Math.Log(1 - values.NextDouble())) * Math.Cos(2 * Math.PI * values.NextDouble())) * 8f) / 8f;
        }

        for (var i = 0; i < 16; i++)
        {
            logits[values.Next(vocabulary)] += peaked ? 6 + (4 * values.NextSingle()) : 0f;
            logits[values.Next(vocabulary)] = float.NegativeInfinity;
        }

        var settings = new SamplingSettings(temperature, topP, topK, 0f, 0f, 77);
        var sampler = new LogitSampler(settings, vocabulary);
        var reference = new ReferenceSampler(logits, settings);
        var random = new Xoshiro256StarStar(77);
        for (var draw = 0; draw < 2000; draw++)
        {
            Assert.Equal(reference.Next(ref random), sampler.Next(logits));
        }
    }

    [Theory]
    [InlineData(1f, 0)]
    [InlineData(0.9f, 0)]
    [InlineData(1f, 40)]
    [InlineData(0.9f, 40)]
    public void Next_MaskedToAFewTokens_DrawsOnlyThose(float topP, int topK)
    {
        // A structured-output constraint bans all but a few tokens with negative infinity before Next.
        var logits = Enumerable.Repeat(float.NegativeInfinity, 262_144).ToArray();
        int[] allowed = [5, 70_000, 200_001];
        logits[5] = 0.5f;
        logits[70_000] = 0.4f;
        logits[200_001] = 0.45f;
        var sampler = new LogitSampler(Sampling(temperature: 1f, topP: topP, topK: topK), logits.Length);

        var drawn = Draw(sampler, logits, 600).ToHashSet();

        Assert.True(drawn.IsSubsetOf(allowed));
        Assert.Equal(3, drawn.Count); // 0.9 of the mass needs all three (each about a third).
    }

    [Fact]
    public void Next_SameSeed_SameSequence()
    {
        var random = new Random(8);
        var steps = Enumerable.Range(0, 300).Select(_ => RandomLogits(random, 50, scale: 1f)).ToArray();
        var a = new LogitSampler(Sampling(topP: 0.95f, topK: 30, seed: 1234), 50);
        var b = new LogitSampler(Sampling(topP: 0.95f, topK: 30, seed: 1234), 50);

        Assert.Equal(steps.Select(l => a.Next(l)).ToArray(), steps.Select(l => b.Next(l)).ToArray());
    }

    [Fact]
    public void Next_DifferentSeed_DifferentSequence()
    {
        var logits = new float[50];
        var a = new LogitSampler(Sampling(seed: 1), 50);
        var b = new LogitSampler(Sampling(seed: 2), 50);

        var first = Draw(a, logits, 300);
        var second = Draw(b, logits, 300);

        // 300 uniform draws over 50 tokens: about 6 agreements expected, 290 would be absurd.
        Assert.True(first.Zip(second).Count(p => p.First == p.Second) < 30);
    }

    [Fact]
    public void Next_Unseeded_DifferentSamplersDiffer()
    {
        var logits = new float[50];
        var first = Draw(new LogitSampler(Sampling(seed: null), 50), logits, 300);
        var second = Draw(new LogitSampler(Sampling(seed: null), 50), logits, 300);

        Assert.NotEqual(first, second);
    }

    [Theory]
    [InlineData(1f, 0, new[] { 0.1, 0.2, 0.3, 0.4 })]
    [InlineData(2f, 0, new[] { 0.1627, 0.2301, 0.2818, 0.3254 })] // p^(1/2), normalised.
    [InlineData(0.5f, 0, new[] { 0.0333, 0.1333, 0.3, 0.5333 })] // p^2 / 0.3.
    [InlineData(1f, 3, new[] { 0, 2 / 9d, 3 / 9d, 4 / 9d })]
    public void Next_ManySeededDraws_FollowExpectedDistribution(float temperature, int topK, double[] expected)
    {
        var logits = new[] { 0.1, 0.2, 0.3, 0.4 }.Select(p => (float)Math.Log(p)).ToArray();
        var sampler = new LogitSampler(Sampling(temperature, topK: topK, seed: 99), 4);
        const int Draws = 40_000;
        var counts = new int[4];
        foreach (var token in Draw(sampler, logits, Draws))
        {
            counts[token]++;
        }

        var chiSquare = 0d;
        for (var i = 0; i < 4; i++)
        {
            if (expected[i] == 0)
            {
                Assert.Equal(0, counts[i]);
                continue;
            }

            var e = expected[i] * Draws;
            chiSquare += (counts[i] - e) * (counts[i] - e) / e;
        }

        // 3 degrees of freedom: P(chi2 > 16.27) = 0.001 for a correct sampler; the rounding of the
        // expected values to 4 digits moves chi2 by far less than that. A wrong temperature or top-k
        // (0.1 vs 0.16, for example) gives a chi2 in the hundreds.
        Assert.True(chiSquare < 16.27, $"chi2 = {chiSquare}, counts = [{string.Join(", ", counts)}].");
    }

    [Fact]
    public void Next_PresencePenalty_ChangesArgMax()
    {
        var logits = new[] { 2.0f, 1.9f, 0f };
        var sampler = new LogitSampler(new SamplingSettings(0f, 1f, 0, 0f, 0.5f, null), 3);
        Assert.Equal(0, sampler.Next(logits));

        sampler.Accept(0);

        Assert.Equal(1, sampler.Next(logits));
        Assert.Equal(2.0f, logits[0]); // The caller's logits are not modified.
    }

    [Fact]
    public void Next_FrequencyPenalty_GrowsWithCount()
    {
        var logits = new[] { 2.0f, 1.9f, 0f };
        var sampler = new LogitSampler(new SamplingSettings(0f, 1f, 0, 0.06f, 0f, null), 3);

        sampler.Accept(0);
        Assert.Equal(0, sampler.Next(logits)); // 2.0 - 0.06 = 1.94 > 1.9.

        sampler.Accept(0);
        Assert.Equal(1, sampler.Next(logits)); // 2.0 - 0.12 = 1.88 < 1.9.
    }

    [Fact]
    public void Next_BothPenalties_CombineAsOpenAi()
    {
        // Token 0 seen 3 times: 2.0 - (0.1 * 3 + 0.25) = 1.45 ; token 1 seen once: 1.9 - 0.35 = 1.55.
        var logits = new[] { 2.0f, 1.9f, 1.5f };
        var sampler = new LogitSampler(new SamplingSettings(0f, 1f, 0, 0.1f, 0.25f, null), 3);
        sampler.Accept(0);
        sampler.Accept(0);
        sampler.Accept(0);
        sampler.Accept(1);

        Assert.Equal(1, sampler.Next(logits));

        logits[2] = 1.56f;
        Assert.Equal(2, sampler.Next(logits));
    }

    [Fact]
    public void Next_PenaltiesWhileSampling_AvoidsPenalisedToken()
    {
        // P(0) = e^5 / (e^5 + 2) = 0.987 before the penalty; e^-5 / (e^-5 + 2) = 0.0034 after it.
        var logits = new[] { 5f, 0f, 0f };
        var sampler = new LogitSampler(new SamplingSettings(1f, 1f, 0, 0f, 10f, 5), 3);
        Assert.InRange(Draw(sampler, logits, 1000).Count(t => t == 0), 950, 1000);

        sampler.Accept(0);

        Assert.InRange(Draw(sampler, logits, 1000).Count(t => t == 0), 0, 20);
    }

    [Fact]
    public void Accept_WithoutPenalties_DoesNotChangeChoice()
    {
        var logits = new[] { 2.0f, 1.9f };
        var sampler = new LogitSampler(SamplingSettings.Greedy, 2);
        for (var i = 0; i < 10; i++)
        {
            sampler.Accept(0);
        }

        Assert.Equal(0, sampler.Next(logits));
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(3)]
    public void Accept_TokenOutOfRange_Throws(int token)
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new LogitSampler(SamplingSettings.Greedy, 3).Accept(token));
    }
}
