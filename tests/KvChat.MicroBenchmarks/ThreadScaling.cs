using System.Diagnostics;
using System.Globalization;
using System.Text;
using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat.MicroBenchmarks;

/// <summary>
/// GenAI's intra-op thread count against concurrent sessions (<c>--threads MODEL ROUNDS</c>): for 1 and 2 intra-op
/// threads (<c>session_options.intra_op_num_threads</c>) and 1, 2 and 4 sessions running at once (one generator and one
/// .NET thread each), the total prefill and decode tokens per second; and 2 threads with the sessions' forward passes
/// taking turns (a lock around each <c>AppendTokens</c> and <c>GenerateNextToken</c>). The configurations run in turn in one process,
/// round after round, so a change of the machine's load falls on all alike; medians over the rounds.
/// </summary>
/// <remarks>
/// Each session prefills 256 random token ids into a fresh generator and then decodes 32 tokens greedily with
/// <c>GenerateNextToken</c> (GenAI's own loop, so the figures are the runtime's alone). Prefill tokens per second are
/// all sessions' prompt tokens over the time until the last session finished its prefill; decode likewise.
/// </remarks>
internal static class ThreadScaling
{
    private const int PromptTokens = 256;
    private const int DecodeTokens = 32;

    public static int Run(string modelName, int rounds, string? output)
    {
        BenchModels.EnsureGenAiHandle();
        var path = BenchModels.PathOf(modelName);
        var folder = ModelFolder.Read(path);
        (int Threads, bool Gated)[] configurations = [(1, false), (2, false), (2, true)];
        int[] concurrencies = [1, 2, 4];
        var models = configurations.Select(c => LoadModel(path, c.Threads)).ToArray();
        try
        {
            var random = new Random(3);
#pragma warning disable CA5394 // Benchmark data, not a secret.
            var prompts = Enumerable.Range(0, concurrencies.Max())
                .Select(_ => Enumerable.Range(0, PromptTokens).Select(_ => random.Next(256)).ToArray())
                .ToArray();
#pragma warning restore CA5394
            var prefill = new Dictionary<(int, int), List<double>>();
            var decode = new Dictionary<(int, int), List<double>>();
            for (var round = -1; round < rounds; round++)
            {
                for (var c = 0; c < configurations.Length; c++)
                {
                    // Alternate the order of the configurations so none always runs first.
                    var ci = round % 2 == 0 ? c : configurations.Length - 1 - c;
                    foreach (var sessions in concurrencies)
                    {
                        var (p, d) = RunOnce(models[ci], prompts.Take(sessions).ToArray(), configurations[ci].Gated ? new Lock() : null);
                        if (round >= 0)
                        {
                            Add(prefill, (ci, sessions), p);
                            Add(decode, (ci, sessions), d);
                        }
                    }
                }
            }

            var text = new StringBuilder();
            text.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"{modelName} ({folder.Layers} layers, vocabulary {folder.VocabSize}), {Environment.ProcessorCount} logical processors; each session prefills {PromptTokens} tokens then decodes {DecodeTokens}; medians of {rounds} rounds, total tokens/s over all sessions:"));
            text.AppendLine();
            text.AppendLine("| intra-op threads | forward passes | sessions at once | prefill tokens/s | decode tokens/s |");
            text.AppendLine("| ---: | --- | ---: | ---: | ---: |");
            for (var c = 0; c < configurations.Length; c++)
            {
                foreach (var sessions in concurrencies)
                {
                    text.AppendLine(string.Create(CultureInfo.InvariantCulture,
                        $"| {configurations[c].Threads} | {(configurations[c].Gated ? "one at a time" : "concurrent")} | {sessions} | {RunReport.Median(prefill[(c, sessions)]):F0} | {RunReport.Median(decode[(c, sessions)]):F1} |"));
                }
            }

            return RunReport.Write(text, output);
        }
        finally
        {
            foreach (var model in models)
            {
                model.Dispose();
            }
        }
    }

    private static Model LoadModel(string path, int threads)
    {
        using var config = new Config(path);
        config.Overlay(IntraOpThreads.Overlay(threads));
        return new Model(config);
    }

    private static (double Prefill, double Decode) RunOnce(Model model, int[][] prompts, Lock? gate)
    {
        var generators = prompts.Select(_ =>
        {
            using var parameters = new GeneratorParams(model);
            parameters.SetSearchOption("max_length", PromptTokens + DecodeTokens + 8);
            return new Generator(model, parameters);
        }).ToArray();
        try
        {
            var prefillDone = new double[prompts.Length];
            var decodeDone = new double[prompts.Length];
            using var start = new Barrier(prompts.Length + 1);
            using var decodeStart = new Barrier(prompts.Length + 1);
            var stopwatch = new Stopwatch();
            var workers = prompts.Select((prompt, i) => new Thread(() =>
            {
                start.SignalAndWait();
                gate?.Enter();
                generators[i].AppendTokens(prompt);
                gate?.Exit();
                prefillDone[i] = stopwatch.Elapsed.TotalSeconds;
                decodeStart.SignalAndWait();
                for (var k = 0; k < DecodeTokens; k++)
                {
                    gate?.Enter();
                    generators[i].GenerateNextToken();
                    gate?.Exit();
                }

                decodeDone[i] = stopwatch.Elapsed.TotalSeconds;
            })).ToArray();
            foreach (var worker in workers)
            {
                worker.Start();
            }

            stopwatch.Start();
            start.SignalAndWait();
            decodeStart.SignalAndWait();
            var decodeStarted = stopwatch.Elapsed.TotalSeconds;
            foreach (var worker in workers)
            {
                worker.Join();
            }

            return (prompts.Length * PromptTokens / prefillDone.Max(), prompts.Length * DecodeTokens / (decodeDone.Max() - decodeStarted));
        }
        finally
        {
            foreach (var generator in generators)
            {
                generator.Dispose();
            }
        }
    }

    private static void Add(Dictionary<(int, int), List<double>> values, (int, int) key, double value)
    {
        if (!values.TryGetValue(key, out var list))
        {
            values[key] = list = [];
        }

        list.Add(value);
    }
}
