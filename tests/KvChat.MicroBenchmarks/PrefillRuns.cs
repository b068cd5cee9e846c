using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.ML.OnnxRuntime;

namespace KvChat.MicroBenchmarks;

/// <summary>
/// Prefill speed of the owned backend's ONNX Runtime session on one model (<c>--prefill MODEL ROUNDS [OUTPUT]</c>), side
/// by side in one process: session options (threads, spinning, thread affinity, dynamic block base, denormals, graph
/// optimisation level, arena) against the backend's own setup, each for one prefill Run of 1,000, 256, 64 and 50 tokens,
/// 64 tokens after 1,000 (a later turn) and decode steps; one prefill of 1,000 tokens in Runs of 128 to 1,000 tokens; and
/// where the time of one Run goes (ORT's profiler, per operator). Every configuration's KV and logits are compared bit
/// for bit with the backend's own setup.
/// </summary>
/// <remarks>
/// The configurations run in turn, round after round, their order reversed every other round, so a change of the
/// machine's load falls on all alike; medians over the rounds (a first round warms up and is not counted). At most five
/// sessions are loaded at once (each holds the model's weights).
/// </remarks>
internal static class PrefillRuns
{
    private const int Long = 1000;
    private const int Later = 64;
    private const int DecodeSteps = 8;
    private static readonly int[] Lengths = [Long, 256, 64, 50];
    private static readonly int[] Chunks = [128, 256, 512, Long];

    private sealed record Setup(string Name, int Threads, Action<SessionOptions>? Configure)
    {
        /// <summary>Gets another model folder this setup runs instead (a reference; its bits differ by nature).</summary>
        public string? Folder { get; init; }
    }

    private static readonly Setup Baseline = new("owned backend today: 2 intra-op threads (spinning), ORT_ENABLE_ALL", 2, null);

    private static readonly Setup[][] Groups =
    [
        [
            Baseline,
            new("1 intra-op thread", 1, null),
            new("2 threads, session.intra_op.allow_spinning 0", 2, o => o.AddSessionConfigEntry("session.intra_op.allow_spinning", "0")),
            new("2 threads, session.dynamic_block_base 4", 2, o => o.AddSessionConfigEntry("session.dynamic_block_base", "4")),
            new("2 threads, worker pinned (session.intra_op_thread_affinities 2)", 2, o => o.AddSessionConfigEntry("session.intra_op_thread_affinities", "2")),
        ],
        [
            Baseline,
            new("2 threads, session.set_denormal_as_zero 1", 2, o => o.AddSessionConfigEntry("session.set_denormal_as_zero", "1")),
            new("2 threads, ORT_ENABLE_EXTENDED", 2, o => o.GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_EXTENDED),
            new("2 threads, ORT_ENABLE_BASIC", 2, o => o.GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_BASIC),
            new("2 threads, no CPU arena, no memory pattern", 2, o =>
            {
                o.EnableCpuMemArena = false;
                o.EnableMemoryPattern = false;
            }),
        ],
        [
            Baseline,
            new("2 threads, mlas.use_lut_gemm 1 (a lookup-table kernel where one exists: other arithmetic)", 2, o => o.AddSessionConfigEntry("mlas.use_lut_gemm", "1")),
        ],
    ];

    public static int Run(string modelName, int rounds, string? output, bool quick = false, string? reference = null)
    {
        var path = Directory.Exists(modelName) ? Path.GetFullPath(modelName) : BenchModels.PathOf(modelName);
        var folder = ModelFolder.Read(path);
        var rewritten = PrefillRunner.Rewrite(folder);
        var random = new Random(11);
#pragma warning disable CA5394 // Benchmark data, not a secret.
        long[] prompt = [.. Enumerable.Range(0, Long + Later + DecodeSteps).Select(_ => (long)random.Next(3, folder.VocabSize))];
#pragma warning restore CA5394
        var context = prompt.Length + 8;
        var text = new StringBuilder();
        text.AppendLine(Invariant($"{Path.GetFileName(path)}: {folder.Layers} layers, vocabulary {folder.VocabSize}, {Environment.ProcessorCount} logical processors; ONNX Runtime {OrtEnv.Instance().GetVersionString()}; medians of {rounds} rounds after one warm-up round; tokens/s of one Run (decode: ms per step after {Long + Later} tokens). bits = the KV and logits of the 1,000-token Run, the 64-token Run after it and the decode steps equal the first configuration's."));
        text.AppendLine();
        text.AppendLine("| session setup | prefill 1000 | 256 | 64 | 50 | 64 after 1000 | decode ms | bits |");
        text.AppendLine("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
        Setup[][] groups = quick ? [Groups[0][..2], Groups[2]] : Groups;
        if (reference is not null)
        {
            groups = [[.. groups[0], Baseline with { Name = $"{Path.GetFileName(reference)} (reference model), {Baseline.Name}", Folder = Path.GetFullPath(reference) }], .. groups[1..]];
        }

        foreach (var group in groups)
        {
            MeasureOptions(group, folder, rewritten, context, prompt, rounds, text);
        }

        text.AppendLine();
        if (!quick)
        {
            MeasureChunks(folder, rewritten, context, prompt, rounds, text);
            text.AppendLine();
        }

        Profile(folder, rewritten, context, prompt, text);
        return RunReport.Write(text, output);
    }

    private static void MeasureOptions(Setup[] group, ModelFolder folder, byte[] rewritten, int context, long[] prompt, int rounds, StringBuilder text)
    {
        var runners = new List<PrefillRunner>();
        try
        {
            foreach (var setup in group)
            {
                var other = setup.Folder is null ? null : ModelFolder.Read(setup.Folder);
                runners.Add(new PrefillRunner(other ?? folder, other is null ? rewritten : PrefillRunner.Rewrite(other), context, setup.Threads, setup.Configure));
            }

            // Per configuration: one list of samples per column (Lengths, then "64 after 1000", then decode ms).
            var samples = group.Select(_ => Enumerable.Range(0, Lengths.Length + 2).Select(_ => new List<double>()).ToArray()).ToArray();
            var bits = new ulong[group.Length][];
            for (var round = -1; round < rounds; round++)
            {
                for (var c = 0; c < group.Length; c++)
                {
                    var ci = round % 2 == 0 ? c : group.Length - 1 - c;
                    var runner = runners[ci];
                    var hashes = new List<ulong>();
                    for (var l = 0; l < Lengths.Length; l++)
                    {
                        var seconds = runner.Run(0, prompt.AsSpan(0, Lengths[l]));
                        if (l == 0)
                        {
                            var (logits, kv) = runner.Hash(Long);
                            hashes.Add(logits);
                            hashes.Add(kv);

                            // A later turn: 64 tokens after the 1,000, then decode steps.
                            var later = runner.Run(Long, prompt.AsSpan(Long, Later));
                            (logits, kv) = runner.Hash(Long + Later);
                            hashes.Add(logits);
                            hashes.Add(kv);
                            var decode = 0.0;
                            for (var s = 0; s < DecodeSteps; s++)
                            {
                                decode += runner.Run(Long + Later + s, prompt.AsSpan(Long + Later + s, 1));
                            }

                            hashes.Add(runner.Hash(Long + Later + DecodeSteps).Kv);
                            if (round >= 0)
                            {
                                samples[ci][Lengths.Length].Add(Later / later);
                                samples[ci][Lengths.Length + 1].Add(decode * 1000 / DecodeSteps);
                            }
                        }

                        if (round >= 0)
                        {
                            samples[ci][l].Add(Lengths[l] / seconds);
                        }
                    }

                    bits[ci] ??= [.. hashes];
                }
            }

            for (var c = 0; c < group.Length; c++)
            {
                var s = samples[c];
                var same = bits[c].AsSpan().SequenceEqual(bits[0]);
                text.AppendLine(Invariant($"| {group[c].Name} | {RunReport.Median(s[0]):F0} | {RunReport.Median(s[1]):F0} | {RunReport.Median(s[2]):F0} | {RunReport.Median(s[3]):F0} | {RunReport.Median(s[4]):F0} | {RunReport.Median(s[5]):F1} | {(c == 0 ? "reference" : same ? "equal" : "differ")} |"));
            }
        }
        finally
        {
            foreach (var runner in runners)
            {
                runner.Dispose();
            }
        }
    }

    /// <summary>Only the chunking table (<c>--prefill-chunks MODEL ROUNDS [OUTPUT]</c>).</summary>
    public static int RunChunks(string modelName, int rounds, string? output)
    {
        var path = Directory.Exists(modelName) ? Path.GetFullPath(modelName) : BenchModels.PathOf(modelName);
        var folder = ModelFolder.Read(path);
        var random = new Random(11);
#pragma warning disable CA5394 // Benchmark data, not a secret.
        long[] prompt = [.. Enumerable.Range(0, Long).Select(_ => (long)random.Next(3, folder.VocabSize))];
#pragma warning restore CA5394
        var text = new StringBuilder();
        text.AppendLine(Invariant($"{Path.GetFileName(path)}: {folder.Layers} layers, vocabulary {folder.VocabSize}, {Environment.ProcessorCount} logical processors; ONNX Runtime {OrtEnv.Instance().GetVersionString()}; {rounds} rounds after one warm-up round."));
        text.AppendLine();
        var rewritten = PrefillRunner.Rewrite(folder);
        foreach (var setup in new[] { Baseline, Groups[0][2], Groups[0][1] })
        {
            MeasureChunks(folder, rewritten, Long + 8, prompt, rounds, text, setup);
            text.AppendLine();
        }

        return RunReport.Write(text, output);
    }

    private static void MeasureChunks(ModelFolder folder, byte[] rewritten, int context, long[] prompt, int rounds, StringBuilder text, Setup? setup = null)
    {
        setup ??= Baseline;
        using var runner = new PrefillRunner(folder, rewritten, context, setup.Threads, setup.Configure);
        var samples = Chunks.Select(_ => new List<double>()).ToArray();
        var cpu = Chunks.Select(_ => new List<double>()).ToArray();
        var bits = new (ulong, ulong)[Chunks.Length];
        using var process = System.Diagnostics.Process.GetCurrentProcess();
        for (var round = -1; round < rounds; round++)
        {
            for (var c = 0; c < Chunks.Length; c++)
            {
                var ci = round % 2 == 0 ? c : Chunks.Length - 1 - c;
                process.Refresh();
                var cpuBefore = process.TotalProcessorTime;
                var seconds = runner.Prefill(prompt.AsSpan(0, Long), Chunks[ci]);
                process.Refresh();
                var cpuSeconds = (process.TotalProcessorTime - cpuBefore).TotalSeconds;
                bits[ci] = runner.Hash(Long);
                if (round >= 0)
                {
                    samples[ci].Add(Long / seconds);
                    cpu[ci].Add(cpuSeconds * 1000 / Long);
                }
            }
        }

        text.AppendLine(Invariant($"One prefill of {Long} tokens in Runs of at most N tokens ({setup.Name}), {rounds} rounds; bits = the KV of all positions and the last logits equal one Run of {Long}; CPU = the process's processor time per token (both threads, spinning included):"));
        text.AppendLine();
        text.AppendLine("| Runs of | prefill tokens/s, median | best | CPU ms per token, median | bits |");
        text.AppendLine("| ---: | ---: | ---: | ---: | --- |");
        for (var c = 0; c < Chunks.Length; c++)
        {
            text.AppendLine(Invariant($"| {Chunks[c]} | {RunReport.Median(samples[c]):F0} | {samples[c].Max():F0} | {RunReport.Median(cpu[c]):F2} | {(Chunks[c] == Long ? "reference" : bits[c] == bits[^1] ? "equal" : "differ")} |"));
        }
    }

    /// <summary>ORT's profiler over a warm session: per operator type, the kernel time of one Run of 1,000 tokens, of 64 after them, and of one decode step.</summary>
    private static void Profile(ModelFolder folder, byte[] rewritten, int context, long[] prompt, StringBuilder text)
    {
        var prefix = Path.Combine(Path.GetTempPath(), $"kvchat-prefill-profile-{Environment.ProcessId}");
        string file;
        using (var runner = new PrefillRunner(folder, rewritten, context, Baseline.Threads, o =>
        {
            o.EnableProfiling = true;
            o.ProfileOutputPathPrefix = prefix;
        }))
        {
            runner.Run(0, prompt.AsSpan(0, Long)); // Warm-up.
            runner.Run(0, prompt.AsSpan(0, Long));
            runner.Run(Long, prompt.AsSpan(Long, Later));
            runner.Run(Long + Later, prompt.AsSpan(Long + Later, 1));
            file = runner.EndProfiling();
        }

        try
        {
            using var document = JsonDocument.Parse(File.ReadAllText(file));
            var events = document.RootElement.EnumerateArray().ToList();
            var runs = events
                .Where(e => e.TryGetProperty("cat", out var cat) && cat.GetString() == "Session" && e.GetProperty("name").GetString() == "model_run")
                .Select(e => (Start: e.GetProperty("ts").GetInt64(), Duration: e.GetProperty("dur").GetInt64()))
                .ToList()[^3..];
            var columns = runs.Select(run => events
                    .Where(e => e.TryGetProperty("cat", out var cat) && cat.GetString() == "Node"
                        && e.GetProperty("name").GetString()!.EndsWith("_kernel_time", StringComparison.Ordinal)
                        && e.GetProperty("ts").GetInt64() >= run.Start && e.GetProperty("ts").GetInt64() <= run.Start + run.Duration)
                    .GroupBy(e => e.GetProperty("args").GetProperty("op_name").GetString()!)
                    .ToDictionary(g => g.Key, g => g.Sum(e => e.GetProperty("dur").GetInt64())))
                .ToArray();
            text.AppendLine(Invariant($"Where one Run's time goes (ORT profiler, kernel time per operator type, {Baseline.Name}; ms and share of the Run's wall time):"));
            text.AppendLine();
            text.AppendLine(Invariant($"| operator | prefill {Long} | {Later} after {Long} | decode step |"));
            text.AppendLine("| --- | ---: | ---: | ---: |");
            var operators = columns[0].OrderByDescending(p => p.Value).Select(p => p.Key).Union(columns.SelectMany(c => c.Keys)).ToList();
            string Cell(int column, long micros) => Invariant($"{micros / 1000.0:F1} ({100.0 * micros / runs[column].Duration:F1}%)");
            foreach (var op in operators)
            {
                text.AppendLine(Invariant($"| {op} | {string.Join(" | ", Enumerable.Range(0, 3).Select(c => Cell(c, columns[c].GetValueOrDefault(op))))} |"));
            }

            text.AppendLine(Invariant($"| (whole Run) | {string.Join(" | ", Enumerable.Range(0, 3).Select(c => Cell(c, runs[c].Duration)))} |"));
        }
        finally
        {
            File.Delete(file);
        }
    }

    private static string Invariant(FormattableString value) => value.ToString(CultureInfo.InvariantCulture);
}
