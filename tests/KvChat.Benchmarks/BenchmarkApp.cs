using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using KvChat.ModelKit;
using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat.Benchmarks;

/// <summary>
/// End-to-end benchmark: the same deterministic workloads through GenAI's own chat client (stateless and with its
/// ConversationId caching), KvChatClient, and a raw generator that appends only new tokens (the ideal), on one model in
/// one process, so ratios are measured side by side.
/// </summary>
internal static class BenchmarkApp
{
    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    public static async Task<int> RunAsync(string[] args)
    {
        var settings = BenchSettings.Parse(args);
        var loadAtStart = Report.LoadAverage();
        using var handle = new OgaHandle();
        // The first model runs every workload asked for; the real shapes after it run the workloads the peer runs too.
        var models = new List<(string Label, string Path, IReadOnlySet<int> Workloads)>();
        foreach (var (name, index) in settings.Models.Select((m, i) => (m, i)))
        {
            var path = index == 0 && settings.ModelPath is not null ? settings.ModelPath : GenerateModel(settings, ModelKitOptions.FromPreset(name), name);
            models.Add((name, path, index == 0 ? settings.Workloads : settings.Workloads.Intersect(PeerWorkloads).ToHashSet()));
        }

        var markdown = new StringBuilder();
        var reports = new List<Report>();
        var failures = 0;
        Directory.CreateDirectory(settings.OutputDirectory);
        var mdPath = Path.Combine(settings.OutputDirectory, settings.Quick ? "results-quick.md" : "results.md");
        var text = string.Empty;
        foreach (var (label, path, workloads) in models)
        {
            var (report, modelMarkdown, modelFailures) = await RunModelAsync(settings, label, path, workloads).ConfigureAwait(false);
            reports.Add(report);
            markdown.Append(modelMarkdown);
            failures += modelFailures;

            // Written after every model, so a long run keeps what it has measured.
            text = Report.Header(settings, loadAtStart) + Goals.ToMarkdown(settings, reports) + markdown;
            await File.WriteAllTextAsync(mdPath, text).ConfigureAwait(false);
            await File.WriteAllTextAsync(Path.ChangeExtension(mdPath, ".json"), Report.ToJson(reports)).ConfigureAwait(false);
        }

        foreach (var report in reports)
        {
            foreach (var png in Chart.WriteTimeToFirstToken(report, settings.OutputDirectory, $"{Path.GetFileNameWithoutExtension(mdPath)}{(report.Label is "bench" or "tiny" ? string.Empty : "-" + report.Label)}"))
            {
                Console.WriteLine($"wrote {png}");
            }
        }

        Console.WriteLine(text);
        Console.WriteLine($"wrote {mdPath}");
        if (failures > 0)
        {
            Console.Error.WriteLine($"{failures} KvChatClient turns differ from a fresh prefill of the same prompt.");
            return 1;
        }

        return 0;
    }

    /// <summary>The workloads run on the real shapes, where the peer runs too.</summary>
    public static IReadOnlySet<int> PeerWorkloads { get; } = new HashSet<int> { 1, 5 };

    private static async Task<(Report Report, string Markdown, int Failures)> RunModelAsync(BenchSettings settings, string label, string modelPath, IReadOnlySet<int> workloads)
    {
        // The same intra-op thread count for GenAI as for llama.cpp.
        using var config = new Config(modelPath);
        config.Overlay(IntraOpThreads.Overlay(settings.Threads));
        using var model = new Model(config);
        using var tokenizer = new Tokenizer(model);
        var folder = ModelFolder.Read(modelPath);
        var context = Math.Min(folder.ContextLength, 4096);
        var gguf = Path.Combine(modelPath, ModelKit.ModelKit.GgufFileName);
        using var peer = settings.Peer && File.Exists(gguf) ? new LlamaPeer(gguf, settings.Threads, (uint)context) : null;
        await Warmup.RunAsync(model, modelPath, peer).ConfigureAwait(false);
        var text = new TextMaker(tokenizer, seed: 11);
        var system = text.Make(settings.SystemTokens);
        Console.WriteLine(string.Create(Invariant, $"model {label}: {modelPath} ({folder.Layers} layers, vocabulary {folder.VocabSize}); system prompt {text.CountTokens(system)} tokens; repeats {settings.Repeats}; peer {(peer is null ? "none" : "llama.cpp " + gguf)}"));

        // On the real shapes a fresh prefill of every turn costs as much as the stateless way itself: check the last turn.
        var realShape = label is not ("bench" or "tiny");
        var lastTurnOnly = realShape || settings.OracleLastTurnOnly;
        var report = new Report(label, modelPath, text.CountTokens(system), folder.VocabSize) { OracleLastTurnOnly = lastTurnOnly };
        var failures = 0;
        foreach (var workload in Workload.All(settings, system, text).Where(w => workloads.Contains(w.Number)))
        {
            Console.WriteLine($"== {label} workload {workload.Number}: {workload.Title}");
            foreach (var way in WayFactory.Names(workload, peer is not null, realShape || settings.SideBySideOnly).Where(w => settings.Ways is null || settings.Ways.Contains(w)))
            {
                var runs = new List<WorkloadRun>();
                for (var repeat = 0; repeat < settings.Repeats; repeat++)
                {
                    using var instance = WayFactory.Create(way, model, modelPath, context, workload, peer);
                    using var memory = MemorySampler.Start();
                    var stopwatch = Stopwatch.StartNew();
                    var turns = await workload.RunAsync(instance).ConfigureAwait(false);
                    var wall = stopwatch.Elapsed.TotalSeconds;
                    var peak = memory.StopAndGetPeakDelta();
                    var checkedTurns = lastTurnOnly ? turns.TakeLast(1).ToList() : turns;
                    int? oracleFailures = repeat != 0 ? null
                        : way.StartsWith("kvchat", StringComparison.Ordinal) ? Oracle.Check(model, checkedTurns, Oracle.DecodesTwoRows(instance))
                        : way.StartsWith("llama", StringComparison.Ordinal) ? LlamaOracle.Check(peer!, checkedTurns, settings.ReplyTokens)
                        : null;
                    if (way.StartsWith("kvchat", StringComparison.Ordinal))
                    {
                        failures += oracleFailures ?? 0;
                    }

                    runs.Add(new WorkloadRun(turns, wall, peak, oracleFailures ?? 0, oracleFailures is not null));
                    Console.WriteLine(string.Create(Invariant,
                        $"  {instance.Name,-28} repeat {repeat}: wall {wall,6:F1} s, prefilled {turns.Sum(t => t.PrefilledTokens),6}, last TTFT {turns[^1].TimeToFirstTokenMs,8:F1} ms{(oracleFailures > 0 ? $", differs from a fresh prefill on {oracleFailures} turns" : string.Empty)}"));
                }

                report.Add(workload, way, runs);
            }

            report.AddRetokenization(workload, Oracle.CountAnchorPromptDifferences(tokenizer, report.LastKvChatTurns(workload)));
        }

        var markdown = report.ToMarkdown();
        if (workloads.Contains(5) && label is "bench" or "tiny" && !settings.SideBySideOnly)
        {
            Console.WriteLine("== workload 5: agent loop");
            markdown += await AgentLoop.RunAsync(settings, system).ConfigureAwait(false);
        }

        if (workloads.Contains(6))
        {
            Console.WriteLine("== workload 6: concurrent conversations, decode throughput");
            markdown += await ConcurrentDecode.RunAsync(model, modelPath, context, settings, text).ConfigureAwait(false);
        }

        return (report, markdown, failures);
    }

    internal static string GenerateModel(BenchSettings settings, ModelKitOptions preset, string label)
    {
        // Replies of a fixed length: the benchmark model never says end-of-sequence. The GGUF runs the same network in llama.cpp.
        var options = preset with { EndOfTurnBias = -100, WriteGguf = true };
        var directory = Path.Combine(settings.CacheDirectory, $"{label}-noeos-gguf");
        if (!File.Exists(Path.Combine(directory, "genai_config.json")) || !File.Exists(Path.Combine(directory, ModelKit.ModelKit.GgufFileName)))
        {
            Console.WriteLine($"writing the {label} model to {directory} ...");
            var result = ModelKit.ModelKit.Write(options, directory);
            Console.WriteLine(string.Create(Invariant, $"  {result.ParameterCount:N0} parameters in {result.Elapsed.TotalSeconds:F1} s"));
        }

        return directory;
    }
}

internal sealed record WorkloadRun(IReadOnlyList<TurnResult> Turns, double WallSeconds, double PeakMegabytes, int OracleFailures, bool OracleChecked);

/// <summary>Command-line settings.</summary>
internal sealed record BenchSettings(
    bool Quick, string? ModelPath, string OutputDirectory, string CacheDirectory, int Repeats, IReadOnlySet<int> Workloads,
    int SystemTokens, int UserTokens, int ReplyTokens, string Command, int Threads, IReadOnlyList<string> Models, bool Peer,
    bool SideBySideOnly, bool OracleLastTurnOnly, IReadOnlySet<string>? Ways = null)
{
    public static BenchSettings Parse(string[] args)
    {
        var quick = args.Contains("--quick");
        string? Value(string name)
        {
            var i = Array.IndexOf(args, name);
            return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
        }

        var root = FindRepositoryRoot();
        return new BenchSettings(
            quick,
            Value("--model"),
            Value("--out") ?? (quick ? Path.Combine(root, ".artifacts", "benchmarks") : Path.Combine(root, "docs", "benchmarks")),
            Value("--cache") ?? Path.Combine(root, ".artifacts", "models"),
            int.Parse(Value("--repeats") ?? (quick ? "1" : "3"), CultureInfo.InvariantCulture),
            (Value("--workloads") ?? "1,2,3,4,5,6").Split(',').Select(w => int.Parse(w, CultureInfo.InvariantCulture)).ToHashSet(),
            quick ? 200 : 1000,
            quick ? 20 : 40,
            quick ? 12 : 32,
            "dotnet run -c Release --project tests/KvChat.Benchmarks -- " + string.Join(' ', args),
            int.Parse(Value("--threads") ?? "2", CultureInfo.InvariantCulture),
            (Value("--models") ?? (quick ? "tiny" : "bench,qwen2.5-0.5b")).Split(',', StringSplitOptions.RemoveEmptyEntries),
            !args.Contains("--no-peer"),
            Value("--ways") == "side-by-side",
            Value("--oracle") == "last",
            Value("--ways") is { } ways && ways != "side-by-side" ? ways.Split(',').ToHashSet(StringComparer.Ordinal) : null);
    }

    private static string FindRepositoryRoot()
    {
        for (var directory = new DirectoryInfo(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
        {
            if (File.Exists(Path.Combine(directory.FullName, "KvChatClient.sln")))
            {
                return directory.FullName;
            }
        }

        return Directory.GetCurrentDirectory();
    }
}

/// <summary>Samples the process working set while a way runs.</summary>
internal sealed class MemorySampler : IDisposable
{
    private readonly long _baseline;
    private readonly Timer _timer;
    private long _peak;

    private MemorySampler()
    {
        GC.Collect();
        _baseline = Environment.WorkingSet;
        _peak = _baseline;
        _timer = new Timer(_ => Interlocked.Exchange(ref _peak, Math.Max(Interlocked.Read(ref _peak), Environment.WorkingSet)), null, 0, 50);
    }

    public static MemorySampler Start() => new();

    public void Dispose() => _timer.Dispose();

    public double StopAndGetPeakDelta()
    {
        _timer.Dispose();
        _peak = Math.Max(_peak, Environment.WorkingSet);
        return (_peak - _baseline) / 1048576.0;
    }
}

/// <summary>Checks KvChatClient's greedy replies against fresh generators that prefill the same prompt tokens.</summary>
internal static class Oracle
{
    /// <summary>Whether a way is a KvChatClient that decodes two rows a step (<see cref="RowExactness.DecodesTwoRows"/>).</summary>
    public static bool DecodesTwoRows(IWay way) => way is ChatClientWay { Client: KvChatClient client } && client.SessionBackend.RowExactness.DecodesTwoRows;

    /// <summary>
    /// Counts the turns whose reply differs from a fresh generator's greedy reply to the same prompt tokens. With
    /// <paramref name="twoRows"/> (a client that decodes two rows a step, on a decoder whose one-row steps drift from
    /// prefills), each token of the fresh reply is what a prefill of the prompt and the tokens before it says: after each
    /// token the fresh generator rewinds one position and appends the last two tokens in one Run, which gives the bits
    /// of one prefill of everything (measured at load and in TwoRowDecodeTests).
    /// </summary>
    public static int Check(Model model, IReadOnlyList<TurnResult> turns, bool twoRows = false)
    {
        var failures = 0;
        foreach (var turn in turns)
        {
            if (turn.Prompt is null || turn.Output is null)
            {
                continue;
            }

            using var parameters = new GeneratorParams(model);
            using var generator = new Generator(model, parameters);
            generator.AppendTokens(turn.Prompt);
            var fresh = new List<int>();
            while (fresh.Count < turn.Output.Length && !generator.IsDone())
            {
                var before = generator.TokenCount();
                generator.GenerateNextToken();
                if (generator.TokenCount() == before)
                {
                    break;
                }

                var sequence = generator.GetSequence(0);
                fresh.Add(sequence[^1]);
                if (twoRows && fresh.Count < turn.Output.Length)
                {
                    int[] last = [sequence[^2], sequence[^1]];
                    generator.RewindTo((ulong)(sequence.Length - 2));
                    generator.AppendTokens(last);
                }
            }

            if (!fresh.SequenceEqual(turn.Output))
            {
                failures++;
                Console.Error.WriteLine($"  oracle: a turn of {turn.PromptTokens} prompt tokens said [{string.Join(',', turn.Output.Take(8))}...], a fresh prefill [{string.Join(',', fresh.Take(8))}...]");
            }
        }

        return failures;
    }

    /// <summary>How many turns' prompts differ from what the stateless anchor encodes (whole rendered text re-encoded).</summary>
    public static (int Differ, int Turns) CountAnchorPromptDifferences(Tokenizer tokenizer, IReadOnlyList<(IReadOnlyList<ChatMessage> History, int[] Prompt)> turns)
    {
        var differ = 0;
        foreach (var (history, prompt) in turns)
        {
            var json = JsonSerializer.Serialize(history.Select(m => new Dictionary<string, string> { ["role"] = m.Role.Value, ["content"] = m.Text }).ToList());
            using var sequences = tokenizer.Encode(tokenizer.ApplyChatTemplate(null, json, null, true));
            if (!sequences[0].SequenceEqual(prompt))
            {
                differ++;
            }
        }

        return (differ, turns.Count);
    }
}
