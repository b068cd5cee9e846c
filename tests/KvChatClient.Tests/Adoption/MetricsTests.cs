using System.Diagnostics.Metrics;
using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Xunit;

namespace KvChat.Tests;

public sealed class MetricsTests
{
    private const string Reply = "Metered reply.";

    private static string ScriptedPath => TestModels.PathOf(ModelKitOptions.Tiny with { Script = Reply });

    private static string UniqueModelId() => "metrics-" + Guid.NewGuid().ToString("N")[..8];

    [Fact]
    public async Task ScriptedConversation_CountersMatchUsageAndStatistics()
    {
        var services = new ServiceCollection();
        services.AddMetrics();
        services.AddKvChatClient(ScriptedPath, o => o.MaxSessions = 1);
        await using var provider = services.BuildServiceProvider();
        using var metrics = MetricRecorder.ForFactory(provider.GetRequiredService<IMeterFactory>());
        var client = provider.GetRequiredService<IChatClient>();

        List<ChatMessage> history = [new(ChatRole.System, "You are a test. Keep it short.")];
        var usages = new List<UsageDetails>();
        for (var turn = 0; turn < 3; turn++)
        {
            history.Add(new ChatMessage(ChatRole.User, $"Question {turn}?"));
            var response = await client.GetResponseAsync(history, cancellationToken: TestContext.Current.CancellationToken);
            Assert.Equal(Reply, response.Text);
            history.AddRange(response.Messages);
            usages.Add(response.Usage!);
        }

        var stats = client.GetService<KvCacheStatistics>()!;
        Assert.True(usages[2].CachedInputTokenCount > usages[0].InputTokenCount);
        Assert.Equal(usages.Sum(u => u.CachedInputTokenCount!.Value), metrics.Sum("kvchat.cache.cached_tokens"));
        Assert.Equal(usages.Sum(u => u.InputTokenCount!.Value - u.CachedInputTokenCount!.Value), metrics.Sum("kvchat.cache.prefilled_tokens"));
        Assert.Equal(usages.Sum(u => u.OutputTokenCount!.Value), metrics.Sum("kvchat.output_tokens"));
        Assert.Equal(stats.CachedInputTokens, metrics.Sum("kvchat.cache.cached_tokens"));
        Assert.Equal(stats.PrefilledInputTokens, metrics.Sum("kvchat.cache.prefilled_tokens"));
        Assert.Equal(0, metrics.Sum("kvchat.cache.evictions"));

        var firstToken = metrics.Of("kvchat.time_to_first_token");
        Assert.Equal(3, firstToken.Count);
        Assert.All(firstToken, m => Assert.InRange(m.Value, 1e-6, 60));
        Assert.All(firstToken, m => Assert.Equal("s", m.Unit));
        var rates = metrics.Of("kvchat.decode.tokens_per_second");
        Assert.Equal(3, rates.Count); // Every reply has more than one token.
        Assert.All(rates, m => Assert.True(m.Value > 0));

        var modelId = client.GetService<ChatClientMetadata>()!.DefaultModelId;
        Assert.All(metrics.Measurements, m => Assert.Equal(modelId, m.Tags["kvchat.model"]));
        Assert.Equal(1, Assert.Single(metrics.Observe("kvchat.sessions.active")).Value);
        Assert.Equal(0, Assert.Single(metrics.Observe("kvchat.sessions.busy")).Value);
    }

    [Fact]
    public async Task MoreConversationsThanSessions_CountsEvictions()
    {
        var modelId = UniqueModelId();
        using var metrics = MetricRecorder.ForModel(modelId);
        using var client = new KvChatClient(ScriptedPath, new KvChatClientOptions { MaxSessions = 1, ModelId = modelId });

        foreach (var text in new[] { "First conversation, long enough to fill a block or two.", "Second conversation about something else entirely.", "Third one." })
        {
            await client.GetResponseAsync([new(ChatRole.User, text)], cancellationToken: TestContext.Current.CancellationToken);
        }

        var evictions = client.GetService<KvCacheStatistics>()!.Evictions;
        Assert.True(evictions >= 1);
        Assert.Equal(evictions, metrics.Sum("kvchat.cache.evictions"));
    }

    [Fact]
    public async Task PrefillAsync_CountsPrefilledTokens()
    {
        var modelId = UniqueModelId();
        using var metrics = MetricRecorder.ForModel(modelId);
        using var client = new KvChatClient(ScriptedPath, new KvChatClientOptions { ModelId = modelId });

        var prefilled = await client.PrefillAsync([new(ChatRole.System, "A shared system prompt.")], cancellationToken: TestContext.Current.CancellationToken);

        Assert.True(prefilled > 0);
        Assert.Equal(prefilled, metrics.Sum("kvchat.cache.prefilled_tokens"));
        Assert.Empty(metrics.Of("kvchat.cache.cached_tokens"));
        Assert.Empty(metrics.Of("kvchat.time_to_first_token"));
    }

    [Fact]
    public async Task SessionGauges_ReportBusySessionsDuringAReply_AndStopWhenTheClientIsDisposed()
    {
        var modelId = UniqueModelId();
        using var metrics = MetricRecorder.ForModel(modelId);
        var client = new KvChatClient(ScriptedPath, new KvChatClientOptions { ModelId = modelId });
        Assert.Equal(0, Assert.Single(metrics.Observe("kvchat.sessions.active")).Value);

        // The trace hook runs while the reply still holds its session.
        using var replying = new SemaphoreSlim(0);
        using var finish = new ManualResetEventSlim();
        client.Trace = _ =>
        {
            replying.Release();
            finish.Wait(TestContext.Current.CancellationToken);
        };
        var response = client.GetResponseAsync([new(ChatRole.User, "Hold on")], cancellationToken: TestContext.Current.CancellationToken);
        await replying.WaitAsync(TestContext.Current.CancellationToken);
        Assert.Equal(1, Assert.Single(metrics.Observe("kvchat.sessions.busy")).Value);
        Assert.Equal(1, Assert.Single(metrics.Observe("kvchat.sessions.active")).Value);
        finish.Set();
        await response;

        Assert.Equal(0, Assert.Single(metrics.Observe("kvchat.sessions.busy")).Value);
        Assert.Equal(1, Assert.Single(metrics.Observe("kvchat.sessions.active")).Value);
        client.Dispose();
        Assert.Empty(metrics.Observe("kvchat.sessions.active"));
    }

    [Fact]
    public async Task KeyedClientsOnOneMeterFactory_ShareTheMeter_GaugesReportEachModel()
    {
        var services = new ServiceCollection();
        services.AddMetrics();
        services.AddKeyedKvChatClient("a", ScriptedPath, o => o.ModelId = "model-a");
        services.AddKeyedKvChatClient("b", ScriptedPath, o => o.ModelId = "model-b");
        var provider = services.BuildServiceProvider();
        using var metrics = MetricRecorder.ForFactory(provider.GetRequiredService<IMeterFactory>());

        await provider.GetRequiredKeyedService<IChatClient>("a").GetResponseAsync([new(ChatRole.User, "To a")], cancellationToken: TestContext.Current.CancellationToken);
        await provider.GetRequiredKeyedService<IChatClient>("b").GetResponseAsync([new(ChatRole.User, "To b")], cancellationToken: TestContext.Current.CancellationToken);

        var active = metrics.Observe("kvchat.sessions.active");
        Assert.Equal(new[] { "model-a", "model-b" }, active.Select(m => (string)m.Tags["kvchat.model"]!).Order());
        Assert.All(active, m => Assert.Equal(1, m.Value));
        Assert.Equal(2, metrics.Of("kvchat.output_tokens").Select(m => m.Tags["kvchat.model"]).Distinct().Count());

        await provider.DisposeAsync();
        Assert.Empty(metrics.Observe("kvchat.sessions.active"));
    }
}
