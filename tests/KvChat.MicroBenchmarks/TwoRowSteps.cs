using System.Diagnostics;
using System.Globalization;
using System.Text;
using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat.MicroBenchmarks;

/// <summary>
/// <c>--two-row MODEL ROUNDS [OUT]</c>: what two-row decode steps cost against one-row steps, and what they save the next
/// turn, the ways in turn in one process, medians over the rounds. MODEL is a kit preset name or a model folder (the
/// end-to-end benchmark's <c>.artifacts/models/qwen2.5-0.5b-noeos-gguf</c>, say). After a prompt of
/// <see cref="PromptTokens"/>:
/// <list type="bullet">
/// <item><description>a reply of <see cref="ReplyTokens"/> tokens decoded one row a step and two rows a step (the previous
/// token again with the new one), on an owned-KV session and on a GenAI generator session;</description></item>
/// <item><description>the next turn's prefill, its <see cref="NewTokens"/> new tokens with the reply kept (two-row steps)
/// against the reply's tokens and the new ones (one-row steps: the reply is prefilled again), and its first logits, on
/// the owned backend.</description></item>
/// </list>
/// The token ids are fixed, not chosen: the model work is what a greedy reply costs. The model runs with the client's
/// default intra-op threads (<see cref="IntraOpThreads.Default"/>).
/// </summary>
internal static class TwoRowSteps
{
    private const int PromptTokens = 1000;
    private const int ReplyTokens = 32;
    private const int NewTokens = 55;

    public static int Run(string model, int rounds, string? output)
    {
        BenchModels.EnsureGenAiHandle();
        var path = Directory.Exists(model) ? model : BenchModels.PathOf(model);
        var folder = ModelFolder.Read(path);
        var threads = IntraOpThreads.Default;
        var context = Math.Min(folder.ContextLength, 2048);
        using var backend = OwnedBackend.TryCreate(folder, context, 2, threads, out var reason) ?? throw new InvalidOperationException(reason);
        using var config = new Config(path);
        config.Overlay(IntraOpThreads.Overlay(threads));
        using var genai = new Model(config);

        var random = new Random(11);
#pragma warning disable CA5394 // Benchmark data, not a secret.
        var tokens = Enumerable.Range(0, PromptTokens + ReplyTokens + NewTokens).Select(_ => random.Next(256, folder.VocabSize)).ToArray();
#pragma warning restore CA5394
        var logits = new float[folder.VocabSize];
        using var ownedOne = backend.CreateSession(twoRowSteps: false);
        using var ownedTwo = backend.CreateSession(twoRowSteps: true);
        using var generatorOne = new KvSession(genai, context, folder.KvBytesPerToken, folder.SharedBuffer);
        using var generatorTwo = new KvSession(genai, context, folder.KvBytesPerToken, folder.SharedBuffer) { TwoRowSteps = true };
        foreach (var session in new IKvSession[] { ownedOne, ownedTwo, generatorOne, generatorTwo })
        {
            session.Extend(0, tokens.AsSpan(0, PromptTokens));
        }

        double Decode(IKvSession session)
        {
            session.Extend(PromptTokens, []);
            var stopwatch = Stopwatch.StartNew();
            for (var i = 0; i < ReplyTokens; i++)
            {
                session.Append(tokens[PromptTokens + i]);
                session.ReadLastLogits(logits);
            }

            return stopwatch.Elapsed.TotalMilliseconds / ReplyTokens;
        }

        double NextTurn(IKvSession session, int keep)
        {
            // The session holds the prompt and the reply (decoded by the way before); the next turn keeps `keep` of them.
            var stopwatch = Stopwatch.StartNew();
            session.Extend(keep, tokens.AsSpan(keep));
            session.ReadLastLogits(logits);
            return stopwatch.Elapsed.TotalMilliseconds;
        }

        (string Name, Func<double> Run)[] ways =
        [
            ("owned, one-row steps: ms per token", () => Decode(ownedOne)),
            ("owned, two-row steps: ms per token", () => Decode(ownedTwo)),
            ("generator, one-row steps: ms per token", () => Decode(generatorOne)),
            ("generator, two-row steps: ms per token", () => Decode(generatorTwo)),
            ($"next turn, reply prefilled again ({ReplyTokens + NewTokens} tokens): ms to the first logits", () => NextTurn(ownedOne, PromptTokens)),
            ($"next turn, reply kept ({NewTokens} tokens): ms to the first logits", () => NextTurn(ownedTwo, PromptTokens + ReplyTokens)),
        ];

        // Each round decodes a reply on every session, then times the next turns; the decode order alternates.
        var times = ways.Select(_ => new List<double>()).ToArray();
        for (var round = -1; round < rounds; round++)
        {
            for (var k = 0; k < 4; k++)
            {
                var i = round % 2 == 0 ? k : 3 - k;
                var time = ways[i].Run();
                if (round >= 0)
                {
                    times[i].Add(time);
                }
            }

            for (var k = 0; k < 2; k++)
            {
                var i = 4 + (round % 2 == 0 ? k : 1 - k);
                var time = ways[i].Run();
                if (round >= 0)
                {
                    times[i].Add(time);
                }
            }
        }

        var m = times.Select(t => RunReport.Median(t)).ToArray();
        var text = new StringBuilder();
        text.AppendLine(string.Create(CultureInfo.InvariantCulture,
            $"{Path.GetFileName(path.TrimEnd(Path.DirectorySeparatorChar))} ({folder.Layers} layers, vocabulary {folder.VocabSize}), {threads} intra-op threads, {Environment.ProcessorCount} logical processors; a {PromptTokens}-token prompt, a {ReplyTokens}-token reply, {NewTokens} new tokens; medians of {rounds} rounds; {backend.LogitsNote}"));
        text.AppendLine(string.Create(CultureInfo.InvariantCulture, $"probe: {backend.RowExactness.Note ?? "every Run agrees"}"));
        text.AppendLine();
        text.AppendLine("| way | median | tok/s |");
        text.AppendLine("| --- | ---: | ---: |");
        for (var i = 0; i < ways.Length; i++)
        {
            text.AppendLine(string.Create(CultureInfo.InvariantCulture, $"| {ways[i].Name} | {m[i]:F2} | {(i < 4 ? (1000 / m[i]).ToString("F1", CultureInfo.InvariantCulture) : "-")} |"));
        }

        text.AppendLine();
        text.AppendLine(string.Create(CultureInfo.InvariantCulture,
            $"Per turn on the owned backend: two-row steps cost {ReplyTokens * (m[1] - m[0]):F0} ms more over the reply (decode {m[0] / m[1]:F3}x the one-row speed) and save the next turn {m[4] - m[5]:F0} ms to its first token ({m[5] / m[4]:F3}x). Generator: decode {m[2] / m[3]:F3}x the one-row speed."));
        return RunReport.Write(text, output);
    }
}
