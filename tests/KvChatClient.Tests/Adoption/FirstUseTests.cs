using System.Xml.Linq;
using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntimeGenAI;
using Xunit;

namespace KvChat.Tests;

/// <summary>Things a new user meets first: options the constructors would otherwise ignore, and the documented services.</summary>
public sealed class FirstUseTests
{
    private static readonly string TinyPath = TestModels.PathOf(ModelKitOptions.Tiny);

    [Fact]
    public void Constructor_OptionsNamingAnotherModelFolder_ThrowsNamingBoth()
    {
        var other = TestModels.PathOf(ModelKitOptions.Tiny with { Seed = 5 });
        var error = Assert.Throws<ArgumentException>(() => new KvChatClient(TinyPath, new KvChatClientOptions { ModelPath = other }));
        Assert.Equal("options", error.ParamName);
        Assert.Contains("KvChatClientOptions.ModelPath", error.Message, StringComparison.Ordinal);
        Assert.Contains(other, error.Message, StringComparison.Ordinal);
        Assert.Contains(TinyPath, error.Message, StringComparison.Ordinal);

        using var model = new Model(TinyPath);
        Assert.Throws<ArgumentException>(() => new KvChatClient(model, TinyPath, new KvChatClientOptions { ModelPath = other }));
    }

    [Fact]
    public async Task Constructor_OptionsNamingTheSameFolder_OrNone_Work()
    {
        using var same = new KvChatClient(TinyPath, new KvChatClientOptions { ModelPath = TinyPath + Path.DirectorySeparatorChar });
        using var none = new KvChatClient(TinyPath, new KvChatClientOptions());
        var reply = await same.GetResponseAsync([new(ChatRole.User, "Hi")], new ChatOptions { MaxOutputTokens = 2 }, TestContext.Current.CancellationToken);
        Assert.Equal(ChatRole.Assistant, reply.Messages[0].Role);
    }

    [Fact]
    public void GetService_DocumentsHowToUseTheTokenizerSafely()
    {
        var docs = XDocument.Load(Path.Combine(AppContext.BaseDirectory, "KvChatClient.xml"));
        var member = docs.Descendants("member").Single(m => (string?)m.Attribute("name") == "M:KvChat.KvChatClient.GetService(System.Type,System.Object)");
        var text = string.Join(" ", member.DescendantNodes().OfType<XText>().Select(t => t.Value.Trim())) +
            string.Join(" ", member.Descendants("see").Select(s => (string?)s.Attribute("cref")));
        Assert.Contains("T:Microsoft.ML.OnnxRuntimeGenAI.Tokenizer", text, StringComparison.Ordinal);
        Assert.Contains("not thread-safe", text, StringComparison.Ordinal);
        Assert.Contains("no request of this client is in flight", text, StringComparison.Ordinal);
        Assert.Contains("new Tokenizer(model)", text, StringComparison.Ordinal);
        Assert.Contains("never dispose", text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task OwnTokenizerFromTheModelService_IsSafeWhileRequestsRun()
    {
        using var client = new KvChatClient(TinyPath);
        using var tokenizer = new Tokenizer(client.GetService<Model>()!);
        var requests = Enumerable.Range(0, 4).Select(i => client.GetResponseAsync([new(ChatRole.User, $"Question {i}")], new ChatOptions { MaxOutputTokens = 8 }, TestContext.Current.CancellationToken)).ToList();
        for (var i = 0; i < 50; i++)
        {
            using var sequences = tokenizer.Encode($"text {i}");
            Assert.Equal($"text {i}", tokenizer.Decode(sequences[0]));
        }

        await Task.WhenAll(requests);
    }
}
