using System.Globalization;
using System.Text.RegularExpressions;
using KvChat.AgentSample;
using KvChat.SemanticKernelSample;

namespace KvChat.Samples.Tests;

/// <summary>
/// Runs the samples that write to <see cref="Console.Out"/> (the agent and Semantic Kernel samples) with it redirected,
/// and reads the cache lines they print: <c>[1.2] input N | cached N | prefilled N | output N</c> (the agent's step 2
/// of turn 1) or <c>[1] ...</c> (a turn).
/// </summary>
internal static partial class ScriptedSamples
{
    /// <summary>The samples by name, as the shared tests name them.</summary>
    public static IReadOnlyDictionary<string, Func<string[], Task<int>>> ByName { get; } = new Dictionary<string, Func<string[], Task<int>>>
    {
        ["agent"] = AgentChat.RunAsync,
        ["semantic-kernel"] = SemanticKernelChat.RunAsync,
    };

    /// <summary>Runs a sample; returns its exit code and what it wrote, with <c>\n</c> line ends.</summary>
    public static async Task<(int Code, string Output)> RunAsync(Func<string[], Task<int>> sample, string[] args)
    {
        var output = new StringWriter();
        var console = Console.Out;
        Console.SetOut(output);
        try
        {
            var code = await sample(args);
            return (code, output.ToString().ReplaceLineEndings("\n"));
        }
        finally
        {
            Console.SetOut(console);
        }
    }

    public static List<(string Step, long Input, long Cached, long Prefilled)> CacheLines(string output) =>
        [.. CacheLine().Matches(output).Select(m => (
            m.Groups["step"].Value,
            long.Parse(m.Groups["input"].Value, CultureInfo.InvariantCulture),
            long.Parse(m.Groups["cached"].Value, CultureInfo.InvariantCulture),
            long.Parse(m.Groups["prefilled"].Value, CultureInfo.InvariantCulture)))];

    [GeneratedRegex(@"^\[(?<step>\d+(\.\d+)?)\] input (?<input>\d+) \| cached (?<cached>\d+) \| prefilled (?<prefilled>\d+) \| output \d+$", RegexOptions.Multiline)]
    private static partial Regex CacheLine();
}
