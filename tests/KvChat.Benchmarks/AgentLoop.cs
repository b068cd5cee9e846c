using System.Diagnostics;
using System.Globalization;
using System.Text;
using KvChat.ModelKit;
using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat.Benchmarks;

/// <summary>
/// Workload 5, scripted: a real three-step agent loop under <c>UseFunctionInvocation</c> on a scripted model of the benchmark's
/// size (the model calls three tools, then answers). Per step: what KvChatClient prefilled, against a client that
/// re-prefills the whole prompt (a fresh generator prefilling the same tokens), both timed in this run.
/// </summary>
internal static class AgentLoop
{
    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    public const string Question = "What is the weather in Paris and Rome, and the time in Rome?";

    /// <summary>The loop's tool calls and results, as chat contents (the replayed workload 5 puts them in the history).</summary>
    public static IEnumerable<(FunctionCallContent Call, FunctionResultContent Result)> Steps()
    {
        yield return (new FunctionCallContent("call_1", "get_weather", new Dictionary<string, object?> { ["city"] = "Paris" }), new FunctionResultContent("call_1", "18C"));
        yield return (new FunctionCallContent("call_2", "get_weather", new Dictionary<string, object?> { ["city"] = "Rome" }), new FunctionResultContent("call_2", "21C"));
        yield return (new FunctionCallContent("call_3", "get_time", new Dictionary<string, object?> { ["zone"] = "Europe/Rome" }), new FunctionResultContent("call_3", "12:00"));
    }

    private static string Call(string name, string argument, string value)
        => $"<tool_call>\n{{\"name\": \"{name}\", \"arguments\": {{\"{argument}\": \"{value}\"}}}}\n</tool_call>";

    public static async Task<string> RunAsync(BenchSettings settings, string system)
    {
        var options = (settings.Quick ? ModelKitOptions.Tiny : ModelKitOptions.Bench) with
        {
            Script = "Paris is 18C and Rome 21C; it is noon in Rome.",
            ScriptByMessageCount = new Dictionary<int, string>
            {
                [2] = Call("get_weather", "city", "Paris"),
                [4] = Call("get_weather", "city", "Rome"),
                [6] = Call("get_time", "zone", "Europe/Rome"),
            },
        };
        var directory = Path.Combine(settings.CacheDirectory, settings.Quick ? "tiny-agent" : "bench-agent");
        if (!File.Exists(Path.Combine(directory, "genai_config.json")))
        {
            ModelKit.ModelKit.Write(options, directory);
        }

        using var config = new Config(directory);
        config.Overlay(IntraOpThreads.Overlay(settings.Threads));
        using var client = new KvChatClient(new Model(config), directory, new KvChatClientOptions { MaxSessions = 1 }, ownsModel: true);
        var traces = new List<ReplyTrace>();
        client.Trace = traces.Add;
        var weather = AIFunctionFactory.Create((string city) => city == "Paris" ? "18C" : "21C", "get_weather", "Weather in a city.");
        var time = AIFunctionFactory.Create((string zone) => "12:00", "get_time", "Time in a zone.");
        using var agent = new ChatClientBuilder(client).UseFunctionInvocation().Build();

        var answer = new StringBuilder();
        await foreach (var update in agent.GetStreamingResponseAsync(
            [new(ChatRole.System, system), new(ChatRole.User, Question)],
            new ChatOptions { Tools = [weather, time] }).ConfigureAwait(false))
        {
            if (update.Role == ChatRole.Assistant)
            {
                answer.Append(update.Text);
            }
        }

        // The baseline: a fresh generator prefilling each step's whole prompt (what a client without a KV cache does).
        var model = (Model)client.GetService(typeof(Model))!;
        var fresh = new List<double>();
        foreach (var trace in traces)
        {
            using var parameters = new GeneratorParams(model);
            using var generator = new Generator(model, parameters);
            var watch = Stopwatch.StartNew();
            generator.AppendTokens(trace.Prompt);
            generator.GenerateNextToken();
            fresh.Add(watch.Elapsed.TotalMilliseconds);
        }

        var md = new StringBuilder();
        md.AppendLine("## Workload 5, scripted: a three-step agent loop under UseFunctionInvocation (scripted model of the same size)");
        md.AppendLine();
        md.AppendLine(string.Create(Invariant, $"The model calls `get_weather` twice and `get_time` once, then answers: \"{answer.ToString().Trim()}\"."));
        md.AppendLine();
        md.AppendLine("TTFT: from the model call to its first generated token (a tool call becomes visible only when it is complete).");
        md.AppendLine();
        md.AppendLine("| step | prompt tokens | KvChatClient cached | KvChatClient prefilled | re-prefill-everything prefilled | KvChatClient TTFT ms | fresh prefill TTFT ms |");
        md.AppendLine("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for (var i = 0; i < traces.Count; i++)
        {
            var t = traces[i];
            md.AppendLine(string.Create(Invariant,
                $"| {i + 1} | {t.Prompt.Length} | {t.Cached} | {t.Prompt.Length - t.Cached} | {t.Prompt.Length} | {t.TimeToFirstTokenMs:F0} | {fresh[i]:F0} |"));
        }

        md.AppendLine();
        md.AppendLine(string.Create(Invariant,
            $"Total prefilled: KvChatClient {traces.Sum(t => t.Prompt.Length - t.Cached)}, re-prefill-everything {traces.Sum(t => t.Prompt.Length)}."));
        md.AppendLine();
        Console.WriteLine(md);
        return md.ToString();
    }
}
