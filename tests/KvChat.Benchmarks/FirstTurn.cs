using System.Globalization;
using System.Text;
using KvChat.ModelKit;
using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat.Benchmarks;

/// <summary>
/// Turn-1 time to first token against GenAI's own client (<c>--first-turn [--vocab N] [--repeats R] [--threads T]
/// [--ways genai,kvchat,kvchat-generator,ideal] [--out FILE]</c>): a 1,000-token system prompt and a 40-token question, answered with 8 tokens by a new client of
/// each way (nothing cached), the ways in turn, repeat after repeat, on one model in one process (the bench preset,
/// with the vocabulary <c>--vocab</c>, 151,936 by default, and the client's default intra-op threads).
/// </summary>
/// <remarks>
/// Turn 1 is a full prefill for everyone; what differs is what each way does around it: rendering and tokenizing,
/// reading the last position's logits (KvChatClient: <c>OgaGenerator_GetLogits</c>; GenAI: its own next-token step),
/// and the first token's decode and update.
/// </remarks>
internal static class FirstTurn
{
    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    public static async Task<int> RunAsync(string[] args)
    {
        string? Value(string name)
        {
            var i = Array.IndexOf(args, name);
            return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
        }

        var vocab = int.Parse(Value("--vocab") ?? "151936", Invariant);
        var repeats = int.Parse(Value("--repeats") ?? "5", Invariant);
        var threads = int.Parse(Value("--threads") ?? IntraOpThreads.Default.ToString(Invariant), Invariant);
        var settings = BenchSettings.Parse([]);
        var name = vocab switch { 151936 => "bench-152k", 262144 => "bench-262k", 32000 => "bench", _ => $"bench-v{vocab}" };
        var path = Path.Combine(settings.CacheDirectory, name + "-noeos");
        if (!File.Exists(Path.Combine(path, "genai_config.json")))
        {
            Console.WriteLine($"writing the {name} model to {path} ...");
            ModelKit.ModelKit.Write(ModelKitOptions.Bench with { VocabSize = vocab, EndOfTurnBias = -100 }, path);
        }

        using var handle = new OgaHandle();
        using var config = new Config(path);
        config.Overlay(IntraOpThreads.Overlay(threads));
        using var model = new Model(config);
        using var tokenizer = new Tokenizer(model);
        var text = new TextMaker(tokenizer, seed: 11);
        var system = text.Make(1000);
        var user = text.Make(40, "Question: ");
        var context = Math.Min(ModelFolder.Read(path).ContextLength, 4096);
        var ways = (Value("--ways") ?? "genai,kvchat,kvchat-generator,ideal").Split(',');
        var ttft = ways.ToDictionary(w => w, _ => new List<double>());
        var prompt = 0;
        for (var repeat = -1; repeat < repeats; repeat++)
        {
            for (var k = 0; k < ways.Length; k++)
            {
                var way = ways[repeat % 2 == 0 ? k : ways.Length - 1 - k];
                using var instance = way switch
                {
                    "genai" => (IWay)new ChatClientWay("GenAI client", new OnnxRuntimeGenAIChatClient(model, ownsModel: false), deltas: false),
                    "kvchat" => new ChatClientWay("KvChatClient", new KvChatClient(model, path), deltas: false),
                    "kvchat-generator" => new ChatClientWay("KvChatClient (generator backend)", new KvChatClient(model, path, new KvChatClientOptions { SessionBackend = KvSessionBackend.Generator }), deltas: false),
                    _ => new IdealWay(model, path, context),
                };
                using var conversation = instance.Start(system);
                conversation.History.Add(new ChatMessage(ChatRole.User, user));
                var result = await conversation.ReplyAsync(8).ConfigureAwait(false);
                prompt = Math.Max(prompt, result.PromptTokens);
                if (repeat >= 0)
                {
                    ttft[way].Add(result.TimeToFirstTokenMs);
                }

                Console.WriteLine(string.Create(Invariant, $"  repeat {repeat,2} {way,-7} TTFT {result.TimeToFirstTokenMs,9:F1} ms"));
            }
        }

        var genai = Report.Median(ttft["genai"]);
        var report = new StringBuilder();
        report.AppendLine(string.Create(Invariant,
            $"Turn 1, bench preset with vocabulary {vocab} ({path}), {threads} intra-op threads, {Environment.ProcessorCount} logical processors; prompt {prompt} tokens, reply 8 tokens; a new client per repeat; medians of {repeats} repeats, the ways in turn:"));
        report.AppendLine();
        report.AppendLine("| way | turn-1 TTFT, ms | ratio to GenAI's client | all repeats, ms |");
        report.AppendLine("| --- | ---: | ---: | --- |");
        foreach (var (way, label) in new[] { ("genai", "GenAI `OnnxRuntimeGenAIChatClient`"), ("kvchat", "KvChatClient (default: owned KV)"), ("kvchat-generator", "KvChatClient (generator backend)"), ("ideal", "raw generator (`AppendTokens` + `GenerateNextToken`)") })
        {
            if (!ttft.ContainsKey(way))
            {
                continue;
            }

            var median = Report.Median(ttft[way]);
            report.AppendLine(string.Create(Invariant,
                $"| {label} | {median:F1} | {median / genai:F3} | {string.Join(", ", ttft[way].Select(t => t.ToString("F0", Invariant)))} |"));
        }

        Console.Write(report);
        if (Value("--out") is { } output)
        {
            await File.WriteAllTextAsync(output, report.ToString()).ConfigureAwait(false);
            Console.WriteLine($"wrote {output}");
        }

        return 0;
    }
}
