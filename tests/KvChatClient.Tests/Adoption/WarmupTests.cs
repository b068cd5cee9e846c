using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Xunit;

namespace KvChat.Tests;

/// <summary>Warm-up prompts from configuration, prefilled and pinned at host start (and loaded from disk at the next start).</summary>
public sealed class WarmupTests
{
    private const string First = "You are the assistant of a small shop that sells tea, teapots and cups. Answer briefly.";
    private const string Second = "You translate English sentences into French, one sentence at a time, nothing else.";

    private static readonly string TinyPath = TestModels.PathOf(ModelKitOptions.Tiny);

    private static CancellationToken Cancel => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Configuration_WarmupBinds_HostStartPinsIt_SecondStartLoadsItFromDisk()
    {
        var directory = Path.Combine(TestModels.RunDirectory, "warmup-" + Guid.NewGuid().ToString("N")[..12]);
        var configuration = Configuration(new()
        {
            ["KvChat:ModelPath"] = TinyPath,
            ["KvChat:PrefixCacheDirectory"] = directory,
            ["KvChat:Warmup:0:System"] = First,
            ["KvChat:Warmup:1:0:Role"] = "system",
            ["KvChat:Warmup:1:0:Content"] = Second,
        });

        for (var start = 0; start < 2; start++)
        {
            var services = new ServiceCollection();
            services.AddKvChatClient(configuration.GetSection("KvChat"));
            await using var provider = services.BuildServiceProvider();
            var options = provider.GetRequiredService<IOptionsMonitor<KvChatClientOptions>>().Get(Options.DefaultName);
            Assert.Equal(2, options.WarmupPrompts.Count);
            Assert.Equal(First, Assert.Single(options.WarmupPrompts[0]).Text);
            Assert.Equal(ChatRole.System, options.WarmupPrompts[1][0].Role);

            await StartAsync(provider);
            var client = provider.GetRequiredService<IChatClient>();
            var stats = client.GetService<KvCacheStatistics>()!;
            Assert.Equal(2, stats.PinnedSessions);
            if (start == 0)
            {
                Assert.Equal(2, stats.PrefixesWrittenToDisk);
                Assert.True(stats.PrefilledInputTokens > 0);
            }
            else
            {
                Assert.Equal(2, stats.PrefixesLoadedFromDisk);
                Assert.Equal(0, stats.PrefilledInputTokens);
            }

            var response = await client.GetResponseAsync([new(ChatRole.System, Second), new(ChatRole.User, "Good morning.")], new() { MaxOutputTokens = 4 }, Cancel);
            Assert.True(response.Usage!.CachedInputTokenCount > 0);
        }
    }

    [Fact]
    public async Task NoWarmup_HostStartDoesNotCreateTheClient()
    {
        // A folder that passes validation but that no client can load: creating the client would throw.
        var folder = Path.Combine(TestModels.RunDirectory, "unloadable-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "genai_config.json"), "{}");
        var services = new ServiceCollection();
        services.AddKvChatClient(folder);
        await using var provider = services.BuildServiceProvider();

        await StartAsync(provider);
        Assert.ThrowsAny<Exception>(() => provider.GetRequiredService<IChatClient>());
    }

    [Fact]
    public async Task InvalidWarmupPrompt_FailsTheHostStart_NamingIt()
    {
        var services = new ServiceCollection();
        services.AddKvChatClient(TinyPath, o =>
        {
            o.ContextTokens = 64;
            o.WarmupPrompts.Add([new ChatMessage(ChatRole.System, string.Concat(Enumerable.Repeat(First, 10)))]);
        });
        await using var provider = services.BuildServiceProvider();
        var error = await Assert.ThrowsAsync<ArgumentException>(() => StartAsync(provider));
        Assert.Contains("WarmupPrompts[0]", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task WarmUpAsync_WithoutDependencyInjection_PinsEveryPrompt()
    {
        var options = new KvChatClientOptions();
        options.WarmupPrompts.Add([new ChatMessage(ChatRole.System, First)]);
        options.WarmupPrompts.Add([new ChatMessage(ChatRole.System, Second), new ChatMessage(ChatRole.User, "Hello")]);
        using var client = new KvChatClient(TinyPath, options);
        options.WarmupPrompts.Clear(); // Copied at construction.

        Assert.True(await client.WarmUpAsync(Cancel) > 0);
        Assert.Equal(2, client.GetService<KvCacheStatistics>()!.PinnedSessions);
        Assert.Equal(0, await client.WarmUpAsync(Cancel));
    }

    [Theory]
    [InlineData("KvChat:Warmup:0:Sytem", "KvChat:Warmup:0 must be a system prompt")]
    [InlineData("KvChat:Warmup:0:0:Role", "KvChat:Warmup:0:0:Content is empty")]
    [InlineData("KvChat:Warmup:0:0:Colour", "KvChat:Warmup:0:0:Colour is not a message field")]
    public async Task Configuration_BadWarmup_FailsNamingTheKey(string key, string message)
    {
        var configuration = Configuration(new() { ["KvChat:ModelPath"] = TinyPath, [key] = "system" });
        var services = new ServiceCollection();
        services.AddKvChatClient(configuration.GetSection("KvChat"));
        await using var provider = services.BuildServiceProvider();
        var error = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IOptionsMonitor<KvChatClientOptions>>().Get(Options.DefaultName));
        Assert.Contains(message, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Configuration_GeneratorWithADirectory_FailsValidation()
    {
        var configuration = Configuration(new()
        {
            ["KvChat:ModelPath"] = TinyPath,
            ["KvChat:SessionBackend"] = "Generator",
            ["KvChat:PrefixCacheDirectory"] = TestModels.RunDirectory,
        });
        var services = new ServiceCollection();
        services.AddKvChatClient(configuration.GetSection("KvChat"));
        using var provider = services.BuildServiceProvider();
        var error = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IChatClient>());
        Assert.Contains("PrefixCacheDirectory", error.Message, StringComparison.Ordinal);
    }

    private static IConfiguration Configuration(Dictionary<string, string?> values) => new ConfigurationBuilder().AddInMemoryCollection(values).Build();

    private static async Task StartAsync(IServiceProvider provider)
    {
        foreach (var service in provider.GetServices<IHostedService>())
        {
            await service.StartAsync(Cancel);
        }
    }
}
