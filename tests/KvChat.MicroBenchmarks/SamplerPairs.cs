using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace KvChat.MicroBenchmarks;

/// <summary>
/// <c>--sampler-paired ROUNDS [OUT]</c>: <see cref="LogitSampler.Next"/> at 32,000, 151,936 and 262,144 logits, flat
/// and peaked (<see cref="SamplerBenchmarks"/>' logits), the ways in turn in one process so that a shared machine's
/// load falls on all of them alike: greedy, temperature 0.8 alone, with top-p 0.9 (by rejection, and by selection of the
/// nucleus first), with top-k 40 and top-p 0.9. Medians over the rounds of the mean of 32 calls, in microseconds.
/// </summary>
internal static class SamplerPairs
{
    private const int CallsPerRound = 32;

    private static readonly TimeSpan WarmUp = TimeSpan.FromSeconds(0.5);

    public static int Run(int rounds, string? output)
    {
        var text = new StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"LogitSampler.Next, the ways in turn in one process; medians of {rounds} rounds of {CallsPerRound} calls, µs per call; {Environment.ProcessorCount} logical processors");
        text.AppendLine();
        text.AppendLine("| vocabulary | logits | way | µs per call | over greedy, µs | ratio to greedy | nucleus by selection, share of calls |");
        text.AppendLine("| ---: | --- | --- | ---: | ---: | ---: | ---: |");
        foreach (var vocabulary in new[] { 32000, 151936, 262144 })
        {
            foreach (var shape in new[] { "flat", "peaked" })
            {
                var logits = shape == "flat" ? SamplerBenchmarks.FlatLogits(vocabulary, seed: 5) : SamplerBenchmarks.PeakedLogits(vocabulary, seed: 5);
                (string Name, LogitSampler Sampler)[] ways =
                [
                    ("greedy", new LogitSampler(SamplingSettings.Greedy, vocabulary)),
                    ("temperature 0.8", new LogitSampler(new SamplingSettings(0.8f, 1f, 0, 0f, 0f, 1), vocabulary)),
                    ("temperature 0.8, top-p 0.9 (rejection)", new LogitSampler(new SamplingSettings(0.8f, 0.9f, 0, 0f, 0f, 1), vocabulary)),
                    ("temperature 0.8, top-p 0.9 (selection)", new LogitSampler(new SamplingSettings(0.8f, 0.9f, 0, 0f, 0f, 1), vocabulary, rejectionDraws: 0)),
                    ("temperature 0.8, top-k 40, top-p 0.9", new LogitSampler(new SamplingSettings(0.8f, 0.9f, 40, 0f, 0f, 1), vocabulary)),
                ];

                // Warm-up: long enough for tiered compilation to finish the sampler's loops (the first shape's rounds
                // would otherwise time unoptimised code).
                var warmUp = Stopwatch.StartNew();
                while (warmUp.Elapsed < WarmUp)
                {
                    foreach (var way in ways)
                    {
                        way.Sampler.Next(logits);
                    }
                }

                var fallbacks = ways.Select(w => w.Sampler.NucleusFallbacks).ToArray();
                var times = ways.Select(_ => new List<double>()).ToArray();
                for (var round = -1; round < rounds; round++)
                {
                    for (var k = 0; k < ways.Length; k++)
                    {
                        var i = round % 2 == 0 ? k : ways.Length - 1 - k;
                        var stopwatch = Stopwatch.StartNew();
                        for (var call = 0; call < CallsPerRound; call++)
                        {
                            ways[i].Sampler.Next(logits);
                        }

                        if (round >= 0)
                        {
                            times[i].Add(stopwatch.Elapsed.TotalMicroseconds / CallsPerRound);
                        }
                    }
                }

                var greedy = RunReport.Median(times[0]);
                for (var i = 0; i < ways.Length; i++)
                {
                    var median = RunReport.Median(times[i]);
                    text.AppendLine(string.Create(CultureInfo.InvariantCulture,
                        $"| {vocabulary} | {shape} | {ways[i].Name} | {median:F1} | {median - greedy:F1} | {median / greedy:F2} | {(ways[i].Sampler.NucleusFallbacks - fallbacks[i]) / (double)((rounds + 1) * CallsPerRound):F3} |"));
                }
            }
        }

        return RunReport.Write(text, output);
    }
}
