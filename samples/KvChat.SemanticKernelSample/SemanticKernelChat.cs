using KvChat.Samples;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Microsoft.SemanticKernel;
using Microsoft.SemanticKernel.ChatCompletion;

namespace KvChat.SemanticKernelSample;

/// <summary>
/// A Semantic Kernel chat over KvChatClient: a kernel built with <c>AddKvChatClient</c>, the <see cref="UnitsPlugin"/>
/// offered to the model with <c>FunctionChoiceBehavior.Auto()</c>, and a <see cref="ChatHistory"/> sent whole every
/// turn. After each reply it prints one cache line from the reply's <c>Metadata["Usage"]</c>. Writes to
/// <see cref="Console.Out"/>.
/// </summary>
internal static class SemanticKernelChat
{
    public const string Usage = """
        A Semantic Kernel chat over KvChatClient with a unit-conversion plugin. Runs a script of user messages, prints
        every reply with a cache line (prompt tokens, of them served from the KV cache, prefilled), and exits.

        Usage: KvChat.SemanticKernelSample [options]
          --model PATH         a GenAI model folder; without it the project's random-weight demo model (written on first
                               run and reused), which does not call the plugin's functions sensibly
          --script FILE        user messages, one a line (default: three built-in questions)
          --max-tokens N       the longest reply in tokens, per model call (default 96)
          --demo small|tiny    the demo model's size (default small)
          --cache-dir DIR      where the demo model is kept (default $KVCHAT_CACHE_DIR, else $XDG_CACHE_HOME/kvchat,
                               else ~/.cache/kvchat)
          -h, --help           this text
        """;

    /// <summary>The questions asked when no <c>--script</c> is given.</summary>
    public static IReadOnlyList<string> DefaultQuestions { get; } =
    [
        "How warm is 21 degrees Celsius in Fahrenheit?",
        "And how long is a 42 km run in miles?",
        "Which of the two numbers you found is larger?",
    ];

    /// <summary>Runs the chat.</summary>
    /// <returns>0 when every turn was answered, 1 when the model or a turn failed, 2 on bad arguments.</returns>
    public static Task<int> RunAsync(string[] args) => Sample.RunAsync(args);

    private static readonly ScriptedChatSample Sample = new()
    {
        Usage = Usage,
        DefaultQuestions = DefaultQuestions,
        DefaultMaxTokens = 96,
        TakesDemoSize = true,
        DemoOptions = DemoModel.OptionsFor,
        DemoName = "Demo model",
        DemoNote = "Its weights are random: it will not call the units plugin's functions sensibly (most likely not at all), "
            + "and its words mean nothing. The cache lines are real. Run with --model PATH for a real model that calls the tools.",
        ChatAsync = ChatAsync,
        IsFailure = e => e is OptionsValidationException or IOException or InvalidDataException or ArgumentException
            or NotSupportedException or InvalidOperationException or KernelException,
    };

    private static async Task ChatAsync(string modelPath, IEnumerable<string> questions, int maxTokens)
    {
        // README Semantic Kernel: begin
        var builder = Kernel.CreateBuilder().AddKvChatClient(modelPath, o => o.MaxSessions = 1);
        builder.Plugins.AddFromType<UnitsPlugin>("units");
        var kernel = builder.Build();
        await using var services = (ServiceProvider)kernel.Services; // disposes the client (and its model) at the end
        var chat = kernel.GetRequiredService<IChatCompletionService>();
        var settings = new PromptExecutionSettings
        {
            FunctionChoiceBehavior = FunctionChoiceBehavior.Auto(),
            ExtensionData = new Dictionary<string, object> { ["max_tokens"] = maxTokens },
        };

        var history = new ChatHistory("You are a concise assistant. Convert units with the units tools.");
        foreach (var (turn, question) in questions.Index())
        {
            Console.WriteLine($"you> {question}");
            history.AddUserMessage(question);
            var reply = await chat.GetChatMessageContentAsync(history, settings, kernel);
            history.Add(reply);
            Console.WriteLine($"assistant> {reply.Content}");

            // MEAI's UsageDetails, summed over the turn's model calls (one more for each round of tool calls).
            var usage = reply.Metadata?.GetValueOrDefault("Usage") as UsageDetails;
            var prefilled = usage?.AdditionalCounts?.GetValueOrDefault(KvChatUsage.PrefilledInputTokenCount);
            Console.WriteLine($"[{turn + 1}] input {usage?.InputTokenCount} | cached {usage?.CachedInputTokenCount} | prefilled {prefilled} | output {usage?.OutputTokenCount}");
        }
        // README Semantic Kernel: end
    }
}
