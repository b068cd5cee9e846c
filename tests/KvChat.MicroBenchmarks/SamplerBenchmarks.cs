using BenchmarkDotNet.Attributes;

namespace KvChat.MicroBenchmarks;

/// <summary>
/// <see cref="LogitSampler.Next"/> over 32,000, 151,936 (Qwen2.5) and 262,144 (Gemma 3) logits, peaked and flat: greedy
/// (one vectorised pass) against temperature sampling alone, with top-k 40, top-p 0.9, both, and with penalties; beside
/// each, the quickselect sampler of an earlier release (<see cref="QuickselectSampler"/>), on the same logits, and
/// beside top-p 0.9 (drawn by rejection from the whole distribution) the same sampler finding the nucleus by selection
/// first, as it did before rejection.
/// </summary>
/// <remarks>
/// Peaked logits are like a trained model's: normal with standard deviation 2, and 16 tokens raised by 8 to 12, so that
/// at temperature 0.8 the nucleus of top-p 0.9 reaches into the tail while every token stays above the underflow
/// cut-off. Flat logits are normal with standard deviation 1 and nothing raised, what the kit's random-weight models
/// give (and a real model at a high temperature): top-p 0.9 keeps a large share of the vocabulary, the case a sort of
/// the kept set made slow.
/// </remarks>
[MemoryDiagnoser]
public class SamplerBenchmarks
{
    private float[] _logits = null!;
    private LogitSampler _greedy = null!;
    private LogitSampler _temperature = null!;
    private LogitSampler _topK = null!;
    private LogitSampler _topP = null!;
    private LogitSampler _topPBySelection = null!;
    private LogitSampler _topKTopP = null!;
    private LogitSampler _penalties = null!;
    private QuickselectSampler _oldTemperature = null!;
    private QuickselectSampler _oldTopK = null!;
    private QuickselectSampler _oldTopP = null!;
    private QuickselectSampler _oldTopKTopP = null!;

    [Params(32000, 151936, 262144)]
    public int Vocabulary { get; set; } = 32000;

    [Params("peaked", "flat")]
    public string Logits { get; set; } = "peaked";

    [GlobalSetup]
    public void Setup()
    {
        _logits = Logits == "flat" ? FlatLogits(Vocabulary, seed: 5) : PeakedLogits(Vocabulary, seed: 5);
        _greedy = new LogitSampler(SamplingSettings.Greedy, Vocabulary);
        _temperature = new LogitSampler(new SamplingSettings(0.8f, 1f, 0, 0f, 0f, 1), Vocabulary);
        _topK = new LogitSampler(new SamplingSettings(0.8f, 1f, 40, 0f, 0f, 1), Vocabulary);
        _topP = new LogitSampler(new SamplingSettings(0.8f, 0.9f, 0, 0f, 0f, 1), Vocabulary);
        _topPBySelection = new LogitSampler(new SamplingSettings(0.8f, 0.9f, 0, 0f, 0f, 1), Vocabulary, rejectionDraws: 0);
        _topKTopP = new LogitSampler(new SamplingSettings(0.8f, 0.9f, 40, 0f, 0f, 1), Vocabulary);
        _penalties = new LogitSampler(new SamplingSettings(0.8f, 0.9f, 40, 0.3f, 0.3f, 1), Vocabulary);
        for (var i = 0; i < 64; i++)
        {
            _penalties.Accept(i * 7);
        }

        _oldTemperature = new QuickselectSampler(new SamplingSettings(0.8f, 1f, 0, 0f, 0f, 1), Vocabulary);
        _oldTopK = new QuickselectSampler(new SamplingSettings(0.8f, 1f, 40, 0f, 0f, 1), Vocabulary);
        _oldTopP = new QuickselectSampler(new SamplingSettings(0.8f, 0.9f, 0, 0f, 0f, 1), Vocabulary);
        _oldTopKTopP = new QuickselectSampler(new SamplingSettings(0.8f, 0.9f, 40, 0f, 0f, 1), Vocabulary);
    }

    /// <summary>Normal logits (standard deviation 2) with 16 tokens raised by 8 to 12.</summary>
    internal static float[] PeakedLogits(int vocabulary, int seed)
    {
        var random = new Random(seed);
        var logits = NormalLogits(vocabulary, 2, random);
#pragma warning disable CA5394 // Benchmark data, not a secret.
        for (var i = 0; i < 16; i++)
        {
            logits[random.Next(vocabulary)] += 8 + (4 * random.NextSingle());
        }
#pragma warning restore CA5394
        return logits;
    }

    /// <summary>Normal logits (standard deviation 1), nothing raised.</summary>
    internal static float[] FlatLogits(int vocabulary, int seed) => NormalLogits(vocabulary, 1, new Random(seed));

    private static float[] NormalLogits(int vocabulary, double deviation, Random random)
    {
#pragma warning disable CA5394 // Benchmark data, not a secret.
        var logits = new float[vocabulary];
        for (var i = 0; i < logits.Length; i++)
        {
            // Box-Muller.
            var u = 1 - random.NextDouble();
            var v = random.NextDouble();
            logits[i] = (float)(deviation * Math.Sqrt(-2 * Math.Log(u)) * Math.Cos(2 * Math.PI * v));
        }
#pragma warning restore CA5394
        return logits;
    }

    [Benchmark(Baseline = true, Description = "greedy")]
    public int Greedy() => _greedy.Next(_logits);

    [Benchmark(Description = "temperature 0.8")]
    public int Temperature() => _temperature.Next(_logits);

    [Benchmark(Description = "temperature 0.8 (quickselect sampler)")]
    public int OldTemperature() => _oldTemperature.Next(_logits);

    [Benchmark(Description = "temperature 0.8, top-k 40")]
    public int TopK() => _topK.Next(_logits);

    [Benchmark(Description = "temperature 0.8, top-k 40 (quickselect sampler)")]
    public int OldTopK() => _oldTopK.Next(_logits);

    [Benchmark(Description = "temperature 0.8, top-p 0.9")]
    public int TopP() => _topP.Next(_logits);

    [Benchmark(Description = "temperature 0.8, top-p 0.9 (nucleus by selection, no rejection)")]
    public int TopPBySelection() => _topPBySelection.Next(_logits);

    [Benchmark(Description = "temperature 0.8, top-p 0.9 (quickselect sampler)")]
    public int OldTopP() => _oldTopP.Next(_logits);

    [Benchmark(Description = "temperature 0.8, top-k 40, top-p 0.9")]
    public int TopKTopP() => _topKTopP.Next(_logits);

    [Benchmark(Description = "temperature 0.8, top-k 40, top-p 0.9 (quickselect sampler)")]
    public int OldTopKTopP() => _oldTopKTopP.Next(_logits);

    [Benchmark(Description = "top-k 40, top-p 0.9, frequency and presence penalties on 64 tokens")]
    public int Penalties() => _penalties.Next(_logits);
}
