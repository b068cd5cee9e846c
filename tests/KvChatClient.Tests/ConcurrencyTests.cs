using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Xunit;

namespace KvChat.Tests;

public sealed class ConcurrencyTests
{
    private static async Task<List<string>> ConverseAsync(KvChatClient client, int conversation, int turns)
    {
        var replies = new List<string>();
        List<ChatMessage> history = [new(ChatRole.System, "A shared system prompt that every conversation starts with, long enough for blocks.")];
        for (var turn = 0; turn < turns; turn++)
        {
            history.Add(new ChatMessage(ChatRole.User, $"Conversation {conversation}, turn {turn}: {new string((char)('a' + conversation), turn + 1)}"));
            var response = await client.GetResponseAsync(history, new ChatOptions { MaxOutputTokens = 10 }, TestContext.Current.CancellationToken);
            replies.Add(response.Text);
            history.AddRange(response.Messages);
        }

        return replies;
    }

    [Theory]
    [InlineData(BusySessionBehavior.TakeOther, 2)]
    [InlineData(BusySessionBehavior.Wait, 3)]
    [InlineData(BusySessionBehavior.TakeOther, 8)]
    public async Task ParallelCallers_GetTheSameRepliesAsASequentialRun(BusySessionBehavior behavior, int sessions)
    {
        var path = TestModels.PathOf(ModelKitOptions.Tiny);
        const int conversations = 6;
        const int turns = 4;
        List<List<string>> sequential = [];
        using (var reference = new KvChatClient(path, new KvChatClientOptions { MaxSessions = 1 }))
        {
            for (var c = 0; c < conversations; c++)
            {
                sequential.Add(await ConverseAsync(reference, c, turns));
            }
        }

        using var client = new KvChatClient(path, new KvChatClientOptions { MaxSessions = sessions, BusySessionBehavior = behavior });
        var parallel = await Task.WhenAll(Enumerable.Range(0, conversations).Select(c => Task.Run(() => ConverseAsync(client, c, turns))));

        for (var c = 0; c < conversations; c++)
        {
            Assert.Equal(sequential[c], parallel[c]);
        }

        var stats = client.GetService<KvCacheStatistics>()!;
        Assert.Equal(0, stats.BusySessions);
        Assert.InRange(stats.Sessions, 1, sessions);
        Assert.Equal(conversations * turns, stats.Requests);
        Assert.True(stats.CachedInputTokens > 0);
    }

    [Fact]
    public async Task TwoCallersOnOneConversation_BothGetTheSequentialReply()
    {
        var path = TestModels.PathOf(ModelKitOptions.Tiny);
        using var client = new KvChatClient(path, new KvChatClientOptions { MaxSessions = 2 });
        List<ChatMessage> history = [new(ChatRole.System, "Shared."), new(ChatRole.User, "Same question at once")];
        var expected = (await client.GetResponseAsync(history, new ChatOptions { MaxOutputTokens = 12 }, TestContext.Current.CancellationToken)).Text;

        var answers = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => Task.Run(
            async () => (await client.GetResponseAsync(history, new ChatOptions { MaxOutputTokens = 12 }, TestContext.Current.CancellationToken)).Text)));

        Assert.All(answers, a => Assert.Equal(expected, a));
    }
}
