using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Xunit;

namespace KvChat.Tests;

public sealed class ConversationIdTests
{
    [Fact]
    public async Task StatefulMode_OnlyNewMessages_RendersExactlyTheFullHistory()
    {
        var path = TestModels.PathOf(ModelKitOptions.Tiny);
        using var stateful = new OracleHarness(path, new KvChatClientOptions { EnableConversationIds = true });
        using var stateless = new OracleHarness(path);
        List<ChatMessage> full = [new(ChatRole.System, "System prompt for the stateful test."), new(ChatRole.User, "First")];

        var first = await stateful.AskAsync(full, new ChatOptions { MaxOutputTokens = 8 }, TestContext.Current.CancellationToken);
        Assert.NotNull(first.ConversationId);
        full.AddRange(first.Messages);
        string? id = first.ConversationId;

        for (var turn = 0; turn < 4; turn++)
        {
            var user = new ChatMessage(ChatRole.User, $"Next {turn}");
            full.Add(user);
            var reply = await stateful.AskAsync([user], new ChatOptions { MaxOutputTokens = 5 + turn, ConversationId = id }, TestContext.Current.CancellationToken);
            Assert.Equal(id, reply.ConversationId);
            var statefulPrompt = stateful.Last.Prompt;

            var reference = await stateless.AskAsync(full, new ChatOptions { MaxOutputTokens = 5 + turn }, TestContext.Current.CancellationToken);
            Assert.Equal(stateless.Last.Prompt, statefulPrompt);
            Assert.Equal(reference.Text, reply.Text);
            Assert.True(reply.Usage!.CachedInputTokenCount > 0);
            full.AddRange(reference.Messages);
        }
    }

    [Fact]
    public async Task StatefulMode_UnknownOrForgottenId_IsAClearError()
    {
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny), new KvChatClientOptions { EnableConversationIds = true, MaxConversations = 1 });
        var error = Assert.Throws<InvalidOperationException>(() => client.GetStreamingResponseAsync([new(ChatRole.User, "x")], new ChatOptions { ConversationId = "nope" }));
        Assert.Contains("nope", error.Message, StringComparison.Ordinal);

        var a = await client.GetResponseAsync([new(ChatRole.User, "a")], new ChatOptions { MaxOutputTokens = 2 }, TestContext.Current.CancellationToken);
        await client.GetResponseAsync([new(ChatRole.User, "b")], new ChatOptions { MaxOutputTokens = 2 }, TestContext.Current.CancellationToken);
        Assert.Throws<InvalidOperationException>(() => client.GetStreamingResponseAsync([new(ChatRole.User, "again")], new ChatOptions { ConversationId = a.ConversationId }));
    }
}
