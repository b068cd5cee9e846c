using System.Text.Json;
using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Xunit;

namespace KvChat.Tests;

/// <summary>ResponseFormat JSON: constrained by GenAI guidance on a temporary generator, validated before it is returned.</summary>
public sealed class StructuredOutputTests
{
    private static ChatResponseFormatJson Schema(string json) => ChatResponseFormat.ForJsonSchema(JsonDocument.Parse(json).RootElement, "answer");

    public static TheoryData<string, string, JsonValueKind> Shapes() => new()
    {
        { """{"type":"object","properties":{"name":{"type":"string","maxLength":6},"age":{"type":"integer","minimum":0,"maximum":120}},"required":["name","age"],"additionalProperties":false}""", "object", JsonValueKind.Object },
        { """{"type":"array","items":{"type":"integer","minimum":0,"maximum":9},"minItems":2,"maxItems":3}""", "array", JsonValueKind.Array },
        { """{"type":"integer","minimum":10,"maximum":99}""", "integer", JsonValueKind.Number },
        { """{"type":"string","maxLength":5}""", "string", JsonValueKind.String },
        { """{"type":"boolean"}""", "bool", JsonValueKind.True },
        { """{"type":"string","enum":["red","green","blue"]}""", "enum", JsonValueKind.String },
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public async Task RandomModel_EverySchemaShape_ReplyConformsToTheSchema(string schema, string shape, JsonValueKind kind)
    {
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny));
        var response = await client.GetResponseAsync(
            [new(ChatRole.User, $"Give me a {shape}.")],
            new ChatOptions { ResponseFormat = Schema(schema), MaxOutputTokens = 80 },
            TestContext.Current.CancellationToken);

        using var json = JsonDocument.Parse(response.Text);
        var root = json.RootElement;
        Assert.Equal(ChatFinishReason.Stop, response.FinishReason);
        switch (shape)
        {
            case "object":
                Assert.Equal(JsonValueKind.Object, root.ValueKind);
                Assert.InRange(root.GetProperty("name").GetString()!.Length, 0, 6);
                Assert.InRange(root.GetProperty("age").GetInt32(), 0, 120);
                break;
            case "array":
                Assert.InRange(root.GetArrayLength(), 2, 3);
                Assert.All(root.EnumerateArray(), e => Assert.InRange(e.GetInt32(), 0, 9));
                break;
            case "integer":
                Assert.InRange(root.GetInt32(), 10, 99);
                break;
            case "string":
                Assert.InRange(root.GetString()!.Length, 0, 5);
                break;
            case "bool":
                Assert.True(root.ValueKind is JsonValueKind.True or JsonValueKind.False);
                break;
            case "enum":
                Assert.Contains(root.GetString(), new[] { "red", "green", "blue" });
                break;
        }

        Assert.True(kind == root.ValueKind || shape == "bool");
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

    public sealed record Verdict(bool Answer);

    [Fact]
    public async Task ScriptedModel_AlreadyValidJson_PassesThroughUnchanged()
    {
        const string Reply = """{"city":"Paris","temperature":18}""";
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny with { Script = Reply }));
        var schema = """{"type":"object","properties":{"city":{"type":"string"},"temperature":{"type":"integer"}},"required":["city","temperature"]}""";
        var response = await client.GetResponseAsync([new(ChatRole.User, "Weather?")], new ChatOptions { ResponseFormat = Schema(schema) }, TestContext.Current.CancellationToken);
        Assert.Equal(Reply, response.Text);
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
    public async Task StructuredTurn_CostsOnePrefill_TheNextTurnStillUsesTheCache()
    {
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny), new KvChatClientOptions { MaxSessions = 1 });
        List<ChatMessage> history = [new(ChatRole.System, "A system prompt long enough to be worth caching between turns."), new(ChatRole.User, "Hello")];
        history.AddRange((await client.GetResponseAsync(history, new ChatOptions { MaxOutputTokens = 6 }, TestContext.Current.CancellationToken)).Messages);
        history.Add(new ChatMessage(ChatRole.User, "Now answer yes or no as JSON"));

        var structured = await client.GetResponseAsync(history, new ChatOptions { ResponseFormat = Schema("""{"type":"boolean"}""") }, TestContext.Current.CancellationToken);
        Assert.Equal(0, structured.Usage!.CachedInputTokenCount);
        Assert.Equal(structured.Usage.InputTokenCount, structured.Usage.AdditionalCounts![KvChatUsage.PrefilledInputTokenCount]);

        history.AddRange(structured.Messages);
        history.Add(new ChatMessage(ChatRole.User, "Thanks"));
        var next = await client.GetResponseAsync(history, new ChatOptions { MaxOutputTokens = 4 }, TestContext.Current.CancellationToken);
        Assert.True(next.Usage!.CachedInputTokenCount > 20, $"cached {next.Usage.CachedInputTokenCount}");
    }

    [Fact]
    public void JsonWithTools_OrWithPenalties_IsRejected()
    {
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny));
        var tool = AIFunctionFactory.Create(() => 1, "one");
        Assert.Throws<NotSupportedException>(() => client.GetStreamingResponseAsync([new(ChatRole.User, "x")], new ChatOptions { ResponseFormat = ChatResponseFormat.Json, Tools = [tool] }));
        Assert.Throws<NotSupportedException>(() => client.GetStreamingResponseAsync([new(ChatRole.User, "x")], new ChatOptions { ResponseFormat = ChatResponseFormat.Json, PresencePenalty = 1 }));
    }
}
