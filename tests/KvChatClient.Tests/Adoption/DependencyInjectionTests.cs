using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.ML.OnnxRuntimeGenAI;
using Xunit;

namespace KvChat.Tests;

public sealed class DependencyInjectionTests
{
    private const string Reply = "Hello from DI.";

    private static string ScriptedPath => TestModels.PathOf(ModelKitOptions.Tiny with { Script = Reply });

    private static List<ChatMessage> Ask(string text = "Hi") => [new(ChatRole.User, text)];

    [Fact]
    public async Task AddKvChatClient_Singleton_ResolvesOneKvChatClientThatAnswers()
    {
        var services = new ServiceCollection();
        var builder = services.AddKvChatClient(ScriptedPath);
        await using var provider = services.BuildServiceProvider();

        var first = provider.GetRequiredService<IChatClient>();
        Assert.Same(first, provider.GetRequiredService<IChatClient>());
        using (var scope = provider.CreateScope())
        {
            Assert.Same(first, scope.ServiceProvider.GetRequiredService<IChatClient>());
        }

        Assert.IsType<KvChatClient>(first);
        Assert.NotNull(builder);
        var response = await first.GetResponseAsync(Ask(), cancellationToken: TestContext.Current.CancellationToken);
        Assert.Equal(Reply, response.Text);
        Assert.Equal(Path.GetFileName(ScriptedPath), first.GetService<ChatClientMetadata>()!.DefaultModelId);
    }

    [Fact]
    public async Task AddKvChatClient_ProviderDisposed_DisposesClientAndModel_LaterCallsThrowObjectDisposed()
    {
        var services = new ServiceCollection();
        services.AddKvChatClient(ScriptedPath);
        var provider = services.BuildServiceProvider();
        var client = provider.GetRequiredService<IChatClient>();
        await client.GetResponseAsync(Ask(), cancellationToken: TestContext.Current.CancellationToken);

        await provider.DisposeAsync();

        Assert.Throws<ObjectDisposedException>(() => client.GetStreamingResponseAsync(Ask()));
        Assert.Throws<ObjectDisposedException>(() => { _ = client.GetResponseAsync(Ask()); });
        Assert.Throws<ObjectDisposedException>(() => provider.GetRequiredService<IChatClient>());
    }

    [Fact]
    public async Task AddKvChatClient_NeverResolved_LoadsNoModel()
    {
        var services = new ServiceCollection();
        services.AddKvChatClient(Path.Combine(TestModels.RunDirectory, "not-there"));

        // Registration validates nothing on disk; resolution does.
        await using var provider = services.BuildServiceProvider();
        Assert.Throws<Microsoft.Extensions.Options.OptionsValidationException>(() => provider.GetRequiredService<IChatClient>());
    }

    [Theory]
    [InlineData(ServiceLifetime.Scoped)]
    [InlineData(ServiceLifetime.Transient)]
    public async Task AddKvChatClient_ScopedOrTransientPipelines_ShareOneClientThatOutlivesThem(ServiceLifetime lifetime)
    {
        var services = new ServiceCollection();
        services.AddKvChatClient(ScriptedPath, o => o.MaxSessions = 1, lifetime);
        var provider = services.BuildServiceProvider();

        IChatClient inScope;
        KvChatClient shared;
        using (var scope = provider.CreateScope())
        {
            inScope = scope.ServiceProvider.GetRequiredService<IChatClient>();
            Assert.IsNotType<KvChatClient>(inScope);
            shared = inScope.GetService<KvChatClient>()!;
            Assert.NotNull(shared);
            await inScope.GetResponseAsync(Ask(), cancellationToken: TestContext.Current.CancellationToken);
        }

        using (var scope = provider.CreateScope())
        {
            var other = scope.ServiceProvider.GetRequiredService<IChatClient>();
            Assert.NotSame(inScope, other);
            Assert.Same(shared, other.GetService<KvChatClient>());

            // The first scope ended, yet its KV cache serves the next scope: same prompt, all but one token cached.
            var again = await other.GetResponseAsync(Ask(), cancellationToken: TestContext.Current.CancellationToken);
            Assert.Equal(again.Usage!.InputTokenCount - 1, again.Usage.CachedInputTokenCount);
        }

        await provider.DisposeAsync();
        Assert.Throws<ObjectDisposedException>(() => shared.GetStreamingResponseAsync(Ask()));
    }

    [Fact]
    public async Task AddKvChatClient_TakesTheContainersLoggerFactory()
    {
        var logs = new CapturingLoggerProvider();
        var services = new ServiceCollection();
        services.AddLogging(b => b.AddProvider(logs).SetMinimumLevel(LogLevel.Debug));
        services.AddKvChatClient(ScriptedPath);
        await using var provider = services.BuildServiceProvider();

        await provider.GetRequiredService<IChatClient>().GetResponseAsync(Ask(), cancellationToken: TestContext.Current.CancellationToken);

        Assert.Contains(logs.Entries, e => e.Category == typeof(KvChatClient).FullName && e.Message.Contains("prompt tokens", StringComparison.Ordinal));
    }

    [Fact]
    public async Task AddKvChatClient_LoggerFactoryInOptions_WinsOverTheContainers()
    {
        var fromContainer = new CapturingLoggerProvider();
        var fromOptions = new CapturingLoggerProvider();
        using var optionsFactory = LoggerFactory.Create(b => b.AddProvider(fromOptions).SetMinimumLevel(LogLevel.Debug));
        var services = new ServiceCollection();
        services.AddLogging(b => b.AddProvider(fromContainer).SetMinimumLevel(LogLevel.Debug));
        services.AddKvChatClient(ScriptedPath, o => o.LoggerFactory = optionsFactory);
        await using var provider = services.BuildServiceProvider();

        await provider.GetRequiredService<IChatClient>().GetResponseAsync(Ask(), cancellationToken: TestContext.Current.CancellationToken);

        Assert.Contains(fromOptions.Entries, e => e.Category == typeof(KvChatClient).FullName);
        Assert.DoesNotContain(fromContainer.Entries, e => e.Category == typeof(KvChatClient).FullName);
    }

    [Fact]
    public async Task AddKeyedKvChatClient_TwoKeys_TwoClientsWithTheirOwnOptions()
    {
        var services = new ServiceCollection();
        services.AddKeyedKvChatClient("small", ScriptedPath, o => o.ModelId = "small-model");
        services.AddKeyedKvChatClient("large", TestModels.PathOf(ModelKitOptions.Tiny), o => o.ModelId = "large-model");
        services.Configure<KvChatClientOptions>("small", o => o.MaxSessions = 1);
        await using var provider = services.BuildServiceProvider();

        var small = provider.GetRequiredKeyedService<IChatClient>("small");
        var large = provider.GetRequiredKeyedService<IChatClient>("large");
        Assert.NotSame(small, large);
        Assert.Same(small, provider.GetRequiredKeyedService<IChatClient>("small"));
        Assert.Null(provider.GetService<IChatClient>());
        Assert.Equal("small-model", small.GetService<ChatClientMetadata>()!.DefaultModelId);
        Assert.Equal("large-model", large.GetService<ChatClientMetadata>()!.DefaultModelId);
        Assert.NotSame(small.GetService<Model>(), large.GetService<Model>());

        var response = await small.GetResponseAsync(Ask(), cancellationToken: TestContext.Current.CancellationToken);
        Assert.Equal(Reply, response.Text);
        Assert.Equal("small-model", response.ModelId);

        // services.Configure with the key's name reached the keyed client's options: one session only.
        await small.GetResponseAsync(Ask("Another conversation altogether"), cancellationToken: TestContext.Current.CancellationToken);
        Assert.Equal(1, small.GetService<KvCacheStatistics>()!.Sessions);
    }

    [Fact]
    public async Task AddKeyedKvChatClient_ProviderDisposed_DisposesTheKeyedClient()
    {
        var services = new ServiceCollection();
        services.AddKeyedKvChatClient(42, ScriptedPath);
        var provider = services.BuildServiceProvider();
        var client = provider.GetRequiredKeyedService<IChatClient>(42);
        Assert.IsType<KvChatClient>(client);

        await provider.DisposeAsync();

        Assert.Throws<ObjectDisposedException>(() => client.GetStreamingResponseAsync(Ask()));
    }

    [Fact]
    public async Task Builder_UseFunctionInvocationAndUseLogging_BuildsAndRunsThePipeline()
    {
        var logs = new CapturingLoggerProvider();
        var services = new ServiceCollection();
        services.AddLogging(b => b.AddProvider(logs).SetMinimumLevel(LogLevel.Debug));
        services.AddKvChatClient(ScriptedPath)
            .UseFunctionInvocation()
            .UseLogging();
        await using var provider = services.BuildServiceProvider();

        var client = provider.GetRequiredService<IChatClient>();
        Assert.IsType<FunctionInvokingChatClient>(client);
        Assert.NotNull(client.GetService<LoggingChatClient>());
        Assert.NotNull(client.GetService<KvChatClient>());

        var invoked = false;
        var tool = AIFunctionFactory.Create((string city) => { invoked = true; return "sunny"; }, "get_weather", "Gets the weather of a city.");
        var options = new ChatOptions { Tools = [tool], ToolMode = ChatToolMode.Auto };
        var response = await client.GetResponseAsync(Ask("Weather in Paris?"), options, TestContext.Current.CancellationToken);
        var streamed = await client.GetStreamingResponseAsync(Ask("Weather in Paris?"), options, TestContext.Current.CancellationToken).ToChatResponseAsync(TestContext.Current.CancellationToken);

        Assert.Equal(Reply, response.Text);
        Assert.Equal(Reply, streamed.Text);
        Assert.False(invoked); // The scripted model answers in text: no call to make.
        Assert.Contains(logs.Entries, e => e.Category.Contains(nameof(LoggingChatClient), StringComparison.Ordinal) && e.Message.Contains("GetResponseAsync", StringComparison.Ordinal));
        Assert.Contains(logs.Entries, e => e.Category.Contains(nameof(LoggingChatClient), StringComparison.Ordinal) && e.Message.Contains("GetStreamingResponseAsync", StringComparison.Ordinal));
    }

    [Fact]
    public void Registration_ArgumentsAreValidatedWhenCalled()
    {
        var services = new ServiceCollection();
        Assert.Throws<ArgumentNullException>(() => ((IServiceCollection)null!).AddKvChatClient(ScriptedPath));
        Assert.Throws<ArgumentNullException>(() => services.AddKvChatClient((string)null!));
        Assert.Throws<ArgumentException>(() => services.AddKvChatClient(" "));
        Assert.Throws<ArgumentNullException>(() => services.AddKvChatClient((Microsoft.Extensions.Configuration.IConfiguration)null!));
        Assert.Throws<ArgumentNullException>(() => services.AddKeyedKvChatClient(null!, ScriptedPath));
        Assert.Throws<ArgumentException>(() => services.AddKeyedKvChatClient("k", ""));
        Assert.Empty(services);
    }
}
