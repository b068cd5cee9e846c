namespace KvChat.Samples;

/// <summary>
/// The command line of the samples that run a script of user messages (the agent and Semantic Kernel samples):
/// <c>--model</c>, <c>--script</c>, <c>--max-tokens</c>, <c>--cache-dir</c>, <c>--demo</c> where the sample has a
/// choice of demo models, and <c>-h</c>.
/// </summary>
public sealed record ScriptedChatArguments
{
    /// <summary>Gets the model folder (<c>--model</c>), or <see langword="null"/> for the sample's demo model.</summary>
    public string? ModelPath { get; init; }

    /// <summary>Gets the file of user messages, one a line (<c>--script</c>), or <see langword="null"/> for the sample's questions.</summary>
    public string? ScriptPath { get; init; }

    /// <summary>Gets where the demo model is kept (<c>--cache-dir</c>), or <see langword="null"/> for the default.</summary>
    public string? CacheDirectory { get; init; }

    /// <summary>Gets the demo model's size (<c>--demo</c>). <value>The default value is <c>small</c>.</value></summary>
    public string DemoSize { get; init; } = "small";

    /// <summary>Gets the longest reply in tokens, per model call (<c>--max-tokens</c>).</summary>
    public int MaxTokens { get; init; }

    /// <summary>Gets whether <c>-h</c> or <c>--help</c> was given.</summary>
    public bool ShowHelp { get; init; }

    /// <summary>Parses the arguments.</summary>
    /// <param name="args">The command line.</param>
    /// <param name="defaultMaxTokens">The sample's <see cref="MaxTokens"/> when <c>--max-tokens</c> is not given.</param>
    /// <param name="takesDemoSize">Whether the sample takes <c>--demo</c>.</param>
    /// <exception cref="ArgumentException">
    /// An argument is unknown, its value is missing or malformed, or the script file does not exist (the message says which).
    /// </exception>
    public static ScriptedChatArguments Parse(IReadOnlyList<string> args, int defaultMaxTokens, bool takesDemoSize)
    {
        ArgumentNullException.ThrowIfNull(args);
        var result = new ScriptedChatArguments { MaxTokens = defaultMaxTokens };
        for (var i = 0; i < args.Count; i++)
        {
            var name = args[i];
            result = name switch
            {
                "-h" or "--help" => result with { ShowHelp = true },
                "--model" => result with { ModelPath = CommandLine.Value(args, ref i) },
                "--script" => result with { ScriptPath = CommandLine.Value(args, ref i) },
                "--cache-dir" => result with { CacheDirectory = CommandLine.Value(args, ref i) },
                "--max-tokens" => result with { MaxTokens = CommandLine.WholeNumber(name, CommandLine.Value(args, ref i), min: 1) },
                "--demo" when takesDemoSize => result with { DemoSize = DemoModel.CheckSize(CommandLine.Value(args, ref i)) },
                _ => throw new ArgumentException($"Unknown argument '{name}'."),
            };
        }

        if (result.ScriptPath is { } script && !File.Exists(script))
        {
            throw new ArgumentException($"The script file '{script}' does not exist.");
        }

        return result;
    }

    /// <summary>Gets the user messages: the script's non-empty lines, trimmed, or <paramref name="defaults"/> without a script.</summary>
    public IReadOnlyList<string> Questions(IReadOnlyList<string> defaults) => ScriptPath is null
        ? defaults
        : [.. File.ReadLines(ScriptPath).Select(l => l.Trim()).Where(l => l.Length > 0)];
}
