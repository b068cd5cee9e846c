using System.Text.Json;
using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.SemanticKernel;
using Microsoft.SemanticKernel.ChatCompletion;
using Xunit;
using FunctionCallContent = Microsoft.Extensions.AI.FunctionCallContent;
using FunctionResultContent = Microsoft.Extensions.AI.FunctionResultContent;

namespace KvChat.Tests;

/// <summary>Tool calling through the client: agent loops keep the cache, tool modes are enforced.</summary>
public sealed class AgentLoopTests
{
    private static string Call(string name, string argument, string value)
        => $"<tool_call>\n{{\"name\": \"{name}\", \"arguments\": {{\"{argument}\": \"{value}\"}}}}\n</tool_call>";

    /// <summary>A model that, with tools, calls three tools in turn and then answers (the tools block renders a system message).</summary>
    private static string AgentModel => AgentModelCalling(string.Empty);

    /// <param name="prefix">What the caller's framework puts before a function's name (Semantic Kernel: the plugin).</param>
    private static string AgentModelCalling(string prefix) => TestModels.PathOf(ModelKitOptions.Tiny with
    {
        Script = "Paris is 18C and Rome 21C; it is noon.",
        ScriptByMessageCount = new Dictionary<int, string>
        {
            [2] = Call(prefix + "get_weather", "city", "Paris"),
            [4] = Call(prefix + "get_weather", "city", "Rome"),
            [6] = Call(prefix + "get_time", "zone", "Europe/Rome"),
        },
    });

    [Fact]
    public async Task ThreeStepLoop_UnderUseFunctionInvocation_EachStepPrefillsOnlyTheToolResult()
    {
        using var client = new KvChatClient(AgentModel, new KvChatClientOptions { MaxSessions = 1 });
        var traces = new List<ReplyTrace>();
        client.Trace = traces.Add;
        var invoked = new List<string>();
        var weather = AIFunctionFactory.Create((string city) => { invoked.Add(city); return city == "Paris" ? "18C" : "21C"; }, "get_weather", "Weather in a city.");
        var time = AIFunctionFactory.Create((string zone) => { invoked.Add(zone); return "12:00"; }, "get_time", "Time in a zone.");
        using var agent = new ChatClientBuilder(client).UseFunctionInvocation().Build();

        var response = await agent.GetResponseAsync(
            [new(ChatRole.System, "You are a travel agent."), new(ChatRole.User, "Weather in Paris and Rome, and the time in Rome?")],
            new ChatOptions { Tools = [weather, time] },
            TestContext.Current.CancellationToken);

        Assert.Equal("Paris is 18C and Rome 21C; it is noon.", response.Text);
        Assert.Equal(["Paris", "Rome", "Europe/Rome"], invoked);
        Assert.Equal(4, traces.Count);
        Assert.Equal([ChatFinishReason.ToolCalls, ChatFinishReason.ToolCalls, ChatFinishReason.ToolCalls, ChatFinishReason.Stop], traces.Select(t => t.Finish));
        for (var step = 1; step < traces.Count; step++)
        {
            // The whole previous step (prompt, the call it generated) is served from the cache; only the call's
            // end-of-turn marker, the tool result and the generation prompt are prefilled.
            Assert.Equal(traces[step - 1].SessionTokens.Length, traces[step].Cached);
            var prefilled = traces[step].Prompt.Length - traces[step].Cached;
            Assert.InRange(prefilled, 10, 40);
            TestContext.Current.TestOutputHelper!.WriteLine($"step {step + 1}: prompt {traces[step].Prompt.Length}, cached {traces[step].Cached}, prefilled {prefilled}");
        }
    }

    [Fact]
    public async Task ReadmeToolsBlock_RunsAnAgentLoop()
    {
        var modelPath = AgentModel;
        List<ChatMessage> history = [new(ChatRole.System, "You are a travel agent."), new(ChatRole.User, "Weather?")];

        // README tools: begin
        var weather = AIFunctionFactory.Create((string city) => $"18C in {city}", "get_weather", "Weather in a city.");
        using IChatClient agent = new ChatClientBuilder(new KvChatClient(modelPath)).UseFunctionInvocation().Build();
        var answer = await agent.GetResponseAsync(history, new ChatOptions { Tools = [weather] });
        // README tools: end

        Assert.Contains(answer.Messages, m => m.Contents.OfType<FunctionResultContent>().Any(r => Equals(r.Result?.ToString(), "18C in Paris")));
    }

    [Fact]
    public async Task ThreeStepLoop_ThroughASemanticKernelPlugin_CallsTheFunctionsAndKeepsTheCache()
    {
        // Semantic Kernel offers plugin functions to the model as "plugin_function".
        var builder = Kernel.CreateBuilder().AddKvChatClient(AgentModelCalling("travel_"), o => o.MaxSessions = 1);
        builder.Plugins.AddFromType<TravelPlugin>("travel");
        var kernel = builder.Build();
        await using var services = (ServiceProvider)kernel.Services;
        var completion = kernel.GetRequiredService<IChatCompletionService>();
        var history = new ChatHistory("You are a travel agent.");
        history.AddUserMessage("Weather in Paris and Rome, and the time in Rome?");
        TravelPlugin.Calls.Clear();

        var reply = await completion.GetChatMessageContentAsync(
            history,
            new PromptExecutionSettings { FunctionChoiceBehavior = FunctionChoiceBehavior.Auto() },
            kernel,
            TestContext.Current.CancellationToken);

        Assert.Equal("Paris is 18C and Rome 21C; it is noon.", reply.Content);
        Assert.Equal(["Paris", "Rome", "Europe/Rome"], TravelPlugin.Calls);
        var stats = kernel.GetRequiredService<IChatClient>().GetService<KvChatClient>()!.GetService<KvCacheStatistics>()!;
        Assert.Equal(4, stats.Requests);
        Assert.True(stats.CachedInputTokens > stats.PrefilledInputTokens, $"cached {stats.CachedInputTokens}, prefilled {stats.PrefilledInputTokens}");
    }

    /// <summary>A plugin whose functions the scripted model calls as travel_get_weather and travel_get_time.</summary>
    public sealed class TravelPlugin
    {
        public static List<string> Calls { get; } = [];

        [KernelFunction("get_weather")]
        public static string GetWeather(string city)
        {
            Calls.Add(city);
            return city == "Paris" ? "18C" : "21C";
        }

        [KernelFunction("get_time")]
        public static string GetTime(string zone)
        {
            Calls.Add(zone);
            return "12:00";
        }
    }

    [Fact]
    public async Task ToolModeNone_LeavesToolsOutOfThePrompt()
    {
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny with { Script = "Plain." }));
        var tool = AIFunctionFactory.Create(() => "x", "lookup");
        List<ChatMessage> ask = [new(ChatRole.User, "Hi")];
        var none = await client.GetResponseAsync(ask, new ChatOptions { Tools = [tool], ToolMode = ChatToolMode.None }, TestContext.Current.CancellationToken);
        var without = await client.GetResponseAsync(ask, new ChatOptions(), TestContext.Current.CancellationToken);
        var auto = await client.GetResponseAsync(ask, new ChatOptions { Tools = [tool] }, TestContext.Current.CancellationToken);

        Assert.Equal(without.Usage!.InputTokenCount, none.Usage!.InputTokenCount);
        Assert.True(auto.Usage!.InputTokenCount > without.Usage.InputTokenCount + 50);
        Assert.Equal("Plain.", auto.Text);
        Assert.Equal(ChatFinishReason.Stop, auto.FinishReason);
        Assert.Empty(auto.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>());
    }

    [Theory]
    [MemberData(nameof(TestBackends.Both), MemberType = typeof(TestBackends))]
    public async Task RequireAny_OnAModelThatWouldAnswerInText_ForcesACall(KvSessionBackend backend)
    {
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny with { Script = "I would rather just talk." }), new KvChatClientOptions { SessionBackend = backend });
        var tool = AIFunctionFactory.Create((string q) => q, "lookup");
        var response = await client.GetResponseAsync([new(ChatRole.User, "Hi")], new ChatOptions { Tools = [tool], ToolMode = ChatToolMode.RequireAny, MaxOutputTokens = 60 }, TestContext.Current.CancellationToken);

        var call = Assert.Single(response.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>());
        Assert.DoesNotContain("<tool_call>", response.Text, StringComparison.Ordinal);
        Assert.NotNull(call.Exception); // Cut by MaxOutputTokens inside its (constrained, never-ending) string argument: reported, not dropped.
    }

    [Theory]
    [MemberData(nameof(TestBackends.Both), MemberType = typeof(TestBackends))]
    public async Task RequireSpecific_ForcesTheNamedTool_AndRejectsAnUnknownName(KvSessionBackend backend)
    {
        var path = TestModels.PathOf(ModelKitOptions.Tiny with { Script = Call("get_time", "zone", "UTC") });
        using var client = new KvChatClient(path, new KvChatClientOptions { SessionBackend = backend });
        var weather = AIFunctionFactory.Create((string city) => city, "get_weather");
        var time = AIFunctionFactory.Create((string zone) => zone, "get_time");
        var response = await client.GetResponseAsync([new(ChatRole.User, "Time?")], new ChatOptions { Tools = [weather, time], ToolMode = ChatToolMode.RequireSpecific("get_time") }, TestContext.Current.CancellationToken);

        var call = Assert.Single(response.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>());
        Assert.Null(call.Exception);
        Assert.Equal("get_time", call.Name);
        Assert.Equal("UTC", ((JsonElement)call.Arguments!["zone"]!).GetString());
        Assert.Equal(ChatFinishReason.ToolCalls, response.FinishReason);

        Assert.Throws<ArgumentException>(() => client.GetStreamingResponseAsync([new(ChatRole.User, "x")], new ChatOptions { Tools = [weather], ToolMode = ChatToolMode.RequireSpecific("nope") }));
        Assert.Throws<ArgumentException>(() => client.GetStreamingResponseAsync([new(ChatRole.User, "x")], new ChatOptions { ToolMode = ChatToolMode.RequireAny }));
    }

    [Fact]
    public async Task AllowMultipleToolCallsFalse_StopsAfterTheFirstCall()
    {
        var path = TestModels.PathOf(ModelKitOptions.Tiny with { Script = Call("get_weather", "city", "Paris") + "\n" + Call("get_weather", "city", "Rome") });
        using var client = new KvChatClient(path);
        var weather = AIFunctionFactory.Create((string city) => city, "get_weather");

        var single = await client.GetResponseAsync([new(ChatRole.User, "Go")], new ChatOptions { Tools = [weather], AllowMultipleToolCalls = false }, TestContext.Current.CancellationToken);
        var both = await client.GetResponseAsync([new(ChatRole.User, "Go")], new ChatOptions { Tools = [weather] }, TestContext.Current.CancellationToken);

        Assert.Single(single.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>());
        Assert.Equal(ChatFinishReason.ToolCalls, single.FinishReason);
        Assert.Equal(2, both.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>().Count());
    }
}
