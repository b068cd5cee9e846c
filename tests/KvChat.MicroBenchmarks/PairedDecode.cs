using System.Diagnostics;
using System.Globalization;

namespace KvChat.MicroBenchmarks;

/// <summary>
/// The three ways of <see cref="DecodeBenchmarks"/> run in turn in one process (<c>--paired MODEL ROUNDS</c>), so a
/// change of the machine's load falls on all three alike: on a shared machine, the way to tell a difference of a few
/// percent on the bench model from noise. BenchmarkDotNet runs each way in its own process, minutes apart.
/// </summary>
internal static class PairedDecode
{
    public static async Task<int> RunAsync(string model, int rounds)
    {
        var benchmarks = new DecodeBenchmarks { Model = model };
        await benchmarks.Setup().ConfigureAwait(false);
        try
        {
            (string Name, Func<Task> Run)[] ways =
            [
                ("bare GenerateNextToken loop", () => Task.FromResult(benchmarks.BareGenerateNextToken())),
                ("KvSession loop", () => Task.FromResult(benchmarks.KvSessionLoop())),
                ("KvChatClient streamed reply", benchmarks.KvChatClientReply),
            ];
            var times = ways.Select(_ => new List<double>()).ToArray();
            for (var round = -3; round < rounds; round++)
            {
                // Alternate the order so that no way always follows the same one; the first 3 rounds warm up.
                for (var k = 0; k < ways.Length; k++)
                {
                    var i = round % 2 == 0 ? k : ways.Length - 1 - k;
                    var stopwatch = Stopwatch.StartNew();
                    await ways[i].Run().ConfigureAwait(false);
                    if (round >= 0)
                    {
                        times[i].Add(stopwatch.Elapsed.TotalMicroseconds / DecodeBenchmarks.Tokens);
                    }
                }
            }

            var bare = RunReport.Median(times[0]);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{model}, {rounds} rounds of {DecodeBenchmarks.Tokens} tokens; medians per token:"));
            for (var i = 0; i < ways.Length; i++)
            {
                var median = RunReport.Median(times[i]);
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"  {ways[i].Name,-30} {median,10:F2} us  overhead {median - bare,8:F2} us  ratio {median / bare:F3}"));
            }

            return 0;
        }
        finally
        {
            benchmarks.Cleanup();
        }
    }
}
