using System.Collections.Concurrent;
using System.Diagnostics;
using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Xunit;

namespace KvChat.Tests;

/// <summary>
/// What <c>.UseOpenTelemetry()</c> (Microsoft.Extensions.AI 10.11) exports from this client's usage: the chat span
/// carries <c>gen_ai.usage.cache_read.input_tokens</c>; the <c>gen_ai.client.token.usage</c> histogram has input and
/// output token types only, so cached tokens as a metric come from the KvChat meter.
/// </summary>
public sealed class OpenTelemetryTests
{
    private static string ScriptedPath => TestModels.PathOf(ModelKitOptions.Tiny with { Script = "Traced reply." });

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task UseOpenTelemetry_ChatSpanCarriesCachedInputTokens(bool streaming)
    {
        var sourceName = "kvchat-test-" + Guid.NewGuid().ToString("N")[..8];
        var spans = new ConcurrentQueue<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = source => source.Name == sourceName,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = spans.Enqueue,
        };
        ActivitySource.AddActivityListener(listener);
        using var tokenUsage = MetricRecorder.For(i => i.Meter.Name == sourceName && i.Name == "gen_ai.client.token.usage");

        var services = new ServiceCollection();
        services.AddKvChatClient(ScriptedPath).UseOpenTelemetry(sourceName: sourceName);
        await using var provider = services.BuildServiceProvider();
        var client = provider.GetRequiredService<IChatClient>();

        List<ChatMessage> history = [new(ChatRole.System, "A system prompt that the second turn finds in the cache."), new(ChatRole.User, "One")];
        var usages = new List<UsageDetails>();
        for (var turn = 0; turn < 2; turn++)
        {
            var response = streaming
                ? await client.GetStreamingResponseAsync(history, cancellationToken: TestContext.Current.CancellationToken).ToChatResponseAsync(TestContext.Current.CancellationToken)
                : await client.GetResponseAsync(history, cancellationToken: TestContext.Current.CancellationToken);
            usages.Add(response.Usage!);
            history.AddRange(response.Messages);
            history.Add(new ChatMessage(ChatRole.User, "Two"));
        }

        Assert.Equal(2, spans.Count);
        var second = spans.Last();
        Assert.True(usages[1].CachedInputTokenCount > 0);
        Assert.Equal((int)usages[1].CachedInputTokenCount!.Value, second.GetTagItem("gen_ai.usage.cache_read.input_tokens"));
        Assert.Equal((int)usages[1].InputTokenCount!.Value, second.GetTagItem("gen_ai.usage.input_tokens"));
        Assert.Equal((int)usages[1].OutputTokenCount!.Value, second.GetTagItem("gen_ai.usage.output_tokens"));
        Assert.Equal("kvchat-onnxruntime-genai", second.GetTagItem("gen_ai.provider.name"));
        Assert.Equal(0, spans.First().GetTagItem("gen_ai.usage.cache_read.input_tokens"));

        var types = tokenUsage.Of("gen_ai.client.token.usage").Select(m => (string)m.Tags["gen_ai.token.type"]!).Distinct().Order();
        Assert.Equal(new[] { "input", "output" }, types);
    }
}
