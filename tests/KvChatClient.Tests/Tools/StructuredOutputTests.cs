using System.Text.Json;
using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;
using Xunit;

namespace KvChat.Tests;

/// <summary>
/// ResponseFormat JSON through the client's own token constraint on the cached session, on real kit models: every reply
/// is checked by an independent validator (JsonSchema.Net), never by the code under test.
/// </summary>
public sealed class StructuredOutputTests
{
    private static ChatResponseFormatJson Schema(string json) => ChatResponseFormat.ForJsonSchema(JsonDocument.Parse(json).RootElement, "answer");

    public static TheoryData<string> Shapes() =>
    [
        """{"type":"object","properties":{"name":{"type":"string","maxLength":6},"age":{"type":"integer","minimum":0,"maximum":120}},"required":["name","age"],"additionalProperties":false}""",
        """{"type":"array","items":{"type":"integer","minimum":0,"maximum":9},"minItems":2,"maxItems":3}""",
        """{"type":"integer","minimum":10,"maximum":99}""",
        """{"type":"number","minimum":-2.5,"maximum":2.5}""",
        """{"type":"string","maxLength":5}""",
        """{"type":"boolean"}""",
        """{"type":"null"}""",
        """{"type":"string","enum":["red","green","blue"]}""",
        """{"const":"fixed"}""",
        """{"type":["string","null"],"maxLength":4}""",
        """{"type":"object","properties":{"inner":{"type":"object","properties":{"ok":{"type":"boolean"},"n":{"type":["integer","null"],"maximum":5}},"required":["ok","n"]}},"required":["inner"],"additionalProperties":false}""",
        """{"anyOf":[{"type":"object","properties":{"kind":{"const":"a"},"x":{"type":"boolean"}},"required":["kind","x"]},{"type":"array","items":{"type":"boolean"},"maxItems":2}]}""",
        """{"$defs":{"p":{"type":"object","properties":{"x":{"type":"integer","minimum":0,"maximum":9}},"required":["x"]}},"type":"array","items":{"$ref":"#/$defs/p"},"maxItems":2}""",
        """{"type":"object","properties":{"v":{"type":"integer","maximum":9,"minimum":0},"kids":{"type":["array","null"],"items":{"$ref":"#"},"maxItems":1}},"required":["v","kids"]}""",
        """{"type":"string","format":"date-time","maxLength":8}""",
    ];

    [Theory]
    [MemberData(nameof(Shapes))]
    public async Task RandomModel_EverySchemaShape_ValidatesIndependently(string schema)
    {
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny));
        foreach (var options in new[] { new ChatOptions(), new ChatOptions { Temperature = 1, Seed = 7 } })
        {
            options.ResponseFormat = Schema(schema);
            options.MaxOutputTokens = 200;
            var response = await client.GetResponseAsync([new(ChatRole.User, "Give me one.")], options, TestContext.Current.CancellationToken);

            Assert.Equal(ChatFinishReason.Stop, response.FinishReason);
            ConstraintTestKit.AssertValid(schema, response.Text);
            Assert.True(response.Usage!.OutputTokenCount > 0);
        }
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public async Task ScriptedModelSayingSomethingElse_EverySchemaShape_IsForcedIntoValidJson(string schema)
    {
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny with { Script = "Sure! {name: Bob, age: 200} [1,2,3,4] \"hello world\" true" }));
        var response = await client.GetResponseAsync(
            [new(ChatRole.User, "Give me one.")], new ChatOptions { ResponseFormat = Schema(schema), MaxOutputTokens = 200 }, TestContext.Current.CancellationToken);

        Assert.Equal(ChatFinishReason.Stop, response.FinishReason);
        ConstraintTestKit.AssertValid(schema, response.Text);
    }

    [Fact]
    public async Task GetResponseAsyncOfT_DeserializesTheConstrainedReply()
    {
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny));
        var response = await client.GetResponseAsync<Verdict>(
            [new(ChatRole.User, "Is the sky blue?")],
            new ChatOptions { MaxOutputTokens = 120 },
            useJsonSchemaResponseFormat: true,
            cancellationToken: TestContext.Current.CancellationToken);

        Assert.True(response.TryGetResult(out var verdict), response.Text);
        Assert.NotNull(verdict);
    }

    public sealed record Verdict(bool Answer, Mood Mood);

    public enum Mood
    {
        Calm,
        Stormy,
    }

    /// <summary>The oracle: when the greedy reply is already valid, the constraint changes nothing, token for token.</summary>
    [Theory]
    [InlineData("""{"city":"Paris","temperature":18}""", """{"type":"object","properties":{"city":{"type":"string"},"temperature":{"type":"integer"}},"required":["city","temperature"]}""")]
    [InlineData("""[{"ok":true,"n":-1.25},{"ok":false,"n":null}]""", """{"type":"array","items":{"type":"object","properties":{"ok":{"type":"boolean"},"n":{"type":["number","null"]}},"required":["ok","n"],"additionalProperties":false}}""")]
    public async Task ScriptedModel_AlreadyValidJson_ConstrainedReplyEqualsTheUnconstrainedOne(string reply, string schema)
    {
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny with { Script = reply }));
        var traces = new List<ReplyTrace>();
        client.Trace = traces.Add;
        var free = await client.GetResponseAsync([new(ChatRole.User, "Weather?")], null, TestContext.Current.CancellationToken);
        var constrained = await client.GetResponseAsync([new(ChatRole.User, "Weather?")], new ChatOptions { ResponseFormat = Schema(schema) }, TestContext.Current.CancellationToken);

        Assert.Equal(reply, free.Text);
        Assert.Equal(free.Text, constrained.Text);
        Assert.Equal(traces[0].Generated, traces[1].Generated);
        ConstraintTestKit.AssertValid(schema, constrained.Text);
    }

    [Fact]
    public async Task Utf8AndEscapesInsideStrings_OneTokenPerByte_RoundTrip()
    {
        // The scripted tokenizer has one token per byte: every non-ASCII character is split across tokens.
        const string Reply = """{"text":"Zürich 日本 👨‍👩‍👧 \"q\" \\ \n\u00e9 \/"}""";
        const string SchemaText = """{"type":"object","properties":{"text":{"type":"string"}},"required":["text"],"additionalProperties":false}""";
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny with { Script = Reply }));
        var response = await client.GetResponseAsync([new(ChatRole.User, "Say it.")], new ChatOptions { ResponseFormat = Schema(SchemaText) }, TestContext.Current.CancellationToken);

        Assert.Equal(Reply, response.Text);
        using var json = JsonDocument.Parse(response.Text);
        Assert.Equal("Zürich 日本 👨‍👩‍👧 \"q\" \\ \né /", json.RootElement.GetProperty("text").GetString());
    }

    [Fact]
    public async Task ReplyCutBeforeItsJsonEnds_IsAClearError_NotAHalfObject()
    {
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny));
        var schema = """{"type":"array","items":{"type":"string"},"minItems":20}""";
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => client.GetResponseAsync(
            [new(ChatRole.User, "List")], new ChatOptions { ResponseFormat = Schema(schema), MaxOutputTokens = 5 }, TestContext.Current.CancellationToken));
        Assert.Contains("MaxOutputTokens", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task StructuredTurn_IsServedFromTheCache_AndLeavesPromptAndReplyInTheSession()
    {
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny), new KvChatClientOptions { MaxSessions = 1 });
        var traces = new List<ReplyTrace>();
        client.Trace = traces.Add;
        List<ChatMessage> history = [new(ChatRole.System, "A system prompt long enough to be worth caching between turns."), new(ChatRole.User, "Hello")];
        history.AddRange((await client.GetResponseAsync(history, new ChatOptions { MaxOutputTokens = 6 }, TestContext.Current.CancellationToken)).Messages);
        history.Add(new ChatMessage(ChatRole.User, "Now answer yes or no as JSON"));

        var structured = await client.GetResponseAsync(history, new ChatOptions { ResponseFormat = Schema("""{"type":"boolean"}""") }, TestContext.Current.CancellationToken);
        Assert.Equal(traces[0].SessionTokens.Length, structured.Usage!.CachedInputTokenCount);
        Assert.True(structured.Usage.CachedInputTokenCount > 20);
        Assert.Equal(structured.Usage.InputTokenCount - structured.Usage.CachedInputTokenCount, structured.Usage.AdditionalCounts![KvChatUsage.PrefilledInputTokenCount]);
        Assert.Equal([.. traces[1].Prompt, .. traces[1].Generated[..^1]], traces[1].SessionTokens); // The last token is pending.

        history.AddRange(structured.Messages);
        history.Add(new ChatMessage(ChatRole.User, "Thanks"));
        var next = await client.GetResponseAsync(history, new ChatOptions { MaxOutputTokens = 4 }, TestContext.Current.CancellationToken);
        Assert.Equal(traces[1].SessionTokens.Length, next.Usage!.CachedInputTokenCount);
    }

    [Fact]
    public async Task SchemaOutsideTheSubset_FallsBackToGenAiGuidance_AndSaysSo()
    {
        var logs = new CapturingLoggerProvider();
        using var factory = LoggerFactory.Create(b => b.AddProvider(logs).SetMinimumLevel(LogLevel.Information));
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny), new KvChatClientOptions { LoggerFactory = factory });
        var response = await client.GetResponseAsync(
            [new(ChatRole.User, "Digits")], new ChatOptions { ResponseFormat = Schema("""{"type":"string","pattern":"^[0-9]{3}$"}"""), MaxOutputTokens = 20 }, TestContext.Current.CancellationToken);

        Assert.Matches("^\"[0-9]{3}\"$", response.Text);
        Assert.Equal(0, response.Usage!.CachedInputTokenCount);
        Assert.Contains(logs.Entries.Select(e => e.Message), m => m.Contains("falls back to GenAI guidance", StringComparison.Ordinal) && m.Contains("'pattern'", StringComparison.Ordinal));

        // With tools there is no fallback: the keyword is named.
        var tool = AIFunctionFactory.Create(() => 1, "one");
        var error = Assert.Throws<NotSupportedException>(() => client.GetStreamingResponseAsync(
            [new(ChatRole.User, "x")], new ChatOptions { ResponseFormat = Schema("""{"type":"string","pattern":"^a"}"""), Tools = [tool] }));
        Assert.Contains("'pattern'", error.Message, StringComparison.Ordinal);

        // Penalties work on the constrained path (the client's own sampler); only the fallback rejects them.
        var penalised = await client.GetResponseAsync([new(ChatRole.User, "x")], new ChatOptions { ResponseFormat = Schema("""{"type":"boolean"}"""), PresencePenalty = 1 }, TestContext.Current.CancellationToken);
        ConstraintTestKit.AssertValid("""{"type":"boolean"}""", penalised.Text);
        Assert.Throws<NotSupportedException>(() => client.GetStreamingResponseAsync(
            [new(ChatRole.User, "x")], new ChatOptions { ResponseFormat = Schema("""{"type":"string","pattern":"^a"}"""), PresencePenalty = 1 }));
    }
}
