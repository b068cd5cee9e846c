using KvChat.ModelKit;

namespace KvChat.Samples;

/// <summary>
/// What the samples that run a script of user messages share around their chat: the command line
/// (<see cref="ScriptedChatArguments"/>), the questions, the demo model when no <c>--model</c> is given, the errors and
/// the exit codes. Each sample gives its usage text, its questions, its demo model and its chat. Writes to
/// <see cref="Console.Out"/>.
/// </summary>
public sealed class ScriptedChatSample
{
    /// <summary>Gets the usage text, printed for <c>-h</c> and after a bad argument.</summary>
    public required string Usage { get; init; }

    /// <summary>Gets the questions asked when no <c>--script</c> is given.</summary>
    public required IReadOnlyList<string> DefaultQuestions { get; init; }

    /// <summary>Gets the longest reply in tokens when <c>--max-tokens</c> is not given.</summary>
    public required int DefaultMaxTokens { get; init; }

    /// <summary>Gets whether the sample takes <c>--demo small|tiny</c>.</summary>
    public bool TakesDemoSize { get; init; }

    /// <summary>Gets the demo model's kit options for a demo size.</summary>
    public required Func<string, ModelKitOptions> DemoOptions { get; init; }

    /// <summary>Gets what the demo model is called in the line that says where it is (<c>Demo model</c>).</summary>
    public required string DemoName { get; init; }

    /// <summary>Gets the line printed after it: what the demo model can and cannot show.</summary>
    public required string DemoNote { get; init; }

    /// <summary>Gets the chat: the model folder, the questions and the longest reply in tokens.</summary>
    public required Func<string, IReadOnlyList<string>, int, Task> ChatAsync { get; init; }

    /// <summary>Gets which exceptions of the chat are reported as an error line and exit code 1 (a bad model, a failed turn).</summary>
    public required Func<Exception, bool> IsFailure { get; init; }

    /// <summary>Runs the sample.</summary>
    /// <returns>0 when every turn was answered, 1 when the model or a turn failed, 2 on bad arguments.</returns>
    public async Task<int> RunAsync(string[] args)
    {
        ArgumentNullException.ThrowIfNull(args);
        ScriptedChatArguments arguments;
        try
        {
            arguments = ScriptedChatArguments.Parse(args, DefaultMaxTokens, TakesDemoSize);
        }
        catch (ArgumentException e)
        {
            Console.WriteLine($"error: {e.Message}");
            Console.WriteLine(Usage);
            return 2;
        }

        if (arguments.ShowHelp)
        {
            Console.WriteLine(Usage);
            return 0;
        }

        try
        {
            await ChatAsync(arguments.ModelPath ?? PrepareDemoModel(arguments), arguments.Questions(DefaultQuestions), arguments.MaxTokens).ConfigureAwait(false);
            return 0;
        }
        catch (Exception e) when (IsFailure(e))
        {
            Console.WriteLine($"error: {e.Message}");
            return 1;
        }
    }

    private string PrepareDemoModel(ScriptedChatArguments arguments)
    {
        var options = DemoOptions(arguments.DemoSize);
        var (path, written) = DemoModel.Ensure(options, DemoModel.CacheRoot(arguments.CacheDirectory));
        Console.WriteLine($"{DemoName} ({DemoModel.Dimensions(options)}), {DemoModel.Origin(written)} {path}");
        Console.WriteLine(DemoNote);
        return path;
    }
}
