using BenchmarkDotNet.Attributes;

namespace KvChat.MicroBenchmarks;

/// <summary>
/// <see cref="LogitSampler.Next"/> over 32,000 logits: greedy (one vectorised pass) against temperature sampling with
/// top-k, top-p and both.
/// </summary>
/// <remarks>
/// The logits are a peaked distribution like a trained model's: normal with standard deviation 2, and 16 tokens raised
/// by 8 to 12, so that at temperature 0.8 the nucleus of top-p 0.9 is a handful of tokens while every token stays
/// above the underflow cut-off.
/// </remarks>
[MemoryDiagnoser]
public class SamplerBenchmarks
{
    private const int Vocabulary = 32000;
    private float[] _logits = null!;
    private LogitSampler _greedy = null!;
    private LogitSampler _temperature = null!;
    private LogitSampler _topK = null!;
    private LogitSampler _topP = null!;
    private LogitSampler _topKTopP = null!;

    [GlobalSetup]
    public void Setup()
    {
        var random = new Random(5);
#pragma warning disable CA5394 // Benchmark data, not a secret.
        _logits = new float[Vocabulary];
        for (var i = 0; i < _logits.Length; i++)
        {
            // Box-Muller.
            var u = 1 - random.NextDouble();
            var v = random.NextDouble();
            _logits[i] = (float)(2 * Math.Sqrt(-2 * Math.Log(u)) * Math.Cos(2 * Math.PI * v));
        }

        for (var i = 0; i < 16; i++)
        {
            _logits[random.Next(Vocabulary)] += 8 + (4 * random.NextSingle());
        }
#pragma warning restore CA5394

        _greedy = new LogitSampler(SamplingSettings.Greedy, Vocabulary);
        _temperature = new LogitSampler(new SamplingSettings(0.8f, 1f, 0, 0f, 0f, 1), Vocabulary);
        _topK = new LogitSampler(new SamplingSettings(0.8f, 1f, 50, 0f, 0f, 1), Vocabulary);
        _topP = new LogitSampler(new SamplingSettings(0.8f, 0.9f, 0, 0f, 0f, 1), Vocabulary);
        _topKTopP = new LogitSampler(new SamplingSettings(0.8f, 0.9f, 50, 0f, 0f, 1), Vocabulary);
    }

    [Benchmark(Baseline = true, Description = "greedy")]
    public int Greedy() => _greedy.Next(_logits);

    [Benchmark(Description = "temperature 0.8")]
    public int Temperature() => _temperature.Next(_logits);

    [Benchmark(Description = "temperature 0.8, top-k 50")]
    public int TopK() => _topK.Next(_logits);

    [Benchmark(Description = "temperature 0.8, top-p 0.9")]
    public int TopP() => _topP.Next(_logits);

    [Benchmark(Description = "temperature 0.8, top-k 50, top-p 0.9")]
    public int TopKTopP() => _topKTopP.Next(_logits);
}
