using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat.Benchmarks;

/// <summary>
/// <c>--structured</c>: turn 6 of workload 1 (a 1,000-token system prompt, 40-token questions, 32-token replies)
/// answered three ways on each session backend (owned KV and GenAI generators), in one process, in turn, each on its own
/// client over one model: free text, a JSON-schema reply constrained on the cached session (the client's token mask on
/// the backend's last-position logits), and the same reply through the GenAI-guidance fallback (a temporary generator
/// that prefills the whole prompt). Prints time to first token, decode time per token and the prefilled tokens of
/// turn 6, medians over the repeats, side by side.
/// </summary>
/// <remarks>
/// Fails (exit code 1) when a constrained turn prefills more than the free turn on the same backend, or the fallback
/// less than the whole prompt: the constrained reply must be served from the cache on both backends.
/// </remarks>
internal static class StructuredTurn
{
    private const string Schema = """{"type":"object","properties":{"answer":{"type":"string","maxLength":60},"score":{"type":"integer","minimum":0,"maximum":100},"tags":{"type":"array","items":{"type":"string","maxLength":8},"maxItems":3}},"required":["answer","score","tags"],"additionalProperties":false}""";

    private const string Free = "free text";
    private const string Constrained = "JSON, constrained on the cached session";
    private const string Fallback = "JSON, GenAI guidance fallback";

    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    public static async Task<int> RunAsync(string[] args)
    {
        var settings = BenchSettings.Parse([.. args.Where(a => a != "--structured")]);
        var preset = settings.Quick ? "tiny" : "bench";
        var modelPath = settings.ModelPath ?? BenchmarkApp.GenerateModel(settings, ModelKit.ModelKitOptions.FromPreset(preset), preset);
        using var handle = new OgaHandle();
        using var model = new Model(modelPath);
        using var tokenizer = new Tokenizer(model);
        var text = new TextMaker(tokenizer, seed: 11);
        var system = text.Make(settings.SystemTokens);
        var users = Enumerable.Range(0, 6).Select(i => text.Make(settings.UserTokens, $"Question {i}: ")).ToArray();
        var format = ChatResponseFormat.ForJsonSchema(JsonDocument.Parse(Schema).RootElement, "answer");
        KvSessionBackend[] backends = [KvSessionBackend.Owned, KvSessionBackend.Generator];
        string[] ways = [Free, Constrained, Fallback];
        var results = new Dictionary<(KvSessionBackend, string), List<(double Ttft, double Decode, long Prefilled, long Input, int Tokens)>>();
        foreach (var backend in backends)
        {
            foreach (var way in ways)
            {
                results[(backend, way)] = [];
            }
        }

        Console.WriteLine(string.Create(Invariant, $"model: {modelPath}; system prompt {text.CountTokens(system)} tokens; repeats {settings.Repeats}; backends {string.Join(", ", backends)}"));

        // The client's own time to first token (from the request to the first token chosen) and its output tokens.
        double lastTtftMs = 0;
        using var listener = new System.Diagnostics.Metrics.MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == KvChatMetricNames.MeterName && instrument.Name == KvChatMetricNames.TimeToFirstToken)
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<double>((_, value, _, _) => lastTtftMs = value * 1000);
        listener.Start();
        for (var repeat = 0; repeat < settings.Repeats; repeat++)
        {
            foreach (var backend in backends)
            {
                foreach (var way in ways)
                {
                    using var client = new KvChatClient(model, modelPath, new KvChatClientOptions { MaxSessions = 1, SessionBackend = backend })
                    {
                        ForceGuidanceFallback = way == Fallback,
                    };
                    var running = client.GetService<KvCacheStatistics>()!.Backend;
                    if (running != backend)
                    {
                        Console.Error.WriteLine($"asked for the {backend} backend, the client runs {running}");
                        return 1;
                    }

                    var vocabulary = Stopwatch.StartNew();
                    _ = client.ConstraintVocabularyError; // Read once per client, on the first constrained request: measured apart.
                    if (repeat == 0 && way == Constrained)
                    {
                        Console.WriteLine(string.Create(Invariant, $"  {backend}: the token vocabulary for masks (read once per client): {vocabulary.Elapsed.TotalMilliseconds:F0} ms"));
                    }

                    List<ChatMessage> history = [new(ChatRole.System, system)];
                    for (var turn = 0; turn < 5; turn++)
                    {
                        history.Add(new ChatMessage(ChatRole.User, users[turn]));
                        history.AddRange((await client.GetResponseAsync(history, new ChatOptions { MaxOutputTokens = settings.ReplyTokens }).ConfigureAwait(false)).Messages);
                    }

                    history.Add(new ChatMessage(ChatRole.User, users[5]));
                    var options = way == Free ? new ChatOptions { MaxOutputTokens = settings.ReplyTokens } : new ChatOptions { ResponseFormat = format, MaxOutputTokens = 400 };
                    var started = Stopwatch.GetTimestamp();
                    var response = await client.GetResponseAsync(history, options).ConfigureAwait(false);
                    var total = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
                    var first = lastTtftMs;
                    var usage = response.Usage!;
                    var tokens = (int)usage.OutputTokenCount!.Value;
                    var decode = (total - first) / Math.Max(1, tokens - 1);
                    var prefilled = usage.AdditionalCounts![KvChatUsage.PrefilledInputTokenCount];
                    results[(backend, way)].Add((first, decode, prefilled, usage.InputTokenCount!.Value, tokens));
                    Console.WriteLine(string.Create(Invariant,
                        $"  {backend,-9} {way,-42} repeat {repeat}: TTFT {first,8:F1} ms, decode {decode,6:F2} ms/token over {tokens} tokens, prefilled {prefilled} of {usage.InputTokenCount}"));
                }
            }
        }

        static double Median(IEnumerable<double> values)
        {
            var sorted = values.Order().ToArray();
            return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[(sorted.Length / 2) - 1] + sorted[sorted.Length / 2]) / 2;
        }

        Console.WriteLine();
        Console.WriteLine("| turn 6 of workload 1 | backend | TTFT (ms) | decode (ms/token) | decode vs free text | prefilled tokens | TTFT vs constrained |");
        Console.WriteLine("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
        foreach (var way in ways)
        {
            foreach (var backend in backends)
            {
                var freeDecode = Median(results[(backend, Free)].Select(r => r.Decode));
                var constrainedTtft = Median(results[(backend, Constrained)].Select(r => r.Ttft));
                var ttft = Median(results[(backend, way)].Select(r => r.Ttft));
                var decode = Median(results[(backend, way)].Select(r => r.Decode));
                Console.WriteLine(string.Create(Invariant,
                    $"| {way} | {backend} | {ttft:F1} | {decode:F2} | {decode / freeDecode:F2}x | {results[(backend, way)][^1].Prefilled} | {ttft / constrainedTtft:F1}x |"));
            }
        }

        var failures = 0;
        foreach (var backend in backends)
        {
            var free = results[(backend, Free)][^1];
            var constrained = results[(backend, Constrained)][^1];
            var fallback = results[(backend, Fallback)][^1];
            if (constrained.Prefilled != free.Prefilled)
            {
                Console.Error.WriteLine($"{backend}: the constrained turn prefilled {constrained.Prefilled} tokens, the free turn {free.Prefilled}: not served from the cache");
                failures++;
            }

            if (fallback.Prefilled != fallback.Input)
            {
                Console.Error.WriteLine($"{backend}: the fallback prefilled {fallback.Prefilled} of {fallback.Input} tokens: it did not take the temporary generator");
                failures++;
            }
        }

        return failures == 0 ? 0 : 1;
    }
}
