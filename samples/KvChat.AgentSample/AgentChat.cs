using KvChat.Samples;
using Microsoft.Agents.AI;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Options;

namespace KvChat.AgentSample;

/// <summary>
/// A local agent on Microsoft Agent Framework: a <see cref="ChatClientAgent"/> over KvChatClient with the
/// <see cref="TravelTools"/>, one <see cref="AgentSession"/> holding the conversation across turns, replies streamed.
/// After each turn it prints one cache line per model call (a turn that calls tools makes one call per step), from the
/// usage <see cref="ModelCallLog"/> kept. Writes to <see cref="Console.Out"/>.
/// </summary>
internal static class AgentChat
{
    public const string Usage = """
        A Microsoft Agent Framework agent over KvChatClient with three travel tools. Runs a script of user messages in
        one agent session, streams every reply, prints each tool call and a cache line per model call (prompt tokens, of
        them served from the KV cache, prefilled), and exits.

        Usage: KvChat.AgentSample [options]
          --model PATH         a GenAI model folder; without it the project's demo model with a script that answers the
                               default questions by calling the tools (written on first run and reused)
          --script FILE        user messages, one a line (default: three built-in questions)
          --max-tokens N       the longest reply in tokens, per model call (default 128)
          --cache-dir DIR      where the demo model is kept (default $KVCHAT_CACHE_DIR, else $XDG_CACHE_HOME/kvchat,
                               else ~/.cache/kvchat)
          -h, --help           this text
        """;

    /// <summary>The questions asked when no <c>--script</c> is given (the ones the scripted demo model answers).</summary>
    public static IReadOnlyList<string> DefaultQuestions { get; } =
    [
        "What is the weather in Paris, and what time is it there?",
        "How much is 50 euros in US dollars?",
        "Thanks! Anything else I should know?",
    ];

    /// <summary>Runs the agent.</summary>
    /// <returns>0 when every turn was answered, 1 when the model or a turn failed, 2 on bad arguments.</returns>
    public static Task<int> RunAsync(string[] args) => Sample.RunAsync(args);

    private static readonly ScriptedChatSample Sample = new()
    {
        Usage = Usage,
        DefaultQuestions = DefaultQuestions,
        DefaultMaxTokens = 128,
        DemoOptions = _ => ScriptedDemoModel.Options,
        DemoName = "Scripted demo model",
        DemoNote = "Its replies are scripted for the default questions (it calls the tools as a real model would); "
            + "the runtime, the KV cache and the cache lines are real. Run with --model PATH for a real model.",
        ChatAsync = ChatAsync,
        IsFailure = e => e is OptionsValidationException or IOException or InvalidDataException or ArgumentException
            or NotSupportedException or InvalidOperationException,
    };

    private static async Task ChatAsync(string modelPath, IEnumerable<string> questions, int maxTokens)
    {
        // README agent: begin
        using var calls = new ModelCallLog(new KvChatClient(modelPath, new KvChatClientOptions { MaxSessions = 1 }));
        AIAgent agent = new ChatClientAgent(calls,
            instructions: "You are a concise travel assistant. Use the tools for weather, local time and money.",
            name: "travel",
            tools: TravelTools.All);
        var session = await agent.CreateSessionAsync(); // the conversation: each turn sends it whole, the cache keeps it
        var run = new ChatClientAgentRunOptions(new ChatOptions { MaxOutputTokens = maxTokens });

        foreach (var (turn, question) in questions.Index())
        {
            Console.WriteLine($"you> {question}");
            var started = false;
            await foreach (var update in agent.RunStreamingAsync(question, session, run))
            {
                if (update.Text.Length > 0)
                {
                    Console.Write(started ? update.Text : "assistant> " + update.Text);
                    started = true;
                }
            }

            Console.WriteLine();

            // One line per model call: the agent calls the model once more after each round of tool calls.
            foreach (var (step, usage) in calls.TakeCalls().Index())
            {
                var prefilled = usage.AdditionalCounts?.GetValueOrDefault(KvChatUsage.PrefilledInputTokenCount);
                Console.WriteLine($"[{turn + 1}.{step + 1}] input {usage.InputTokenCount} | cached {usage.CachedInputTokenCount} | prefilled {prefilled} | output {usage.OutputTokenCount}");
            }
        }
        // README agent: end
    }
}
