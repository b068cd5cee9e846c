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
/// Both backends run in this process, interleaved per concurrency level. On a decoder whose one-row steps drift from
/// prefills (int4 at <c>accuracy_level</c> 4), where the client decodes two rows a step and each session's step runs
/// alone (<see cref="RowExactness"/>), the owned backend also runs with one-row steps, batched, replies prefilled again.
/// </summary>
internal static class ConcurrentDecode
{
    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    public static async Task<string> RunAsync(Model model, string modelPath, int context, BenchSettings settings, TextMaker text)
    {
        int[] levels = settings.Quick ? [1, 2, 4] : [1, 2, 4, 8];
        var tokens = settings.Quick ? 24 : 64;
        var prompts = Enumerable.Range(0, 8).Select(i => text.Make(settings.UserTokens, $"Conversation {i}: ")).ToArray();
        var rows = new List<(int N, double Owned, double Generator, int OwnedMaxBatch, double OneRow, int OneRowMaxBatch)>();
        bool? twoRows = null;
        foreach (var n in levels)
        {
            var owned = new List<double>();
            var generator = new List<double>();
            var oneRow = new List<double>();
            var maxBatch = 0;
            var oneRowBatch = 0;
            for (var repeat = 0; repeat < Math.Max(1, settings.Repeats); repeat++)
            {
                foreach (var (backend, twoRowSteps) in new[] { (KvSessionBackend.Owned, true), (KvSessionBackend.Owned, false), (KvSessionBackend.Generator, true) })
                {
                    if (!twoRowSteps && twoRows == false)
                    {
                        continue; // One-row steps already: the default is this way.
                    }

                    using var client = new KvChatClient(model, modelPath, new KvChatClientOptions { MaxSessions = Math.Max(n, 4), SessionBackend = backend, ContextTokens = Math.Min(context, 1024), TwoRowDecodeSteps = twoRowSteps });
                    twoRows ??= client.SessionBackend.RowExactness.DecodesTwoRows;
                    if (!twoRowSteps && twoRows == false)
                    {
                        continue;
                    }

                    var rate = await MeasureAsync(client, prompts.Take(n).ToArray(), tokens).ConfigureAwait(false);
                    var batch = client.GetService<KvCacheStatistics>()!.MaxDecodeBatchSize;
                    (backend == KvSessionBackend.Generator ? generator : twoRowSteps ? owned : oneRow).Add(rate);
                    if (backend == KvSessionBackend.Owned && twoRowSteps)
                    {
                        maxBatch = Math.Max(maxBatch, batch);
                    }
                    else if (backend == KvSessionBackend.Owned)
                    {
                        oneRowBatch = Math.Max(oneRowBatch, batch);
                    }

                    Console.WriteLine(string.Create(Invariant, $"  {n} conversations, {backend,-9}{(twoRowSteps ? string.Empty : " one-row")} repeat {repeat}: {rate,7:F1} decode tokens/s"));
                }
            }

            rows.Add((n, Report.Median(owned), Report.Median(generator), maxBatch, oneRow.Count > 0 ? Report.Median(oneRow) : double.NaN, oneRowBatch));
        }

        var md = new StringBuilder();
        md.AppendLine("## Workload 6: concurrent conversations, total decode throughput");
        md.AppendLine();
        md.AppendLine(string.Create(Invariant,
            $"Each conversation: a prompt of about {settings.UserTokens} tokens (prefilled first, not timed), then {tokens} greedy tokens, all conversations at once, each on its own session. Total decode tokens/s = all output tokens / the time from the start of all replies to the end of the last (each prompt cached but for its last token). Medians of {Math.Max(1, settings.Repeats)} repeat(s), both backends in this process."));
        md.AppendLine();
        if (twoRows == true)
        {
            md.AppendLine("This decoder's one-row steps drift from prefills: the owned backend's default decodes two rows a step, one session per Run (not batched); the one-row column is the owned backend with two-row steps off (batched, each reply prefilled again with the next turn).");
            md.AppendLine();
            md.AppendLine("| conversations | owned KV, two-row steps tok/s | owned KV, one-row steps (batched) tok/s | generator tok/s | two-row / one-row | owned / generator | largest batch (one-row) |");
            md.AppendLine("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
            foreach (var (n, o, g, _, one, oneBatch) in rows)
            {
                md.AppendLine(string.Create(Invariant, $"| {n} | {o:F1} | {one:F1} | {g:F1} | {o / one:F2} | {o / g:F2} | {oneBatch} |"));
            }
        }
        else
        {
            md.AppendLine("| conversations | owned KV (batched) tok/s | generator tok/s | owned / generator | largest batch |");
            md.AppendLine("| ---: | ---: | ---: | ---: | ---: |");
            foreach (var (n, o, g, batch, _, _) in rows)
            {
                md.AppendLine(string.Create(Invariant, $"| {n} | {o:F1} | {g:F1} | {o / g:F2} | {batch} |"));
            }
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
