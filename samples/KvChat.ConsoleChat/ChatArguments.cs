using System.Globalization;
using KvChat.Samples;

namespace KvChat.ConsoleChat;

/// <summary>The console chat's command line.</summary>
internal sealed record ChatArguments
{
    public const string Usage = """
        A console chat over KvChatClient: replies stream, and each turn ends with a line that says what the KV cache saved.

        Usage: KvChat.ConsoleChat [options]
          --model PATH         a GenAI model folder (genai_config.json, tokenizer.json, *.onnx), e.g. Phi-3.5/4-mini,
                               Qwen2.5 or Llama 3.2 exported by GenAI's model builder. Without it the project's own
                               random-weight demo model is written on first run and reused (its words mean nothing).
          --demo small|tiny    the demo model's size (default small: hidden 256, 4 layers, vocabulary 8000)
          --cache-dir DIR      where the demo model is kept (default $KVCHAT_CACHE_DIR, else $XDG_CACHE_HOME/kvchat,
                               else ~/.cache/kvchat)
          --system TEXT        a system message that starts the conversation
          --max-tokens N       the longest reply in tokens (default 256)
          --temperature X      sampling temperature; 0 is greedy (default: the model's genai_config.json search settings)
          --context N          tokens one session holds, prompt plus reply (default: the model's, at most 4096)
          --script FILE        read user messages from FILE, one a line, print every turn and exit
          -h, --help           this text

        Piped standard input works like --script. Commands: /reset clears the conversation (the KV cache stays),
        /stats shows the cache statistics, /exit quits.
        """;

    /// <summary>The default of <see cref="MaxTokens"/>.</summary>
    public const int DefaultMaxTokens = 256;

    public string? ModelPath { get; init; }

    public string DemoSize { get; init; } = "small";

    public string? CacheDirectory { get; init; }

    public string? SystemPrompt { get; init; }

    public int MaxTokens { get; init; } = DefaultMaxTokens;

    public float? Temperature { get; init; }

    public int? ContextTokens { get; init; }

    public string? ScriptPath { get; init; }

    public bool ShowHelp { get; init; }

    /// <summary>Parses the arguments.</summary>
    /// <exception cref="ArgumentException">An argument is unknown, or its value is missing or malformed (the message says which).</exception>
    public static ChatArguments Parse(IReadOnlyList<string> args)
    {
        ArgumentNullException.ThrowIfNull(args);
        var result = new ChatArguments();
        for (var i = 0; i < args.Count; i++)
        {
            var name = args[i];
            result = name switch
            {
                "-h" or "--help" or "-?" => result with { ShowHelp = true },
                "--model" => result with { ModelPath = CommandLine.Value(args, ref i) },
                "--demo" => result with { DemoSize = DemoModel.CheckSize(CommandLine.Value(args, ref i)) },
                "--cache-dir" => result with { CacheDirectory = CommandLine.Value(args, ref i) },
                "--system" => result with { SystemPrompt = CommandLine.Value(args, ref i) },
                "--max-tokens" => result with { MaxTokens = CommandLine.WholeNumber(name, CommandLine.Value(args, ref i), min: 1) },
                "--temperature" => result with { Temperature = ParseTemperature(CommandLine.Value(args, ref i)) },
                "--context" => result with { ContextTokens = CommandLine.WholeNumber(name, CommandLine.Value(args, ref i), min: 16) },
                "--script" => result with { ScriptPath = CommandLine.Value(args, ref i) },
                _ => throw new ArgumentException($"Unknown argument '{name}'."),
            };
        }

        return result;
    }

    private static float ParseTemperature(string text) =>
        float.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) && value >= 0 && float.IsFinite(value)
            ? value
            : throw new ArgumentException($"--temperature takes a number of at least 0, not '{text}'.");
}
