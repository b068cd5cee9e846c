using System.Globalization;
using System.Text.RegularExpressions;
using KvChat.ConsoleChat;
using KvChat.ModelKit;
using KvChat.Samples;
using KvChat.Testing;
using Spectre.Console.Testing;
using Xunit;

namespace KvChat.Samples.Tests;

/// <summary>Runs the console chat end to end, non-interactively, as <c>Main</c> does, on kit models.</summary>
public sealed partial class ConsoleChatTests
{
    private const string ThreeTurns = """
        Hello there, who are you?
        Tell me something about the sea.
        And what about the mountains?
        """;

    [Fact]
    public async Task Script_ThreeTurnsOnAKitModel_TurnsTwoAndThreeComeFromTheCache()
    {
        var script = WriteTemporary(ThreeTurns);
        var (code, output) = await RunAsync(["--model", TestModels.PathOf(TestModels.Tiny), "--script", script, "--max-tokens", "12"], TextReader.Null);

        Assert.Equal(0, code);
        var turns = CacheLines(output);
        Assert.Equal([1, 2, 3], turns.Select(t => t.Turn));
        Assert.Equal(0, turns[0].Cached);
        Assert.All(turns.Skip(1), t => Assert.True(t.Cached > 0, $"turn {t.Turn}: cached {t.Cached}\n{output}"));
        Assert.All(turns, t => Assert.Equal(t.Prompt, t.Cached + t.Prefilled));
        Assert.All(turns, t => Assert.InRange(t.Output, 0, 12));
        Assert.Contains("you> Tell me something about the sea.", output, StringComparison.Ordinal);
        Assert.Contains("3 turn(s):", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task PipedInput_SameTurnsAsAScript()
    {
        var (code, output) = await RunAsync(["--model", TestModels.PathOf(TestModels.Tiny), "--max-tokens", "8"], new StringReader(ThreeTurns));

        Assert.Equal(0, code);
        var turns = CacheLines(output);
        Assert.Equal(3, turns.Count);
        Assert.All(turns.Skip(1), t => Assert.True(t.Cached > 0, $"turn {t.Turn}: cached {t.Cached}\n{output}"));
    }

    [Fact]
    public async Task Reset_NewConversationStillFindsTheSystemMessageInTheCache_ExitStops()
    {
        const string input = "First question here\n/reset\nA different question\n/exit\nNever asked\n";
        var (code, output) = await RunAsync(
            ["--model", TestModels.PathOf(TestModels.Tiny), "--max-tokens", "6", "--system", "You are a careful assistant who answers briefly and plainly."],
            new StringReader(input));

        Assert.Equal(0, code);
        var turns = CacheLines(output);
        Assert.Equal(2, turns.Count);
        Assert.Contains("New conversation", output, StringComparison.Ordinal);
        // The new conversation shares the system message (and the template's start) with the old one.
        Assert.True(turns[1].Cached >= 10, $"cached {turns[1].Cached}\n{output}");
        Assert.True(turns[1].Prompt < turns[0].Prompt + 20, "the reset conversation holds only the new question");
        Assert.DoesNotContain("Never asked", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Help_ListsTheCommands_CommandsAndUnknownCommandsNeverReachTheModel()
    {
        const string input = "/help\nA real question\n/bogus\n/stats\n";
        var (code, output) = await RunAsync(["--model", TestModels.PathOf(TestModels.Tiny), "--max-tokens", "4"], new StringReader(input));

        Assert.Equal(0, code);
        Assert.Single(CacheLines(output)); // Only the real question was a turn.
        foreach (var command in new[] { "/reset", "/stats", "/help", "/exit" })
        {
            Assert.Contains(command + " ", output, StringComparison.Ordinal);
        }

        Assert.Contains("Unknown command /bogus", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task NoModel_WritesTheDemoModelIntoTheCacheFolder_ThenReusesIt()
    {
        var cache = TemporaryDirectory();
        string[] args = ["--cache-dir", cache, "--max-tokens", "4"];

        var (code, output) = await RunAsync(args, new StringReader("Hi\n"));
        Assert.Equal(0, code);
        var folder = Assert.Single(Directory.GetDirectories(cache));
        Assert.Equal(DemoModel.FolderName(DemoModel.Small), Path.GetFileName(folder));
        Assert.All(ModelKit.ModelKit.FileNames, name => Assert.True(File.Exists(Path.Combine(folder, name)), name));
        Assert.Contains("written in", output, StringComparison.Ordinal);
        Assert.Contains("weights are random", output, StringComparison.Ordinal);
        Assert.Single(CacheLines(output));

        var written = File.GetLastWriteTimeUtc(Path.Combine(folder, "model.onnx"));
        var (again, secondOutput) = await RunAsync(args, new StringReader("Hi again\n"));
        Assert.Equal(0, again);
        Assert.Contains("reused from", secondOutput, StringComparison.Ordinal);
        Assert.Equal(written, File.GetLastWriteTimeUtc(Path.Combine(folder, "model.onnx")));
        Assert.Single(Directory.GetDirectories(cache));
    }

    [Theory]
    [InlineData("--max-tokens", "0")]
    [InlineData("--temperature", "warm")]
    [InlineData("--demo", "huge")]
    [InlineData("--no-such-option", "1")]
    public async Task BadArguments_ExitTwoWithTheReason(string name, string value)
    {
        var (code, output) = await RunAsync([name, value], TextReader.Null);

        Assert.Equal(2, code);
        Assert.Contains("error:", output, StringComparison.Ordinal);
        Assert.Contains("Usage:", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task MissingModelFolder_ExitsOneAndNamesIt()
    {
        var missing = Path.Combine(TemporaryDirectory(), "nothing-here");
        var (code, output) = await RunAsync(["--model", missing], TextReader.Null);

        Assert.Equal(1, code);
        Assert.Contains("nothing-here", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Help_ExitsZero()
    {
        var (code, output) = await RunAsync(["--help"], TextReader.Null);

        Assert.Equal(0, code);
        Assert.Contains("--model PATH", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Interactive_ShowsAPromptAndDoesNotEchoInput()
    {
        var (code, output) = await RunAsync(["--model", TestModels.PathOf(TestModels.Tiny), "--max-tokens", "4"], new StringReader("Hello\n/exit\n"), interactive: true);

        Assert.Equal(0, code);
        Assert.Contains("/reset starts over", output, StringComparison.Ordinal);
        Assert.DoesNotContain("Hello", output, StringComparison.Ordinal);
        Assert.Single(CacheLines(output));
    }

    internal static async Task<(int Code, string Output)> RunAsync(string[] args, TextReader input, bool interactive = false)
    {
        using var console = new TestConsole().Width(400);
        var code = await ConsoleChatApp.RunAsync(args, input, console, interactive, TestContext.Current.CancellationToken);
        return (code, console.Output);
    }

    internal static List<(int Turn, long Prompt, long Cached, long Prefilled, long Output)> CacheLines(string output) =>
        [.. CacheLine().Matches(output).Select(m => (
            int.Parse(m.Groups["turn"].Value, CultureInfo.InvariantCulture),
            long.Parse(m.Groups["prompt"].Value, CultureInfo.InvariantCulture),
            long.Parse(m.Groups["cached"].Value, CultureInfo.InvariantCulture),
            long.Parse(m.Groups["prefilled"].Value, CultureInfo.InvariantCulture),
            long.Parse(m.Groups["output"].Value, CultureInfo.InvariantCulture)))];

    [GeneratedRegex(@"^\[(?<turn>\d+)\] prompt (?<prompt>\d+) \| cached (?<cached>\d+) \| prefilled (?<prefilled>\d+) \| output (?<output>\d+) \| first token \d+ ms \| decode (\d+|-) tok/s$", RegexOptions.Multiline)]
    private static partial Regex CacheLine();

    internal static string TemporaryDirectory()
    {
        var directory = Path.Combine(TestModels.RunDirectory, "samples-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(directory);
        return directory;
    }

    private static string WriteTemporary(string text)
    {
        var path = Path.Combine(TemporaryDirectory(), "script.txt");
        File.WriteAllText(path, text);
        return path;
    }
}
