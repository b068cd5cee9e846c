using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntimeGenAI;
using Xunit;

namespace KvChat.Tests;

/// <summary>The intra-op thread count of a model the client loads (<see cref="KvChatClientOptions.IntraOpThreads"/>).</summary>
public sealed class IntraOpThreadsTests
{
    private static readonly string TinyPath = TestModels.PathOf(ModelKitOptions.Tiny);

    [Fact]
    public void Default_IsOneThreadPerLogicalProcessor()
    {
        Assert.Null(new KvChatClientOptions().IntraOpThreads);
        Assert.Equal(Environment.ProcessorCount, IntraOpThreads.Resolve(null));
        Assert.Equal(3, IntraOpThreads.Resolve(3));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-1)]
    [InlineData(1025)]
    public void Setter_OutOfRange_Throws(int threads)
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new KvChatClientOptions { IntraOpThreads = threads });
    }

    [Fact]
    public void Overlay_NamesASettingGenAiKnows()
    {
        // GenAI rejects keys it does not know in an overlay: the client's is accepted, a misspelt one is not.
        using var config = new Config(TinyPath);
        config.Overlay(IntraOpThreads.Overlay(2));
        Assert.Throws<OnnxRuntimeGenAIException>(() => config.Overlay(IntraOpThreads.Overlay(2).Replace("intra_op_num_threads", "intra_op_threads", StringComparison.Ordinal)));
        using var model = new Model(config);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task Client_WithThreads_LoadsAndRepliesAsAFreshPrefill(int threads)
    {
        using var harness = new OracleHarness(TinyPath, new KvChatClientOptions { IntraOpThreads = threads });
        List<ChatMessage> history = [new(ChatRole.System, "Threads."), new(ChatRole.User, "Say something.")];

        var first = await harness.AskAsync(history, new ChatOptions { MaxOutputTokens = 12 }, TestContext.Current.CancellationToken);
        history.AddRange(first.Messages);
        history.Add(new ChatMessage(ChatRole.User, "And again."));
        await harness.AskAsync(history, new ChatOptions { MaxOutputTokens = 12 }, TestContext.Current.CancellationToken);

        Assert.Equal(2, harness.Checked);
    }

    [Fact]
    public async Task GeneratorSessions_TakeTurns_WhenOneRunFillsTheCores_AndStayExact()
    {
        // Every core per Run: forward passes take turns, and parallel conversations still reply as fresh prefills.
        using var gated = new OracleHarness(TinyPath, new KvChatClientOptions
        {
            SessionBackend = KvSessionBackend.Generator,
            IntraOpThreads = Environment.ProcessorCount,
        });
        var note = gated.Client.GetService<KvCacheStatistics>()!.DecodeBatchingNote;
        Assert.Contains("one Run at a time", note, StringComparison.Ordinal);

        List<ChatMessage>[] prompts = [.. Enumerable.Range(0, 3).Select(i => new List<ChatMessage>
        {
            new(ChatRole.System, "Threads."),
            new(ChatRole.User, $"Conversation {i}, a longer question to prefill."),
        })];
        var options = new ChatOptions { MaxOutputTokens = 10 };
        var parallel = await Task.WhenAll(prompts.Select(p => gated.Client.GetResponseAsync(p, options, TestContext.Current.CancellationToken)));
        foreach (var (prompt, reply) in prompts.Zip(parallel))
        {
            // One at a time through the oracle: the fresh prefill's reply, and the parallel one equals it.
            var checkedReply = await gated.AskAsync(prompt, options, TestContext.Current.CancellationToken);
            Assert.Equal(checkedReply.Text, reply.Text);
        }

        Assert.Equal(3, gated.Checked);

        // A model the caller brought runs with threads the client does not know: its sessions run at once.
        using var model = new Model(TinyPath);
        using var client = new KvChatClient(model, TinyPath, new KvChatClientOptions { SessionBackend = KvSessionBackend.Generator });
        Assert.Contains("at once", client.GetService<KvCacheStatistics>()!.DecodeBatchingNote, StringComparison.Ordinal);
    }
}
