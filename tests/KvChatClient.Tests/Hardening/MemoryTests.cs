using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Xunit;

namespace KvChat.Tests.Hardening;

/// <summary>Runs alone: other tests' allocations would blur the process-wide measurements.</summary>
[CollectionDefinition(nameof(MemoryTests), DisableParallelization = true)]
public sealed class MemoryTestsRunAlone;

[Collection(nameof(MemoryTests))]
public sealed class MemoryTests
{
    /// <summary>
    /// Short conversations, each new: memory stays flat after warm-up and the session bound holds. The full soak
    /// (KVCHAT_SOAK_CONVERSATIONS=1000) runs the same test longer.
    /// </summary>
    [Theory]
    [MemberData(nameof(TestBackends.Both), MemberType = typeof(TestBackends))]
    public async Task ManyShortConversations_MemoryStaysFlat_SessionBoundHolds(KvSessionBackend backend)
    {
        var total = int.TryParse(Environment.GetEnvironmentVariable("KVCHAT_SOAK_CONVERSATIONS"), out var n) ? n : 600;
        var warmUp = total / 2;
        // Parked conversations (owned backend) fill the memory bound, then the least recently used go: a bound of three
        // sessions and one more megabyte fills during warm-up.
        const long maxBytes = (3L * 2048 * 512) + (1 << 20);
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny), new KvChatClientOptions { MaxSessions = 3, SessionBackend = backend, MaxCacheBytes = maxBytes });
        var samples = new List<(double X, long Managed, long WorkingSet)>();
        for (var i = 0; i < total; i++)
        {
            List<ChatMessage> history = [new(ChatRole.System, "Soak test."), new(ChatRole.User, $"Conversation {i} says hello {i * 7919 % 1000}")];
            var first = await client.GetResponseAsync(history, new ChatOptions { MaxOutputTokens = 6 }, TestContext.Current.CancellationToken);
            history.AddRange(first.Messages);
            history.Add(new ChatMessage(ChatRole.User, "and goodbye"));
            await client.GetResponseAsync(history, new ChatOptions { MaxOutputTokens = 4 }, TestContext.Current.CancellationToken);
            if (i >= warmUp && (i - warmUp) % 25 == 0)
            {
                var (m, w) = Measure();
                samples.Add((i, m, w));
            }
        }

        var managedSlope = Slope(samples.Select(s => (s.X, (double)s.Managed)).ToList());
        var workingSetSlope = Slope(samples.Select(s => (s.X, (double)s.WorkingSet)).ToList());
        var stats = client.GetService<KvCacheStatistics>()!;
        TestContext.Current.TestOutputHelper!.WriteLine(
            $"soak: {total} conversations, slope over the last {total - warmUp}: managed {managedSlope:F0} B/conversation, working set {workingSetSlope:F0} B/conversation; sessions {stats.Sessions}, KV {stats.KvBytes} B");

        Assert.InRange(stats.Sessions, 1, 3);
        Assert.Equal(stats.Sessions * stats.KvBytesPerSession, stats.KvBytes - stats.ParkedBytes);
        Assert.True(stats.KvBytes <= maxBytes, $"KV {stats.KvBytes} B over the bound {maxBytes} B");
        Assert.True(backend == KvSessionBackend.Generator ? stats.ParkedConversations == 0 : stats.ParkedBytes > 0);

        // Bounded caches (segments, reply memo) may still be filling; a leak of a session or a prompt per conversation
        // would be far above this.
        Assert.True(managedSlope < 2048, $"managed memory grows {managedSlope:F0} bytes per conversation");
        Assert.True(workingSetSlope < 64 * 1024, $"working set grows {workingSetSlope:F0} bytes per conversation");
    }

    /// <summary>Least-squares slope: bytes per conversation.</summary>
    private static double Slope(IReadOnlyList<(double X, double Y)> points)
    {
        var meanX = points.Average(p => p.X);
        var meanY = points.Average(p => p.Y);
        return points.Sum(p => (p.X - meanX) * (p.Y - meanY)) / points.Sum(p => (p.X - meanX) * (p.X - meanX));
    }

    private static (long Managed, long WorkingSet) Measure()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        return (GC.GetTotalMemory(forceFullCollection: true), Environment.WorkingSet);
    }
}
