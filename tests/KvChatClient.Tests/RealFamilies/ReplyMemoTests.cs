using Microsoft.Extensions.AI;
using Xunit;

namespace KvChat.Tests.RealFamilies;

/// <summary>
/// The reply memo re-enters a generated reply as its generated ids only where the rendered prompt holds the reply
/// verbatim after the rendering of the conversation before it; a template that trims it gets the canonical encoding.
/// </summary>
public sealed class ReplyMemoTests
{
    /// <summary>Ids that decode to <paramref name="text"/> but are not its encoding: one piece per character.</summary>
    private static int[] Spelled(RealFamily family, string text) => [.. text.SelectMany(c => family.Encode(c.ToString()))];

    private static List<ChatMessage> Conversation(string reply) =>
        [new(ChatRole.System, "Be brief."), new(ChatRole.User, "Greet me."), new(ChatRole.Assistant, reply), new(ChatRole.User, "Again.")];

    [Theory]
    [InlineData("qwen3")]
    [InlineData("llama3_1")]
    [InlineData("gemma3")]
    public void VerbatimReply_IsReenteredAsItsGeneratedIds(string name)
    {
        var family = RealFamily.Get(name);
        var renderer = family.NewRenderer(replyMemoCapacity: 16);
        const string reply = "Hello world";
        var generated = Spelled(family, reply);
        renderer.RememberReply(reply, generated);

        var tokens = renderer.Render(Conversation(reply), null, true).Tokens;
        var prompt = renderer.Render(Conversation(reply)[..2], null, true).Tokens;

        Assert.Equal(1, renderer.RetokenizedReplies);
        Assert.Equal([.. prompt, .. generated], tokens.Take(prompt.Length + generated.Length));
        Assert.NotEqual(family.Canonical(RealFamily.Json(Conversation(reply).Select(m => (m.Role.Value, m.Text)))), tokens);
    }

    [Theory]
    [InlineData("llama3_1")]
    [InlineData("gemma3")]
    public void TrimmedReply_GetsTheCanonicalEncoding(string name)
    {
        var family = RealFamily.Get(name);
        var renderer = family.NewRenderer(replyMemoCapacity: 16);
        const string reply = " Hello world";
        renderer.RememberReply(reply, Spelled(family, reply));

        Assert.Equal(1, renderer.RetokenizedReplies);
        Assert.Equal(family.Canonical(RealFamily.Json(Conversation(reply).Select(m => (m.Role.Value, m.Text)))),
            renderer.Render(Conversation(reply), null, true).Tokens);
    }
}
