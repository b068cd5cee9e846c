using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Xunit;

namespace KvChat.Tests.Hardening;

public sealed class LoadTests
{
    private const string System = "You are the load test's assistant. Every conversation shares this system prompt.";

    /// <summary>Eight conversations; pairs share their first user message too, so prefixes overlap beyond the system prompt.</summary>
    private static async Task<List<string>> ConverseAsync(KvChatClient client, int caller, int turns)
    {
        var replies = new List<string>(turns);
        List<ChatMessage> history = [new(ChatRole.System, System), new(ChatRole.User, $"Opening question shared by pair {caller / 2}")];
        for (var turn = 0; turn < turns; turn++)
        {
            if (turn > 0)
            {
                history.Add(new ChatMessage(ChatRole.User, $"caller {caller} turn {turn} {new string((char)('k' + caller), 1 + (turn % 5))}"));
            }

            var response = await client.GetResponseAsync(history, new ChatOptions { MaxOutputTokens = 6 }, TestContext.Current.CancellationToken);
            replies.Add(response.Text);
            history.AddRange(response.Messages);
        }

        return replies;
    }

    [Theory]
    [MemberData(nameof(TestBackends.Both), MemberType = typeof(TestBackends))]
    public async Task EightCallersFiftyTurns_MatchASequentialRun_NoSessionLeaks(KvSessionBackend backend)
    {
        const int callers = 8;
        const int turns = 50;
        var path = TestModels.PathOf(ModelKitOptions.Tiny);
        var reference = new List<List<string>>();
        using (var sequential = new KvChatClient(path, new KvChatClientOptions { MaxSessions = 1, SessionBackend = backend }))
        {
            for (var c = 0; c < callers; c++)
            {
                reference.Add(await ConverseAsync(sequential, c, turns));
            }
        }

        using var client = new KvChatClient(path, new KvChatClientOptions { MaxSessions = 4, SessionBackend = backend });
        var results = await Task.WhenAll(Enumerable.Range(0, callers).Select(c => Task.Run(() => ConverseAsync(client, c, turns))));

        for (var c = 0; c < callers; c++)
        {
            Assert.Equal(reference[c], results[c]);
        }

        var stats = client.GetService<KvCacheStatistics>()!;
        Assert.Equal(callers * turns, stats.Requests);
        Assert.Equal(0, stats.BusySessions);
        Assert.Equal(0, stats.Discards);
        Assert.InRange(stats.Sessions, 1, 4);
        Assert.True(stats.KvBytes - stats.ParkedBytes <= 4 * stats.KvBytesPerSession);
        Assert.True(stats.KvBytes <= new KvChatClientOptions().MaxCacheBytes);
        TestContext.Current.TestOutputHelper!.WriteLine(
            $"load: {stats.Requests} requests, hits {stats.CacheHits}, misses {stats.CacheMisses}, evictions {stats.Evictions}, cached {stats.CachedInputTokens}, prefilled {stats.PrefilledInputTokens}");
    }
}
