using System.Globalization;
using System.Text;

namespace KvChat.Benchmarks;

/// <summary>The side-by-side figures against the goals for KvChatClient and the .NET peer (reported, never asserted).</summary>
internal static class Goals
{
    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    public static string ToMarkdown(BenchSettings settings, IReadOnlyList<Report> reports)
    {
        var md = new StringBuilder();
        md.AppendLine("## Against the goals: KvChatClient and llama.cpp (LLamaSharp) on the same network, weights and threads");
        md.AppendLine();
        md.AppendLine(string.Create(Invariant, $"Same run, {settings.Threads} threads each. Decode and prefill compare KvChatClient with llama.cpp's raw ideal (a kept `LLamaContext` that decodes only new tokens, argmax over the logits); TTFT compares it with LLamaSharp's best `IChatClient` way."));
        md.AppendLine();
        md.AppendLine("| model | workload | measure | KvChatClient | llama.cpp / LLamaSharp | ratio | goal | met |");
        md.AppendLine("| --- | ---: | --- | ---: | ---: | ---: | --- | --- |");
        var any = false;
        foreach (var report in reports)
        {
            foreach (var workload in new[] { 1, 5 })
            {
                var kv = report.RunsOf(workload, "kvchat");
                var ideal = report.RunsOf(workload, "llama-ideal");
                var stateless = report.RunsOf(workload, "llama-stateless");
                var interactive = report.RunsOf(workload, "llama-interactive");
                if (kv is null || ideal is null || stateless is null || interactive is null)
                {
                    continue;
                }

                any = true;
                var name = $"{report.Label} (vocab {report.VocabSize:N0})";
                if (workload == 1)
                {
                    var decode = Report.MedianDecode(kv);
                    var peerDecode = Report.MedianDecode(ideal);
                    Row(md, name, workload, "decode tok/s", decode, peerDecode, decode / peerDecode, "≥ 1.1x", decode / peerDecode >= 1.1);
                    var prefill = Report.FirstTurnPrefill(kv);
                    var peerPrefill = Report.FirstTurnPrefill(ideal);
                    Row(md, name, workload, "prefill tok/s (turn 1)", prefill, peerPrefill, prefill / peerPrefill, "≥ 1.5x", prefill / peerPrefill >= 1.5);
                }

                var last = Report.MedianTtft(kv)[^1];
                var best = new[] { ("StatelessExecutor", stateless), ("InteractiveExecutor", interactive) }
                    .Select(w => (w.Item1, Runs: w.Item2, Last: Report.MedianTtft(w.Item2)[^1])).MinBy(w => w.Last);
                var kvEqual = kv[0].OracleChecked && kv[0].OracleFailures == 0;
                var peerEqual = best.Runs[0].OracleChecked && best.Runs[0].OracleFailures == 0;
                var ratio = last / best.Last;
                var scope = report.OracleLastTurnOnly ? "last turn" : "every turn";
                var peerReplies = peerEqual ? "equal" : report.OracleLastTurnOnly ? "differs" : $"{best.Runs[0].OracleFailures} of {best.Runs[0].Turns.Count} differ";
                md.AppendLine(string.Create(Invariant,
                    $"| {name} | {workload} | last-turn TTFT ms (replies vs a fresh prefill, {scope}) | {last:F0} ({(kvEqual ? "equal" : "differ")}) | {best.Last:F0}, {best.Item1} ({peerReplies}) | {ratio:F2}x | {(workload == 1 ? "≤ 0.6x, equal" : "(reported)")} | {(workload == 1 ? (ratio <= 0.6 && kvEqual ? "yes" : "no") : "-")} |"));
            }
        }

        if (!any)
        {
            md.AppendLine("| (no model ran the peer) | | | | | | | |");
        }

        md.AppendLine();
        return md.ToString();
    }

    private static void Row(StringBuilder md, string model, int workload, string measure, double ours, double theirs, double ratio, string goal, bool met)
        => md.AppendLine(string.Create(Invariant, $"| {model} | {workload} | {measure} | {ours:F1} | {theirs:F1} | {ratio:F2}x | {goal} | {(met ? "yes" : "no")} |"));
}
