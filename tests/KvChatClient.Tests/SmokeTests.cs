using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Xunit;

namespace KvChat.Tests;

public sealed class SmokeTests
{
    [Fact]
    public async Task TwoTurns_SecondTurnUsesCache()
    {
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny));
        var history = new List<ChatMessage> { new(ChatRole.System, "You are a test."), new(ChatRole.User, "Hello there") };
        var first = await client.GetResponseAsync(history, new ChatOptions { MaxOutputTokens = 12 }, TestContext.Current.CancellationToken);
        history.AddRange(first.Messages);
        history.Add(new ChatMessage(ChatRole.User, "And again"));
        var second = await client.GetResponseAsync(history, new ChatOptions { MaxOutputTokens = 12 }, TestContext.Current.CancellationToken);
        Assert.True(second.Usage!.CachedInputTokenCount > 10, $"cached {second.Usage.CachedInputTokenCount} of {second.Usage.InputTokenCount}; text [{first.Text}] [{second.Text}]");
    }
}
