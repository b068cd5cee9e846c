using System.Diagnostics;
using System.Globalization;
using System.Text;
using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat.Benchmarks;

/// <summary>
/// Workload 6: 1, 2, 4 and 8 conversations decoding at the same time, each on its own session, through the owned-KV
/// backend (steps batched into one Run) and the generator backend (one Run per session). Total decode tokens per second:
/// the tokens after each reply's first, over the time from the first reply's first token to the last reply's end.
/// Both backends run in this process, interleaved per concurrency level.
/// </summary>
internal static class ConcurrentDecode
{
    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    public static async Task<string> RunAsync(Model model, string modelPath, int context, BenchSettings settings, TextMaker text)
    {
        int[] levels = settings.Quick ? [1, 2, 4] : [1, 2, 4, 8];
        var tokens = settings.Quick ? 24 : 64;
        var prompts = Enumerable.Range(0, 8).Select(i => text.Make(settings.UserTokens, $"Conversation {i}: ")).ToArray();
        var rows = new List<(int N, double Owned, double Generator, int OwnedMaxBatch)>();
        foreach (var n in levels)
        {
            var owned = new List<double>();
            var generator = new List<double>();
            var maxBatch = 0;
            for (var repeat = 0; repeat < Math.Max(1, settings.Repeats); repeat++)
            {
                foreach (var backend in new[] { KvSessionBackend.Owned, KvSessionBackend.Generator })
                {
                    using var client = new KvChatClient(model, modelPath, new KvChatClientOptions { MaxSessions = Math.Max(n, 4), SessionBackend = backend, ContextTokens = Math.Min(context, 1024) });
                    var rate = await MeasureAsync(client, prompts.Take(n).ToArray(), tokens).ConfigureAwait(false);
                    (backend == KvSessionBackend.Owned ? owned : generator).Add(rate);
                    if (backend == KvSessionBackend.Owned)
                    {
                        maxBatch = Math.Max(maxBatch, client.GetService<KvCacheStatistics>()!.MaxDecodeBatchSize);
                    }

                    Console.WriteLine(string.Create(Invariant, $"  {n} conversations, {backend,-9} repeat {repeat}: {rate,7:F1} decode tokens/s"));
                }
            }

            rows.Add((n, Report.Median(owned), Report.Median(generator), maxBatch));
        }

        var md = new StringBuilder();
        md.AppendLine("## Workload 6: concurrent conversations, total decode throughput");
        md.AppendLine();
        md.AppendLine(string.Create(Invariant,
            $"Each conversation: a prompt of about {settings.UserTokens} tokens (prefilled first, not timed), then {tokens} greedy tokens, all conversations at once, each on its own session. Total decode tokens/s = tokens after each reply's first / (last reply's end - first reply's first token). Medians of {Math.Max(1, settings.Repeats)} repeat(s), both backends in this process."));
        md.AppendLine();
        md.AppendLine("| conversations | owned KV (batched) tok/s | generator tok/s | owned / generator | largest batch |");
        md.AppendLine("| ---: | ---: | ---: | ---: | ---: |");
        foreach (var (n, o, g, batch) in rows)
        {
            md.AppendLine(string.Create(Invariant, $"| {n} | {o:F1} | {g:F1} | {o / g:F2} | {batch} |"));
        }

        md.AppendLine();
        Console.WriteLine(md);
        return md.ToString();
    }

    private static async Task<double> MeasureAsync(KvChatClient client, string[] prompts, int tokens)
    {
        // Prefill each conversation's prompt first (one token), so the timed part is decode only.
        var histories = prompts.Select(p => new List<ChatMessage> { new(ChatRole.User, p) }).ToArray();
        foreach (var history in histories)
        {
            await client.GetResponseAsync(history, new ChatOptions { MaxOutputTokens = 1 }).ConfigureAwait(false);
        }

        var clock = Stopwatch.StartNew();
        var results = await Task.WhenAll(histories.Select(history => Task.Run(async () =>
        {
            double first = -1;
            double last = 0;
            var count = 0;
            await foreach (var update in client.GetStreamingResponseAsync(history, new ChatOptions { MaxOutputTokens = tokens }).ConfigureAwait(false))
            {
                if (update.Contents.Any(c => c is TextContent))
                {
                    var now = clock.Elapsed.TotalSeconds;
                    first = first < 0 ? now : first;
                    last = now;
                    count++;
                }

                if (update.Contents.OfType<UsageContent>().FirstOrDefault() is { } usage)
                {
                    count = (int)(usage.Details.OutputTokenCount ?? count);
                }
            }

            return (First: first, Last: last, Count: count);
        }))).ConfigureAwait(false);
        var after = results.Sum(r => Math.Max(0, r.Count - 1));
        var span = results.Max(r => r.Last) - results.Min(r => r.First);
        return span > 0 ? after / span : 0;
    }
}
