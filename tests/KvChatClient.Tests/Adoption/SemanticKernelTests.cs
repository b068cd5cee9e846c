using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.SemanticKernel;
using Microsoft.SemanticKernel.ChatCompletion;
using Microsoft.SemanticKernel.Services;
using Xunit;

namespace KvChat.Tests;

public sealed class SemanticKernelTests
{
    private const string Reply = "Kernel reply.";

    private static string ScriptedPath => TestModels.PathOf(ModelKitOptions.Tiny with { Script = Reply });

    [Fact]
    public async Task AddKvChatClient_RegistersChatClientAndChatCompletionServiceOverOneClient()
    {
        var kernel = Kernel.CreateBuilder().AddKvChatClient(ScriptedPath, o => o.ModelId = "sk-model").Build();
        await using var services = (ServiceProvider)kernel.Services;

        var chatClient = kernel.GetRequiredService<IChatClient>();
        var completion = kernel.GetRequiredService<IChatCompletionService>();
        Assert.Equal("KernelFunctionInvokingChatClient", chatClient.GetService<FunctionInvokingChatClient>()!.GetType().Name);
        Assert.Equal("sk-model", completion.GetModelId());
        var kv = chatClient.GetService<KvChatClient>()!;
        Assert.NotNull(kv);

        var reply = await completion.GetChatMessageContentAsync("Hello", cancellationToken: TestContext.Current.CancellationToken);
        Assert.Equal(Reply, reply.Content);
        Assert.Equal(1, kv.GetService<KvCacheStatistics>()!.Requests); // The completion service runs on the same client.
    }

    [Fact]
    public async Task AddKvChatClient_WithServiceId_RegistersKeyedServices()
    {
        var kernel = Kernel.CreateBuilder().AddKvChatClient(ScriptedPath, serviceId: "local").Build();
        await using var services = (ServiceProvider)kernel.Services;

        Assert.NotNull(kernel.GetRequiredService<IChatCompletionService>("local"));
        Assert.NotNull(kernel.Services.GetRequiredKeyedService<IChatClient>("local"));
        Assert.Null(kernel.Services.GetService<IChatClient>());
        var reply = await kernel.GetRequiredService<IChatCompletionService>("local").GetChatMessageContentAsync("Hi", cancellationToken: TestContext.Current.CancellationToken);
        Assert.Equal(Reply, reply.Content);
    }

    [Fact]
    public async Task ChatHistoryConversation_SecondTurnUsageShowsCachedInputTokens()
    {
        var kernel = Kernel.CreateBuilder().AddKvChatClient(ScriptedPath, o => o.MaxSessions = 1).Build();
        await using var services = (ServiceProvider)kernel.Services;
        var completion = kernel.GetRequiredService<IChatCompletionService>();

        var history = new ChatHistory("You are a helpful assistant inside a test.");
        history.AddUserMessage("What is a KV cache?");
        var first = await completion.GetChatMessageContentAsync(history, cancellationToken: TestContext.Current.CancellationToken);
        history.Add(first);
        history.AddUserMessage("And why keep it across turns?");
        var second = await completion.GetChatMessageContentAsync(history, cancellationToken: TestContext.Current.CancellationToken);

        Assert.Equal(Reply, first.Content);
        Assert.Equal(Reply, second.Content);

        // Semantic Kernel puts Microsoft.Extensions.AI's usage in the message metadata under "Usage".
        var firstUsage = Assert.IsType<UsageDetails>(first.Metadata!["Usage"]);
        var secondUsage = Assert.IsType<UsageDetails>(second.Metadata!["Usage"]);
        Assert.Equal(0, firstUsage.CachedInputTokenCount);
        Assert.True(secondUsage.CachedInputTokenCount >= firstUsage.InputTokenCount,
            $"turn 2 cached {secondUsage.CachedInputTokenCount} of {secondUsage.InputTokenCount}; turn 1 prompt was {firstUsage.InputTokenCount}");
        Assert.Equal(secondUsage.InputTokenCount - secondUsage.CachedInputTokenCount, secondUsage.AdditionalCounts![KvChatUsage.PrefilledInputTokenCount]);
    }

    [Fact]
    public async Task ServiceCollection_AddKvChatCompletion_ResolvesInAnApplicationContainer()
    {
        var services = new ServiceCollection();
        services.AddKvChatCompletion(ScriptedPath);
        var provider = services.BuildServiceProvider();
        var completion = provider.GetRequiredService<IChatCompletionService>();
        var reply = await completion.GetChatMessageContentAsync("Hi", cancellationToken: TestContext.Current.CancellationToken);
        Assert.Equal(Reply, reply.Content);

        var client = provider.GetRequiredService<IChatClient>();
        await provider.DisposeAsync();
        Assert.Throws<ObjectDisposedException>(() => client.GetService<KvChatClient>()!.GetStreamingResponseAsync([new(ChatRole.User, "Hi")]));
    }

    [Fact]
    public void Registration_ArgumentsAreValidatedWhenCalled()
    {
        Assert.Throws<ArgumentNullException>(() => ((IKernelBuilder)null!).AddKvChatClient(ScriptedPath));
        Assert.Throws<ArgumentNullException>(() => Kernel.CreateBuilder().AddKvChatClient(null!));
        Assert.Throws<ArgumentException>(() => Kernel.CreateBuilder().AddKvChatClient(""));
        Assert.Throws<ArgumentNullException>(() => new ServiceCollection().AddKvChatCompletion(null!));
    }
}
