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
        if (args.Contains("--first-turn"))
        {
            return await FirstTurn.RunAsync(args).ConfigureAwait(false);
        }

        var settings = BenchSettings.Parse(args);
        var modelPath = settings.ModelPath ?? GenerateModel(settings);
        using var handle = new OgaHandle();
        using var model = new Model(modelPath);
        using var tokenizer = new Tokenizer(model);
        var folder = ModelFolder.Read(modelPath);
        var context = Math.Min(folder.ContextLength, 4096);
        var text = new TextMaker(tokenizer, seed: 11);
        var system = text.Make(settings.SystemTokens);
        Console.WriteLine(string.Create(Invariant, $"model: {modelPath} ({folder.Layers} layers, vocabulary {folder.VocabSize}); system prompt {text.CountTokens(system)} tokens; repeats {settings.Repeats}"));

        var report = new Report(settings, modelPath, text.CountTokens(system));
        var failures = 0;
        foreach (var workload in Workload.All(settings, system, text).Where(w => settings.Workloads.Contains(w.Number)))
        {
            Console.WriteLine($"== workload {workload.Number}: {workload.Title}");
            foreach (var way in WayFactory.Names(workload))
            {
                var runs = new List<WorkloadRun>();
                for (var repeat = 0; repeat < settings.Repeats; repeat++)
                {
                    using var instance = WayFactory.Create(way, model, modelPath, context, workload);
                    using var memory = MemorySampler.Start();
                    var stopwatch = Stopwatch.StartNew();
                    var turns = await workload.RunAsync(instance).ConfigureAwait(false);
                    var wall = stopwatch.Elapsed.TotalSeconds;
                    var peak = memory.StopAndGetPeakDelta();
                    var oracleFailures = repeat == 0 && way.StartsWith("kvchat", StringComparison.Ordinal) ? Oracle.Check(model, turns) : 0;
                    failures += oracleFailures;
                    runs.Add(new WorkloadRun(turns, wall, peak, oracleFailures));
                    Console.WriteLine(string.Create(Invariant,
                        $"  {instance.Name,-28} repeat {repeat}: wall {wall,6:F1} s, prefilled {turns.Sum(t => t.PrefilledTokens),6}, last TTFT {turns[^1].TimeToFirstTokenMs,8:F1} ms{(oracleFailures > 0 ? $", ORACLE FAILURES {oracleFailures}" : string.Empty)}"));
                }

                report.Add(workload, way, runs);
            }

            report.AddRetokenization(workload, Oracle.CountAnchorPromptDifferences(tokenizer, report.LastKvChatTurns(workload)));
        }

        var markdown = report.ToMarkdown();
        if (settings.Workloads.Contains(5))
        {
            Console.WriteLine("== workload 5: agent loop");
            markdown += await AgentLoop.RunAsync(settings, system).ConfigureAwait(false);
        }

        Directory.CreateDirectory(settings.OutputDirectory);
        var mdPath = Path.Combine(settings.OutputDirectory, settings.Quick ? "results-quick.md" : "results.md");
        await File.WriteAllTextAsync(mdPath, markdown).ConfigureAwait(false);
        await File.WriteAllTextAsync(Path.ChangeExtension(mdPath, ".json"), report.ToJson()).ConfigureAwait(false);
        foreach (var png in Chart.WriteTimeToFirstToken(report, settings.OutputDirectory, Path.GetFileNameWithoutExtension(mdPath)))
        {
            Console.WriteLine($"wrote {png}");
        }

        Console.WriteLine(markdown);
        Console.WriteLine($"wrote {mdPath}");
        if (failures > 0)
        {
            Console.Error.WriteLine($"{failures} KvChatClient turns differ from a fresh prefill of the same prompt.");
            return 1;
        }

        return 0;
    }

    internal static string GenerateModel(BenchSettings settings)
    {
        // Replies of a fixed length: the benchmark model never says end-of-sequence.
        var options = (settings.Quick ? ModelKitOptions.Tiny : ModelKitOptions.Bench) with { EndOfTurnBias = -100 };
        var directory = Path.Combine(settings.CacheDirectory, settings.Quick ? "tiny-noeos" : "bench-noeos");
        if (!File.Exists(Path.Combine(directory, "genai_config.json")))
        {
            Console.WriteLine($"writing the {(settings.Quick ? "tiny" : "bench")} model to {directory} ...");
            var result = ModelKit.ModelKit.Write(options, directory);
            Console.WriteLine(string.Create(Invariant, $"  {result.ParameterCount:N0} parameters in {result.Elapsed.TotalSeconds:F1} s"));
        }

        return directory;
    }
}

internal sealed record WorkloadRun(IReadOnlyList<TurnResult> Turns, double WallSeconds, double PeakMegabytes, int OracleFailures);

/// <summary>Command-line settings.</summary>
internal sealed record BenchSettings(
    bool Quick, string? ModelPath, string OutputDirectory, string CacheDirectory, int Repeats, IReadOnlySet<int> Workloads,
    int SystemTokens, int UserTokens, int ReplyTokens, string Command)
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
            (Value("--workloads") ?? "1,2,3,4,5").Split(',').Select(w => int.Parse(w, CultureInfo.InvariantCulture)).ToHashSet(),
            quick ? 200 : 1000,
            quick ? 20 : 40,
            quick ? 12 : 32,
            "dotnet run -c Release --project tests/KvChat.Benchmarks -- " + string.Join(' ', args));
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
    public static int Check(Model model, IReadOnlyList<TurnResult> turns)
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

                fresh.Add(generator.GetSequence(0)[^1]);
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
