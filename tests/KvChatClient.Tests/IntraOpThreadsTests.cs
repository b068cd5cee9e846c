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
}
