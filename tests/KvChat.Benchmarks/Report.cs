using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.AI;

namespace KvChat.Benchmarks;

/// <summary>Collects one model's runs and writes its markdown tables (and JSON), with the machine and versions in the header.</summary>
internal sealed class Report(string label, string modelPath, int systemTokens, int vocabSize)
{
    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };
    private readonly List<(Workload Workload, string Way, List<WorkloadRun> Runs)> _results = [];
    private readonly Dictionary<int, (int Differ, int Turns)> _retokenization = [];

    public string Label { get; } = label;

    /// <summary>Gets whether only each way's last turn was checked against a fresh prefill.</summary>
    public bool OracleLastTurnOnly { get; init; }

    public int VocabSize { get; } = vocabSize;

    public string ModelName => Path.GetFileName(modelPath);

    public IReadOnlyList<(Workload Workload, string Way, List<WorkloadRun> Runs)> Results => _results;

    public void Add(Workload workload, string way, List<WorkloadRun> runs) => _results.Add((workload, way, runs));

    public void AddRetokenization(Workload workload, (int Differ, int Turns) counts) => _retokenization[workload.Number] = counts;

    public IReadOnlyList<(IReadOnlyList<ChatMessage> History, int[] Prompt)> LastKvChatTurns(Workload workload)
        => _results.Where(r => r.Workload.Number == workload.Number && r.Way == "kvchat")
            .SelectMany(r => r.Runs[0].Turns)
            .Where(t => t.HistoryBefore is not null && t.Prompt is not null)
            .Select(t => (t.HistoryBefore!, t.Prompt!))
            .ToList();

    public List<WorkloadRun>? RunsOf(int workload, string way)
        => _results.FirstOrDefault(r => r.Workload.Number == workload && r.Way == way).Runs;

    /// <summary>Median time to first token of each turn over repeats.</summary>
    public static double[] MedianTtft(List<WorkloadRun> runs)
        => Enumerable.Range(0, runs[0].Turns.Count).Select(i => Median(runs.Select(r => r.Turns[i].TimeToFirstTokenMs))).ToArray();

    /// <summary>Median decode rate over every turn of every repeat.</summary>
    public static double MedianDecode(List<WorkloadRun> runs)
        => Median(runs.SelectMany(r => r.Turns).Where(t => t.DecodeTokensPerSecond > 0).Select(t => t.DecodeTokensPerSecond));

    /// <summary>Prefill rate of the first turn (the long system prompt): prompt tokens over time to first token, median.</summary>
    public static double FirstTurnPrefill(List<WorkloadRun> runs)
        => Median(runs.Select(r => r.Turns[0].PrefilledTokens / (r.Turns[0].TimeToFirstTokenMs / 1000)));

    public static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length == 0 ? 0 : sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[(sorted.Length / 2) - 1] + sorted[sorted.Length / 2]) / 2;
    }

    /// <summary>The way each way is measured against: the raw ideal of its own engine.</summary>
    public static string IdealOf(string way) => way.StartsWith("llama", StringComparison.Ordinal) ? "llama-ideal" : "ideal";

    /// <summary>The 1, 5 and 15 minute load averages (the machine is shared: a high load makes every figure noisier).</summary>
    public static string LoadAverage()
    {
        try
        {
            return string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3));
        }
        catch (IOException)
        {
            return "unknown";
        }
    }

    public static string Header(BenchSettings settings, string loadAtStart)
    {
        var md = new StringBuilder();
        md.AppendLine(settings.Quick ? "# Benchmark results (quick mode: tiny model, one repeat; figures not meaningful)" : "# Benchmark results");
        md.AppendLine();
        md.AppendLine(string.Create(Invariant, $"- Command: `{settings.Command.Trim()}`"));
        md.AppendLine(string.Create(Invariant, $"- Date (UTC): {DateTime.UtcNow:yyyy-MM-dd HH:mm}"));
        md.AppendLine(string.Create(Invariant, $"- Machine: {Environment.ProcessorCount} cores, {RuntimeInformation.OSDescription}, {RuntimeInformation.ProcessArchitecture}, {CpuName()}, {GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / (1L << 30)} GiB"));
        md.AppendLine(string.Create(Invariant, $"- Runtime: {RuntimeInformation.FrameworkDescription}; Microsoft.ML.OnnxRuntimeGenAI {PackageVersion("Microsoft.ML.OnnxRuntimeGenAI")}; Microsoft.ML.OnnxRuntime {PackageVersion("Microsoft.ML.OnnxRuntime")}; LLamaSharp {PackageVersion("LLamaSharp")} with LLamaSharp.Backend.Cpu {PackageVersion("LLamaSharp.Backend.Cpu")} (llama.cpp)"));
        md.AppendLine(string.Create(Invariant, $"- Load average (1, 5, 15 min) at the start: {loadAtStart}; at the end: {LoadAverage()}"));
        md.AppendLine(string.Create(Invariant, $"- Threads: {settings.Threads} for both engines (GenAI `session_options.intra_op_num_threads`, llama.cpp `n_threads` and `n_threads_batch`); llama.cpp's KV cache is f32, as GenAI's CPU cache."));
        md.AppendLine(string.Create(Invariant, $"- Turns: system prompt about {settings.SystemTokens} tokens; user turns about {settings.UserTokens} tokens; replies {settings.ReplyTokens} tokens (greedy, the model never ends a reply early); {settings.Repeats} repeat(s), medians"));
        md.AppendLine("- TTFT: time from the call to the first streamed token. Prefilled: prompt tokens computed (not served from a KV cache). Decode: tokens per second after the first token. Prefill tok/s: turn 1's prompt tokens over its TTFT.");
        md.AppendLine("- Replies: whether every turn's reply equals the greedy reply of a fresh prefill of the whole history on the same engine (GenAI for GenAI ways, llama.cpp for LLamaSharp ways).");
        md.AppendLine();
        return md.ToString();
    }

    public string ToMarkdown()
    {
        var md = new StringBuilder();
        md.AppendLine(string.Create(Invariant, $"# Model `{Label}` (`{ModelName}`, vocabulary {VocabSize:N0}), system prompt {systemTokens} tokens"));
        md.AppendLine();
        foreach (var group in _results.GroupBy(r => r.Workload.Number))
        {
            var workload = group.First().Workload;
            md.AppendLine(string.Create(Invariant, $"## {Label}, workload {workload.Number}: {workload.Title}"));
            md.AppendLine();
            var stateless = group.FirstOrDefault(r => r.Way == "genai");
            var statelessLast = stateless.Runs is null ? double.NaN : MedianTtft(stateless.Runs)[^1];
            md.AppendLine("| way | TTFT first turn ms | TTFT last turn ms | last TTFT / own ideal | GenAI stateless / last TTFT | prefilled tokens | prefilled / own ideal | system prompt prefills | prefill tok/s | decode tok/s | wall s | peak MiB | replies |");
            md.AppendLine("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
            foreach (var (_, way, runs) in group)
            {
                var ideal = group.FirstOrDefault(r => r.Way == IdealOf(way));
                var idealLast = ideal.Runs is null ? double.NaN : MedianTtft(ideal.Runs)[^1];
                var idealPrefilled = ideal.Runs is null ? double.NaN : ideal.Runs[0].Turns.Sum(t => t.PrefilledTokens);
                var ttft = MedianTtft(runs);
                var prefilled = runs[0].Turns.Sum(t => t.PrefilledTokens);
                var systemPrefills = runs[0].Turns.Count(t => t.PrefilledTokens >= systemTokens);
                md.AppendLine(string.Create(Invariant,
                    $"| {DisplayName(way)} | {ttft[0]:F0} | {ttft[^1]:F0} | {ttft[^1] / idealLast:F2} | {statelessLast / ttft[^1]:F1} | {prefilled} | {prefilled / idealPrefilled:F2} | {systemPrefills} | {FirstTurnPrefill(runs):F0} | {MedianDecode(runs):F1} | {Median(runs.Select(r => r.WallSeconds)):F1} | {runs.Max(r => r.PeakMegabytes):F0} | {Replies(runs[0])} |"));
            }

            md.AppendLine();
            md.AppendLine("TTFT by turn (ms, median):");
            md.AppendLine();
            var turnCount = group.First().Runs[0].Turns.Count;
            md.AppendLine("| way | " + string.Join(" | ", Enumerable.Range(1, turnCount)) + " |");
            md.AppendLine("| --- |" + string.Concat(Enumerable.Repeat(" ---: |", turnCount)));
            foreach (var (_, way, runs) in group)
            {
                md.AppendLine($"| {DisplayName(way)} | " + string.Join(" | ", MedianTtft(runs).Select(v => v.ToString("F0", Invariant))) + " |");
            }

            md.AppendLine();
            var kv = group.FirstOrDefault(r => r.Way == "kvchat");
            var caching = group.FirstOrDefault(r => r.Way == "genai-caching");
            if (kv.Runs is not null && caching.Runs is not null)
            {
                var differ = kv.Runs[0].Turns.Zip(caching.Runs[0].Turns).Count(p => p.First.Text != p.Second.Text);
                md.AppendLine(string.Create(Invariant, $"GenAI's caching mode replied differently from KvChatClient (which equals a fresh prefill) on {differ} of {kv.Runs[0].Turns.Count} turns."));
            }

            var llamaIdeal = group.FirstOrDefault(r => r.Way == "llama-ideal");
            if (kv.Runs is not null && llamaIdeal.Runs is not null)
            {
                var same = kv.Runs[0].Turns.Zip(llamaIdeal.Runs[0].Turns).Count(p => p.First.Text == p.Second.Text);
                md.AppendLine(string.Create(Invariant, $"llama.cpp's ideal replied the same text as KvChatClient on {same} of {kv.Runs[0].Turns.Count} turns (same network and weights; the two engines round differently, and at int4 each quantizes activations its own way)."));
            }

            if (_retokenization.TryGetValue(workload.Number, out var re))
            {
                md.AppendLine(string.Create(Invariant, $"KvChatClient's prompt tokens differ from the stateless anchor's re-encoding of the same history on {re.Differ} of {re.Turns} turns (a reply re-entered as the ids it was generated as, or message text encoded on its own)."));
            }

            md.AppendLine();
        }

        return md.ToString();
    }

    private string Replies(WorkloadRun run)
        => !run.OracleChecked ? string.Empty
            : OracleLastTurnOnly ? (run.OracleFailures == 0 ? "last turn equal" : "last turn differs")
            : run.OracleFailures == 0 ? "equal" : $"{run.OracleFailures} of {run.Turns.Count} differ";

    public static string ToJson(IEnumerable<Report> reports)
        => JsonSerializer.Serialize(
            reports.SelectMany(report => report._results.Select(r => new
            {
                model = report.Label,
                workload = r.Workload.Number,
                way = r.Way,
                runs = r.Runs.Select(run => new
                {
                    wall = run.WallSeconds,
                    peakMiB = run.PeakMegabytes,
                    oracleChecked = run.OracleChecked,
                    oracleFailures = run.OracleFailures,
                    turns = run.Turns.Select(t => new { t.PromptTokens, t.PrefilledTokens, t.OutputTokens, t.TimeToFirstTokenMs, t.DecodeTokensPerSecond, t.WallMs }),
                }),
            })),
            Indented);

    public static string DisplayName(string way) => way switch
    {
        "genai" => "GenAI client, stateless",
        "genai-caching" => "GenAI client, EnableCaching",
        "kvchat" => "KvChatClient (default: owned KV, 4 sessions)",
        "kvchat-session-each" => "KvChatClient, 12 sessions",
        "kvchat-no-memo" => "KvChatClient, replies re-encoded (no reply memo)",
        "kvchat-generator" => "KvChatClient, generator backend (4 sessions)",
        "kvchat-recompute" => "KvChatClient, one-row decode steps, replies prefilled again",
        "ideal" => "ideal: raw generator, new tokens only",
        "llama-stateless" => "LLamaSharp AsChatClient, StatelessExecutor",
        "llama-interactive" => "LLamaSharp AsChatClient, InteractiveExecutor",
        "llama-ideal" => "llama.cpp ideal: raw LLamaContext, new tokens only",
        _ => way,
    };

    /// <summary>A package version from the central package versions the benchmark was built with.</summary>
    internal static string PackageVersion(string package)
    {
        for (var directory = new DirectoryInfo(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
        {
            var props = Path.Combine(directory.FullName, "Directory.Packages.props");
            if (File.Exists(props))
            {
                var match = System.Text.RegularExpressions.Regex.Match(File.ReadAllText(props), $"Include=\"{System.Text.RegularExpressions.Regex.Escape(package)}\" Version=\"([^\"]+)\"");
                return match.Success ? match.Groups[1].Value : "unknown";
            }
        }

        return "unknown";
    }

    private static string CpuName()
    {
        try
        {
            return File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "unknown CPU";
        }
        catch (IOException)
        {
            return "unknown CPU";
        }
    }
}

/// <summary>Time-to-first-token charts: one PNG per workload, a line per way.</summary>
internal static class Chart
{
    public static IReadOnlyList<string> WriteTimeToFirstToken(Report report, string directory, string prefix)
    {
        var written = new List<string>();
        foreach (var group in report.Results.GroupBy(r => r.Workload.Number))
        {
            var plot = new ScottPlot.Plot();
            foreach (var (_, way, runs) in group)
            {
                var ttft = Report.MedianTtft(runs);
                var xs = Enumerable.Range(1, ttft.Length).Select(i => (double)i).ToArray();
                var line = plot.Add.Scatter(xs, ttft);
                line.LegendText = Report.DisplayName(way);
                line.LineWidth = 2;
                line.MarkerSize = 5;
            }

            var workload = group.First().Workload;
            plot.Title($"Workload {workload.Number}: time to first token by turn");
            plot.XLabel("turn");
            plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericFixedInterval(1);
            plot.YLabel("time to first token (ms)");
            plot.ShowLegend(ScottPlot.Alignment.UpperLeft);
            var path = Path.Combine(directory, $"{prefix}-workload{workload.Number}.png");
            plot.SavePng(path, 900, 520);
            written.Add(path);
        }

        return written;
    }
}
