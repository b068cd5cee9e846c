using System.Text.Json;
using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Xunit;

namespace KvChat.Tests;

/// <summary>
/// JSON together with tools (a call or the typed answer), and required calls whose name and arguments follow the
/// offered tools' schemas: on kit models through the real runtime, on both session backends, arguments checked by
/// JsonSchema.Net.
/// </summary>
public sealed class ConstrainedToolCallTests
{
    private const string WeatherSchema = """{"type":"object","properties":{"city":{"type":"string","maxLength":10},"days":{"type":"integer","minimum":1,"maximum":7}},"required":["city","days"]}""";

    private static readonly AIFunctionDeclaration Weather = AIFunctionFactory.CreateDeclaration("get_weather", "Weather in a city.", JsonDocument.Parse(WeatherSchema).RootElement);

    private static string Call(string name, string arguments)
        => $"<tool_call>\n{{\"name\": \"{name}\", \"arguments\": {arguments}}}\n</tool_call>";

    public sealed record Forecast(string City, int Degrees);

    [Theory]
    [MemberData(nameof(TestBackends.Both), MemberType = typeof(TestBackends))]
    public async Task GetResponseAsyncOfT_UnderUseFunctionInvocation_ACallThenTheTypedAnswer(KvSessionBackend backend)
    {
        // Message 2 (system + user): the model calls the tool; message 4 (+ call + result): it answers as JSON.
        var path = TestModels.PathOf(ModelKitOptions.Tiny with
        {
            Script = "no script for this count",
            ScriptByMessageCount = new Dictionary<int, string>
            {
                [2] = Call("get_forecast", """{"city": "Paris"}"""),
                [4] = """{"city":"Paris","degrees":18}""",
            },
        });
        using var client = new KvChatClient(path, new KvChatClientOptions { MaxSessions = 1, SessionBackend = backend });
        var traces = new List<ReplyTrace>();
        client.Trace = traces.Add;
        var invoked = new List<string>();
        var tool = AIFunctionFactory.Create((string city) => { invoked.Add(city); return "18C"; }, "get_forecast", "Forecast for a city.");
        using var agent = new ChatClientBuilder(client).UseFunctionInvocation().Build();

        var response = await agent.GetResponseAsync<Forecast>(
            [new(ChatRole.System, "You forecast."), new(ChatRole.User, "Paris?")],
            new ChatOptions { Tools = [tool], MaxOutputTokens = 100 },
            cancellationToken: TestContext.Current.CancellationToken);

        Assert.Equal(["Paris"], invoked);
        Assert.True(response.TryGetResult(out var forecast), response.Text);
        Assert.Equal(new Forecast("Paris", 18), forecast);
        Assert.Equal(2, traces.Count);
        Assert.Equal(ChatFinishReason.ToolCalls, traces[0].Finish);
        Assert.Equal(traces[0].SessionTokens.Length, traces[1].Cached); // The typed answer is served from the cache.
    }

    [Theory]
    [MemberData(nameof(TestBackends.Both), MemberType = typeof(TestBackends))]
    public async Task JsonAndTools_AModelThatAnswersDirectly_GivesTheTypedAnswerWithoutACall(KvSessionBackend backend)
    {
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny with { Script = """{"city":"Rome","degrees":21}""" }), new KvChatClientOptions { SessionBackend = backend });
        var tool = AIFunctionFactory.Create((string city) => "never", "get_forecast");
        using var agent = new ChatClientBuilder(client).UseFunctionInvocation().Build();
        var response = await agent.GetResponseAsync<Forecast>([new(ChatRole.User, "Rome?")], new ChatOptions { Tools = [tool] }, cancellationToken: TestContext.Current.CancellationToken);

        Assert.True(response.TryGetResult(out var forecast), response.Text);
        Assert.Equal(new Forecast("Rome", 21), forecast);
        Assert.Empty(response.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>());
    }

    public static TheoryData<ChatTemplateFamily, KvSessionBackend> Families()
        => TestBackends.OnBoth([ChatTemplateFamily.ChatML, ChatTemplateFamily.Phi, ChatTemplateFamily.Llama3]);

    [Theory]
    [MemberData(nameof(Families))]
    public async Task JsonAndTools_RandomModel_EitherAValidCallOrValidJson(ChatTemplateFamily family, KvSessionBackend backend)
    {
        const string Answer = """{"type":"object","properties":{"ok":{"type":"boolean"}},"required":["ok"],"additionalProperties":false}""";
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny with { TemplateFamily = family }), new KvChatClientOptions { SessionBackend = backend });
        for (var seed = 1; seed <= 4; seed++)
        {
            var response = await client.GetResponseAsync(
                [new(ChatRole.User, "Weather?")],
                new ChatOptions { Tools = [Weather], ResponseFormat = ChatResponseFormat.ForJsonSchema(JsonDocument.Parse(Answer).RootElement), MaxOutputTokens = 150, Temperature = 1, Seed = seed, AllowMultipleToolCalls = false },
                TestContext.Current.CancellationToken);

            var calls = response.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>().ToList();
            if (calls.Count > 0)
            {
                var call = Assert.Single(calls);
                Assert.Null(call.Exception);
                Assert.Equal("get_weather", call.Name);
                ConstraintTestKit.AssertValid(WeatherSchema, JsonSerializer.Serialize(call.Arguments));
                Assert.Equal(ChatFinishReason.ToolCalls, response.FinishReason);
            }
            else
            {
                ConstraintTestKit.AssertValid(Answer, response.Text);
                Assert.Equal(ChatFinishReason.Stop, response.FinishReason);
            }
        }
    }

    public static TheoryData<ChatTemplateFamily, string?, KvSessionBackend> RequiredCalls() => TestBackends.OnBoth<ChatTemplateFamily, string?>(
    [
        (ChatTemplateFamily.ChatML, null),
        (ChatTemplateFamily.ChatML, "get_weather"),
        (ChatTemplateFamily.Phi, null),
        (ChatTemplateFamily.Llama3, "get_weather"),
    ]);

    [Theory]
    [MemberData(nameof(RequiredCalls))]
    public async Task RequiredCall_OnAModelThatWouldTalk_NameOfferedAndArgumentsValidate(ChatTemplateFamily family, string? required, KvSessionBackend backend)
    {
        using var client = new KvChatClient(
            TestModels.PathOf(ModelKitOptions.Tiny with { TemplateFamily = family, Script = "I would rather just talk." }),
            new KvChatClientOptions { SessionBackend = backend });
        var other = AIFunctionFactory.CreateDeclaration("get_time", "Time.", JsonDocument.Parse("""{"type":"object","properties":{"zone":{"enum":["UTC","CET"]}},"required":["zone"]}""").RootElement);
        var response = await client.GetResponseAsync(
            [new(ChatRole.User, "Hi")],
            new ChatOptions { Tools = [Weather, other], ToolMode = required is null ? ChatToolMode.RequireAny : ChatToolMode.RequireSpecific(required), MaxOutputTokens = 120, AllowMultipleToolCalls = false },
            TestContext.Current.CancellationToken);

        var call = Assert.Single(response.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>());
        Assert.Null(call.Exception);
        Assert.Contains(call.Name, new[] { "get_weather", "get_time" });
        if (required is not null)
        {
            Assert.Equal(required, call.Name);
        }

        var arguments = JsonSerializer.Serialize(call.Arguments);
        ConstraintTestKit.AssertValid(call.Name == "get_weather" ? WeatherSchema : """{"type":"object","properties":{"zone":{"enum":["UTC","CET"]}},"required":["zone"]}""", arguments);
        Assert.Equal(ChatFinishReason.ToolCalls, response.FinishReason);
    }

    [Theory]
    [MemberData(nameof(TestBackends.Both), MemberType = typeof(TestBackends))]
    public async Task RequiredCall_ScriptedWithMalformedArguments_IsForcedIntoValidOnes(KvSessionBackend backend)
    {
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny with { Script = Call("get_weather", """{"city": Paris, "days": 99}""") }), new KvChatClientOptions { SessionBackend = backend });
        var response = await client.GetResponseAsync(
            [new(ChatRole.User, "Weather?")], new ChatOptions { Tools = [Weather], ToolMode = ChatToolMode.RequireAny, MaxOutputTokens = 120 }, TestContext.Current.CancellationToken);

        var call = Assert.Single(response.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>());
        Assert.Null(call.Exception);
        ConstraintTestKit.AssertValid(WeatherSchema, JsonSerializer.Serialize(call.Arguments));
    }

    [Theory]
    [MemberData(nameof(TestBackends.Both), MemberType = typeof(TestBackends))]
    public async Task AutoMode_WithoutJson_LeavesCallsFree(KvSessionBackend backend)
    {
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny with { Script = Call("get_weather", """{"city": "Paris", "days": 99}""") }), new KvChatClientOptions { SessionBackend = backend });
        var response = await client.GetResponseAsync([new(ChatRole.User, "Weather?")], new ChatOptions { Tools = [Weather] }, TestContext.Current.CancellationToken);

        var call = Assert.Single(response.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>());
        Assert.Equal(99, ((JsonElement)call.Arguments!["days"]!).GetInt32()); // Out of the schema's range: not constrained.
    }

    [Theory]
    [MemberData(nameof(TestBackends.Both), MemberType = typeof(TestBackends))]
    public async Task AutoMode_WithConstrainToolArguments_TextStaysAndTheCallIsForcedValid(KvSessionBackend backend)
    {
        var script = "Let me check.\n" + Call("get_weather", """{"city": Paris, "days": 99}""");
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny with { Script = script }), new KvChatClientOptions { ConstrainToolArguments = true, SessionBackend = backend });
        var response = await client.GetResponseAsync(
            [new(ChatRole.User, "Weather?")], new ChatOptions { Tools = [Weather], MaxOutputTokens = 150, AllowMultipleToolCalls = false }, TestContext.Current.CancellationToken);

        Assert.Equal("Let me check.", response.Text.Trim());
        var call = Assert.Single(response.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>());
        Assert.Null(call.Exception);
        ConstraintTestKit.AssertValid(WeatherSchema, JsonSerializer.Serialize(call.Arguments));
    }
}
