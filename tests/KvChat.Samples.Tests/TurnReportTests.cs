using KvChat.ConsoleChat;
using Microsoft.Extensions.AI;
using Spectre.Console;
using Spectre.Console.Testing;
using Xunit;

namespace KvChat.Samples.Tests;

public sealed class TurnReportTests
{
    [Fact]
    public void From_ReadsUsageAndRates()
    {
        var usage = new UsageDetails
        {
            InputTokenCount = 57,
            CachedInputTokenCount = 41,
            OutputTokenCount = 33,
            AdditionalCounts = new() { [KvChatUsage.PrefilledInputTokenCount] = 16 },
        };

        var report = TurnReport.From(2, usage, TimeSpan.FromMilliseconds(12.4), TimeSpan.FromMilliseconds(40));

        Assert.Equal("[2] prompt 57 | cached 41 | prefilled 16 | output 33 | first token 12 ms | decode 800 tok/s", report.ToString());
        Assert.Equal(800, report.DecodeTokensPerSecond!.Value, 6);
    }

    [Fact]
    public void From_OneTokenReply_HasNoDecodeRate()
    {
        var usage = new UsageDetails { InputTokenCount = 10, CachedInputTokenCount = 0, OutputTokenCount = 1 };

        var report = TurnReport.From(1, usage, TimeSpan.FromMilliseconds(5), TimeSpan.Zero);

        Assert.Null(report.DecodeTokensPerSecond);
        Assert.Equal("[1] prompt 10 | cached 0 | prefilled 10 | output 1 | first token 5 ms | decode - tok/s", report.ToString());
    }

    [Fact]
    public void ToMarkup_IsTheSameTextWithColour()
    {
        var report = new TurnReport(3, 100, 90, 10, 5, TimeSpan.FromMilliseconds(3), TimeSpan.FromMilliseconds(4));
        using var console = new TestConsole().Width(400);

        console.Write(new Markup(report.ToMarkup()));

        Assert.Equal(report.ToString(), console.Output.TrimEnd());
    }
}
