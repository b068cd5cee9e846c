using System.Text.RegularExpressions;
using KvChat.AgentSample;
using KvChat.Samples;
using Xunit;

namespace KvChat.Samples.Tests;

/// <summary>
/// Runs the Agent Framework sample end to end on its scripted demo model (the real runtime and KV cache under a real
/// <c>ChatClientAgent</c>). Runs alone: the sample writes to <see cref="Console.Out"/>, which these tests redirect.
/// </summary>
[Collection(nameof(EnvironmentVariables))]
public sealed class AgentSampleTests
{
    /// <summary>One cache folder for the class: the scripted demo model is written once and reused.</summary>
    private static readonly Lazy<string> Cache = new(ConsoleChatTests.TemporaryDirectory);

    [Fact]
    public async Task DefaultQuestions_CallTheToolsInOneSession_AndEveryLaterModelCallComesFromTheCache()
    {
        var (code, output) = await RunAsync(["--cache-dir", Cache.Value]);
        TestContext.Current.TestOutputHelper!.WriteLine(output);

        Assert.Equal(0, code);
        Assert.DoesNotContain("error:", output, StringComparison.Ordinal);
        Assert.Contains("tool> get_weather(city: Paris) = 18C, light rain", output, StringComparison.Ordinal);
        Assert.Contains("tool> get_local_time(city: Paris) = 14:05", output, StringComparison.Ordinal);
        Assert.Contains("tool> convert_currency(amount: 50, from: EUR, to: USD) = 54", output, StringComparison.Ordinal);
        // The answers are streamed: each arrives on the assistant line after the turn's tool calls.
        Assert.Matches($@"tool> get_local_time[^\n]*\nassistant> {Regex.Escape(ScriptedDemoModel.WeatherAnswer)}\n", output);
        Assert.Matches($@"tool> convert_currency[^\n]*\nassistant> {Regex.Escape(ScriptedDemoModel.CurrencyAnswer)}\n", output);
        Assert.Contains($"assistant> {ScriptedDemoModel.Farewell}\n", output.ReplaceLineEndings("\n"), StringComparison.Ordinal);

        // A model call per step: three in turn 1 (two tool rounds), two in turn 2, one in turn 3.
        var calls = CacheLines(output);
        Assert.Equal(["1.1", "1.2", "1.3", "2.1", "2.2", "3.1"], calls.Select(c => c.Step));
        Assert.Equal(0, calls[0].Cached);
        Assert.All(calls, c => Assert.Equal(c.Input, c.Cached + c.Prefilled));
        Assert.All(calls.Skip(1), c => Assert.True(c.Cached > 0 && c.Cached > c.Prefilled, output));
        for (var i = 1; i < calls.Count; i++)
        {
            // The session sends the whole conversation: each call's prompt starts with the whole previous one.
            Assert.True(calls[i].Cached >= calls[i - 1].Input, output);
        }
    }

    [Fact]
    public async Task Script_OneQuestionALine()
    {
        var script = Path.Combine(ConsoleChatTests.TemporaryDirectory(), "script.txt");
        await File.WriteAllTextAsync(script, "\nWhat is the weather in Paris?\n\n", TestContext.Current.CancellationToken);
        var (code, output) = await RunAsync(["--cache-dir", Cache.Value, "--script", script]);

        Assert.Equal(0, code);
        Assert.Equal(["1.1", "1.2", "1.3"], CacheLines(output).Select(c => c.Step));
        Assert.Contains($"assistant> {ScriptedDemoModel.WeatherAnswer}", output, StringComparison.Ordinal);
    }

    [Fact]
    public void ScriptedDemoModel_HasItsOwnFolder()
    {
        Assert.NotEqual(DemoModel.FolderName(DemoModel.Small), DemoModel.FolderName(ScriptedDemoModel.Options));
    }

    private static Task<(int Code, string Output)> RunAsync(string[] args) => ScriptedSamples.RunAsync(AgentChat.RunAsync, args);

    private static List<(string Step, long Input, long Cached, long Prefilled)> CacheLines(string output) => ScriptedSamples.CacheLines(output);
}
