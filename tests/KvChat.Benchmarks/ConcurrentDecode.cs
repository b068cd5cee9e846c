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
            $"Each conversation: a prompt of about {settings.UserTokens} tokens (prefilled first, not timed), then {tokens} greedy tokens, all conversations at once, each on its own session. Total decode tokens/s = all output tokens / the time from the start of all replies to the end of the last (each prompt cached but for its last token). Medians of {Math.Max(1, settings.Repeats)} repeat(s), both backends in this process."));
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

        // All streams start together; the rate is every output token over the time until the last reply ends. The
        // prompts are cached but for their last token, so the time is decode (and batching) alone.
        var clock = Stopwatch.StartNew();
        var counts = await Task.WhenAll(histories.Select(history => Task.Run(async () =>
        {
            var response = await client.GetResponseAsync(history, new ChatOptions { MaxOutputTokens = tokens }).ConfigureAwait(false);
            return (int)(response.Usage?.OutputTokenCount ?? throw new InvalidOperationException("The reply has no usage."));
        }))).ConfigureAwait(false);
        var seconds = clock.Elapsed.TotalSeconds;
        return seconds > 0 ? counts.Sum() / seconds : 0;
    }
}
