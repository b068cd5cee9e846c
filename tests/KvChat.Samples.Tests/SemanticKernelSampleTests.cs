using KvChat.ModelKit;
using KvChat.SemanticKernelSample;
using KvChat.Testing;
using Xunit;

namespace KvChat.Samples.Tests;

/// <summary>
/// Runs the Semantic Kernel sample end to end. Runs alone: the sample writes to <see cref="Console.Out"/>, which these
/// tests redirect.
/// </summary>
[Collection(nameof(EnvironmentVariables))]
public sealed class SemanticKernelSampleTests
{
    private static string Call(string name, string argument, int value)
        => $"<tool_call>\n{{\"name\": \"{name}\", \"arguments\": {{\"{argument}\": {value}}}}}\n</tool_call>";

    /// <summary>
    /// A model that answers the default script as a real one would: turn 1 calls units_celsius_to_fahrenheit, turn 2
    /// units_kilometres_to_miles, each then answering from the result; turn 3 answers directly.
    /// </summary>
    private static string UnitsModel => TestModels.PathOf(ModelKitOptions.Tiny with
    {
        Script = "The run in miles is larger than nothing; 69.8 is larger.",
        ScriptByMessageCount = new Dictionary<int, string>
        {
            [2] = Call("units_celsius_to_fahrenheit", "celsius", 21),
            [4] = "21 C is 69.8 F.",
            [6] = Call("units_kilometres_to_miles", "kilometres", 42),
            [8] = "42 km is 26.1 miles.",
        },
    });

    [Fact]
    public async Task DefaultScript_OnAModelThatCallsThePlugin_CallsBothFunctionsAndTurnTwoComesFromTheCache()
    {
        var (code, output) = await RunAsync(["--model", UnitsModel]);
        TestContext.Current.TestOutputHelper!.WriteLine(output);

        Assert.Equal(0, code);
        Assert.Contains("tool> units.celsius_to_fahrenheit(celsius: 21) = 69.8", output, StringComparison.Ordinal);
        Assert.Contains("tool> units.kilometres_to_miles(kilometres: 42) = 26.1", output, StringComparison.Ordinal);
        Assert.Contains("assistant> 21 C is 69.8 F.", output, StringComparison.Ordinal);
        Assert.Contains("assistant> 42 km is 26.1 miles.", output, StringComparison.Ordinal);
        var turns = CacheLines(output);
        Assert.Equal(["1", "2", "3"], turns.Select(t => t.Step));
        Assert.True(turns[1].Cached > 0, output);
        Assert.True(turns[2].Cached > turns[2].Prefilled, output);
        Assert.All(turns, t => Assert.Equal(t.Input, t.Cached + t.Prefilled));
        Assert.DoesNotContain("error:", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task NoModel_RunsOnTheDemoModel_SaysItWillNotCallTools()
    {
        var cache = ConsoleChatTests.TemporaryDirectory();
        var (code, output) = await RunAsync(["--demo", "tiny", "--cache-dir", cache, "--max-tokens", "8"]);

        Assert.Equal(0, code);
        Assert.Contains("will not call the units plugin's functions sensibly", output, StringComparison.Ordinal);
        var turns = CacheLines(output);
        Assert.Equal(3, turns.Count);
        Assert.True(turns[1].Cached > 0, output);
    }

    [Fact]
    public async Task Script_OneQuestionALine()
    {
        var script = Path.Combine(ConsoleChatTests.TemporaryDirectory(), "script.txt");
        await File.WriteAllTextAsync(script, "How warm is 21 degrees Celsius in Fahrenheit?\n\n", TestContext.Current.CancellationToken);
        var (code, output) = await RunAsync(["--model", UnitsModel, "--script", script]);

        Assert.Equal(0, code);
        Assert.Single(CacheLines(output));
        Assert.Contains("assistant> 21 C is 69.8 F.", output, StringComparison.Ordinal);
    }

    private static Task<(int Code, string Output)> RunAsync(string[] args) => ScriptedSamples.RunAsync(SemanticKernelChat.RunAsync, args);

    private static List<(string Step, long Input, long Cached, long Prefilled)> CacheLines(string output) => ScriptedSamples.CacheLines(output);
}
