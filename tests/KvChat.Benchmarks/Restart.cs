using System.Diagnostics;
using System.Globalization;
using System.Text;
using KvChat.ModelKit;
using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat.Benchmarks;

/// <summary>
/// A restart with a warmed system prompt on disk (<c>--restart [--quick] [--repeats R] [--out FILE]</c>): a new client
/// and its first request (the system prompt of workload 1 and a question, 8 reply tokens), cold (no
/// <see cref="KvChatClientOptions.PrefixCacheDirectory"/>: the whole prompt is prefilled) against warm (a directory a
/// previous client filled with <c>PrefillAsync([system])</c>: the prefix's KV is loaded, only the question is
/// prefilled). Client construction and first-request TTFT are timed separately; the two ways alternate, repeat after
/// repeat, in one process; medians.
/// </summary>
internal static class Restart
{
    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    public static async Task<int> RunAsync(string[] args)
    {
        var settings = BenchSettings.Parse(args);
        var repeats = settings.Quick ? 2 : Math.Max(settings.Repeats, 5);
        var label = settings.Quick ? "tiny" : "bench";
        var path = settings.ModelPath ?? BenchmarkApp.GenerateModel(settings, ModelKitOptions.FromPreset(label), label);
        using var handle = new OgaHandle();
        string system;
        string user;
        using (var tokenizer = new Tokenizer(path))
        {
            var text = new TextMaker(tokenizer, seed: 11);
            system = text.Make(settings.SystemTokens);
            user = text.Make(settings.UserTokens, "Question: ");
        }

        var directory = Path.Combine(settings.CacheDirectory, "restart-prefixes-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            var threads = settings.Threads;
            using (var filler = new KvChatClient(path, new KvChatClientOptions { PrefixCacheDirectory = directory, IntraOpThreads = threads }))
            {
                var prefilled = await filler.PrefillAsync([new ChatMessage(ChatRole.System, system)]).ConfigureAwait(false);
                Console.WriteLine(string.Create(Invariant, $"filled {directory}: {prefilled} prefix tokens"));
            }

            var results = new Dictionary<string, List<Sample>> { ["cold"] = [], ["warm"] = [] };
            for (var repeat = -1; repeat < repeats; repeat++)
            {
                foreach (var way in repeat % 2 == 0 ? new[] { "cold", "warm" } : ["warm", "cold"])
                {
                    var sample = await MeasureAsync(path, way == "warm" ? directory : null, threads, system, user).ConfigureAwait(false);
                    Console.WriteLine(string.Create(Invariant,
                        $"  repeat {repeat,2} {way}: construct {sample.ConstructMs,8:F1} ms, TTFT {sample.TimeToFirstTokenMs,8:F1} ms, cached {sample.Cached} of {sample.Prompt}"));
                    if (repeat >= 0)
                    {
                        results[way].Add(sample);
                    }
                }
            }

            var report = Markdown(settings, path, results, threads);
            Console.Write(report);
            var output = args.SkipWhile(a => a != "--out").Skip(1).FirstOrDefault()
                ?? Path.Combine(settings.OutputDirectory, settings.Quick ? "restart-quick.md" : "restart.md");
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(output))!);
            await File.WriteAllTextAsync(output, report).ConfigureAwait(false);
            Console.WriteLine($"wrote {output}");
            var identical = results["warm"].Concat(results["cold"]).Select(s => s.Text).Distinct().Count() == 1;
            return identical ? 0 : 1;
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    private static async Task<Sample> MeasureAsync(string path, string? directory, int threads, string system, string user)
    {
        var started = Stopwatch.GetTimestamp();
        using var client = new KvChatClient(path, new KvChatClientOptions { PrefixCacheDirectory = directory, IntraOpThreads = threads });
        var constructMs = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
        var request = Stopwatch.GetTimestamp();
        double? ttft = null;
        var text = new StringBuilder();
        UsageDetails? usage = null;
        await foreach (var update in client.GetStreamingResponseAsync(
            [new ChatMessage(ChatRole.System, system), new ChatMessage(ChatRole.User, user)],
            new ChatOptions { MaxOutputTokens = 8 }).ConfigureAwait(false))
        {
            if (ttft is null && update.Contents.OfType<TextContent>().Any())
            {
                ttft = Stopwatch.GetElapsedTime(request).TotalMilliseconds;
            }

            text.Append(update.Text);
            usage = update.Contents.OfType<UsageContent>().FirstOrDefault()?.Details ?? usage;
        }

        return new Sample(constructMs, ttft ?? double.NaN, (int)(usage?.CachedInputTokenCount ?? 0), (int)(usage?.InputTokenCount ?? 0), text.ToString());
    }

    private static string Markdown(BenchSettings settings, string path, Dictionary<string, List<Sample>> results, int threads)
    {
        var cold = results["cold"];
        var warm = results["warm"];
        double Median(List<Sample> samples, Func<Sample, double> value) => Report.Median(samples.Select(value));
        var report = new StringBuilder();
        report.AppendLine("## Restart with a warmed system prompt on disk");
        report.AppendLine();
        report.AppendLine(string.Create(Invariant,
            $"`{settings.Command}`; model {path}; {threads} intra-op threads, {Environment.ProcessorCount} logical processors; prompt {cold[0].Prompt} tokens (system prompt cached warm: {warm[0].Cached}); reply 8 tokens; a new client per repeat, the two ways alternating; medians of {cold.Count} repeats."));
        report.AppendLine();
        report.AppendLine("| start | client construction, ms | first-request TTFT, ms | construction + TTFT, ms | cached tokens |");
        report.AppendLine("| --- | ---: | ---: | ---: | ---: |");
        foreach (var (name, samples) in new[] { ("cold (no directory)", cold), ("warm (prefix on disk)", warm) })
        {
            report.AppendLine(string.Create(Invariant,
                $"| {name} | {Median(samples, s => s.ConstructMs):F1} | {Median(samples, s => s.TimeToFirstTokenMs):F1} | {Median(samples, s => s.ConstructMs + s.TimeToFirstTokenMs):F1} | {samples[0].Cached} |"));
        }

        report.AppendLine();
        report.AppendLine(string.Create(Invariant,
            $"Warm/cold TTFT ratio: {Median(warm, s => s.TimeToFirstTokenMs) / Median(cold, s => s.TimeToFirstTokenMs):F3}; replies identical: {(warm.Concat(cold).Select(s => s.Text).Distinct().Count() == 1 ? "yes" : "NO")}."));
        return report.ToString();
    }

    private sealed record Sample(double ConstructMs, double TimeToFirstTokenMs, int Cached, int Prompt, string Text);
}
