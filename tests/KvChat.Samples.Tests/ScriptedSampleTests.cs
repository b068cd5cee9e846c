using Xunit;

namespace KvChat.Samples.Tests;

/// <summary>
/// What the agent and Semantic Kernel samples share (<see cref="ScriptedChatSample"/>, <see cref="ScriptedChatArguments"/>):
/// the command line, its errors and the exit codes. Runs alone: the samples write to <see cref="Console.Out"/>.
/// </summary>
[Collection(nameof(EnvironmentVariables))]
public sealed class ScriptedSampleTests
{
    public static TheoryData<string, string, string> BadArguments { get; } = new()
    {
        { "agent", "--max-tokens", "0" },
        { "agent", "--no-such-option", "1" },
        { "agent", "--demo", "small" },
        { "agent", "--script", "/no/such/file.txt" },
        { "semantic-kernel", "--max-tokens", "0" },
        { "semantic-kernel", "--demo", "huge" },
        { "semantic-kernel", "--no-such-option", "1" },
        { "semantic-kernel", "--script", "/no/such/file.txt" },
    };

    [Theory]
    [MemberData(nameof(BadArguments))]
    public async Task BadArguments_ExitTwo(string sample, string name, string value)
    {
        var (code, output) = await ScriptedSamples.RunAsync(ScriptedSamples.ByName[sample], [name, value]);

        Assert.Equal(2, code);
        Assert.StartsWith("error: ", output, StringComparison.Ordinal);
        Assert.Contains("Usage:", output, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("agent")]
    [InlineData("semantic-kernel")]
    public async Task MissingModelFolder_ExitsOneAndSaysWhy(string sample)
    {
        var (code, output) = await ScriptedSamples.RunAsync(ScriptedSamples.ByName[sample], ["--model", Path.Combine(ConsoleChatTests.TemporaryDirectory(), "nothing-here")]);

        Assert.Equal(1, code);
        Assert.Contains("nothing-here", output, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("agent")]
    [InlineData("semantic-kernel")]
    public async Task Help_PrintsTheUsageAndExitsZero(string sample)
    {
        var (code, output) = await ScriptedSamples.RunAsync(ScriptedSamples.ByName[sample], ["--help"]);

        Assert.Equal(0, code);
        Assert.Contains("Usage:", output, StringComparison.Ordinal);
        Assert.DoesNotContain("error:", output, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_EveryOption_AndTheDefaults()
    {
        var script = Path.Combine(ConsoleChatTests.TemporaryDirectory(), "script.txt");
        File.WriteAllText(script, " First? \n\n Second.\n");

        var parsed = ScriptedChatArguments.Parse(
            ["--model", "/m", "--script", script, "--cache-dir", "/c", "--max-tokens", "7", "--demo", "tiny"], defaultMaxTokens: 96, takesDemoSize: true);
        var defaults = ScriptedChatArguments.Parse([], defaultMaxTokens: 96, takesDemoSize: true);

        Assert.Equal(new ScriptedChatArguments { ModelPath = "/m", ScriptPath = script, CacheDirectory = "/c", MaxTokens = 7, DemoSize = "tiny" }, parsed);
        Assert.Equal(["First?", "Second."], parsed.Questions(["unused"]));
        Assert.Equal(new ScriptedChatArguments { MaxTokens = 96 }, defaults);
        Assert.Equal(["default"], defaults.Questions(["default"]));
    }

    [Theory]
    [InlineData("--model")]
    [InlineData("--max-tokens", "many")]
    [InlineData("--demo", "tiny")]
    public void Parse_BadArgument_IsAnArgumentExceptionNamingIt(params string[] args)
    {
        var e = Assert.Throws<ArgumentException>(() => ScriptedChatArguments.Parse(args, defaultMaxTokens: 96, takesDemoSize: false));

        Assert.Contains(args[0], e.Message, StringComparison.Ordinal);
    }
}
