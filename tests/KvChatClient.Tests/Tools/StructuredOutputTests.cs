using System.ComponentModel;
using System.Text.Json;
using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;
using Microsoft.ML.OnnxRuntimeGenAI;
using Xunit;

namespace KvChat.Tests;

/// <summary>
/// ResponseFormat JSON through the client's own token constraint on the cached session, on real kit models and on both
/// session backends: every reply is checked by an independent validator (JsonSchema.Net), never by the code under test.
/// </summary>
public sealed class StructuredOutputTests
{
    private static ChatResponseFormatJson Schema(string json) => ChatResponseFormat.ForJsonSchema(JsonDocument.Parse(json).RootElement, "answer");

    private static readonly string TinyPath = TestModels.PathOf(ModelKitOptions.Tiny);

    private static readonly string[] ShapeSchemas =
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

    public static TheoryData<string, KvSessionBackend> Shapes() => TestBackends.OnBoth(ShapeSchemas);

    public static TheoryData<string> ShapesOnce() => [.. ShapeSchemas];

    [Theory]
    [MemberData(nameof(Shapes))]
    public async Task RandomModel_EverySchemaShape_ValidatesIndependently_OnTheCachedSession(string schema, KvSessionBackend backend)
    {
        using var client = new KvChatClient(TinyPath, new KvChatClientOptions { SessionBackend = backend });
        TestBackends.AssertBackend(client, ModelVariant.GroupQueryAttention, backend);
        var traces = new List<ReplyTrace>();
        client.Trace = traces.Add;
        foreach (var options in new[] { new ChatOptions(), new ChatOptions { Temperature = 1, Seed = 7 } })
        {
            options.ResponseFormat = Schema(schema);
            options.MaxOutputTokens = 200;
            var response = await client.GetResponseAsync([new(ChatRole.User, "Give me one.")], options, TestContext.Current.CancellationToken);

            Assert.Equal(ChatFinishReason.Stop, response.FinishReason);
            ConstraintTestKit.AssertValid(schema, response.Text);
            Assert.True(response.Usage!.OutputTokenCount > 0);
        }

        // Both replies ran on a cached session (the guidance fallback leaves no trace and caches nothing): the second
        // one reused the whole prompt but the token its logits start from.
        Assert.Equal(2, traces.Count);
        Assert.Equal(traces[1].Prompt.Length - 1, traces[1].Cached);
    }

    /// <summary>
    /// The constraint acts on the logits in the client's own sampler, whichever backend computed them: the backends'
    /// logits are bit-identical on the kit's models, so greedy and seeded constrained replies are the same tokens.
    /// </summary>
    [Theory]
    [MemberData(nameof(ShapesOnce))]
    public async Task EverySchemaShape_ConstrainedReply_IsTheSameTokensOnBothBackends(string schema)
    {
        var replies = new Dictionary<KvSessionBackend, List<int[]>>();
        foreach (var backend in new[] { KvSessionBackend.Generator, KvSessionBackend.Owned })
        {
            using var client = new KvChatClient(TinyPath, new KvChatClientOptions { SessionBackend = backend });
            var traces = new List<ReplyTrace>();
            client.Trace = traces.Add;
            foreach (var options in new[] { new ChatOptions(), new ChatOptions { Temperature = 1, Seed = 11 } })
            {
                options.ResponseFormat = Schema(schema);
                options.MaxOutputTokens = 200;
                ConstraintTestKit.AssertValid(schema, (await client.GetResponseAsync([new(ChatRole.User, "One more.")], options, TestContext.Current.CancellationToken)).Text);
            }

            replies[backend] = [.. traces.Select(t => t.Generated)];
        }

        Assert.Equal(replies[KvSessionBackend.Generator], replies[KvSessionBackend.Owned]);
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public async Task ScriptedModelSayingSomethingElse_EverySchemaShape_IsForcedIntoValidJson(string schema, KvSessionBackend backend)
    {
        using var client = new KvChatClient(
            TestModels.PathOf(ModelKitOptions.Tiny with { Script = "Sure! {name: Bob, age: 200} [1,2,3,4] \"hello world\" true" }),
            new KvChatClientOptions { SessionBackend = backend });
        var response = await client.GetResponseAsync(
            [new(ChatRole.User, "Give me one.")], new ChatOptions { ResponseFormat = Schema(schema), MaxOutputTokens = 200 }, TestContext.Current.CancellationToken);

        Assert.Equal(ChatFinishReason.Stop, response.FinishReason);
        ConstraintTestKit.AssertValid(schema, response.Text);
    }

    [Theory]
    [MemberData(nameof(TestBackends.Both), MemberType = typeof(TestBackends))]
    public async Task GetResponseAsyncOfT_DeserializesTheConstrainedReply(KvSessionBackend backend)
    {
        using var client = new KvChatClient(TinyPath, new KvChatClientOptions { SessionBackend = backend });
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

    public static TheoryData<string, string, KvSessionBackend> AlreadyValid() => TestBackends.OnBoth<string, string>(
    [
        ("""{"city":"Paris","temperature":18}""", """{"type":"object","properties":{"city":{"type":"string"},"temperature":{"type":"integer"}},"required":["city","temperature"]}"""),
        ("""[{"ok":true,"n":-1.25},{"ok":false,"n":null}]""", """{"type":"array","items":{"type":"object","properties":{"ok":{"type":"boolean"},"n":{"type":["number","null"]}},"required":["ok","n"],"additionalProperties":false}}"""),
    ]);

    /// <summary>The oracle: when the greedy reply is already valid, the constraint changes nothing, token for token.</summary>
    [Theory]
    [MemberData(nameof(AlreadyValid))]
    public async Task ScriptedModel_AlreadyValidJson_ConstrainedReplyEqualsTheUnconstrainedOne(string reply, string schema, KvSessionBackend backend)
    {
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny with { Script = reply }), new KvChatClientOptions { SessionBackend = backend });
        var traces = new List<ReplyTrace>();
        client.Trace = traces.Add;
        var free = await client.GetResponseAsync([new(ChatRole.User, "Weather?")], null, TestContext.Current.CancellationToken);
        var constrained = await client.GetResponseAsync([new(ChatRole.User, "Weather?")], new ChatOptions { ResponseFormat = Schema(schema) }, TestContext.Current.CancellationToken);

        Assert.Equal(reply, free.Text);
        Assert.Equal(free.Text, constrained.Text);
        Assert.Equal(traces[0].Generated, traces[1].Generated);
        ConstraintTestKit.AssertValid(schema, constrained.Text);
    }

    [Theory]
    [MemberData(nameof(TestBackends.Both), MemberType = typeof(TestBackends))]
    public async Task Utf8AndEscapesInsideStrings_OneTokenPerByte_RoundTrip(KvSessionBackend backend)
    {
        // The scripted tokenizer has one token per byte: every non-ASCII character is split across tokens.
        const string Reply = """{"text":"Zürich 日本 👨‍👩‍👧 \"q\" \\ \n\u00e9 \/"}""";
        const string SchemaText = """{"type":"object","properties":{"text":{"type":"string"}},"required":["text"],"additionalProperties":false}""";
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny with { Script = Reply }), new KvChatClientOptions { SessionBackend = backend });
        var response = await client.GetResponseAsync([new(ChatRole.User, "Say it.")], new ChatOptions { ResponseFormat = Schema(SchemaText) }, TestContext.Current.CancellationToken);

        Assert.Equal(Reply, response.Text);
        using var json = JsonDocument.Parse(response.Text);
        Assert.Equal("Zürich 日本 👨‍👩‍👧 \"q\" \\ \né /", json.RootElement.GetProperty("text").GetString());
    }

    [Theory]
    [MemberData(nameof(TestBackends.Both), MemberType = typeof(TestBackends))]
    public async Task ReplyCutBeforeItsJsonEnds_IsAClearError_NotAHalfObject(KvSessionBackend backend)
    {
        using var client = new KvChatClient(TinyPath, new KvChatClientOptions { SessionBackend = backend });
        var schema = """{"type":"array","items":{"type":"string"},"minItems":20}""";
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => client.GetResponseAsync(
            [new(ChatRole.User, "List")], new ChatOptions { ResponseFormat = Schema(schema), MaxOutputTokens = 5 }, TestContext.Current.CancellationToken));
        Assert.Contains("MaxOutputTokens", error.Message, StringComparison.Ordinal);
    }

    /// <summary>
    /// Structured turns between free ones on one session: each is served from the cache (only the new tokens are
    /// prefilled), leaves the session holding prompt + reply, and says what a fresh prefill of the same prompt says.
    /// </summary>
    [Theory]
    [MemberData(nameof(TestBackends.Both), MemberType = typeof(TestBackends))]
    public async Task StructuredTurns_AreServedFromTheCache_LeavePromptAndReplyInTheSession_AndMatchAFreshPrefill(KvSessionBackend backend)
    {
        const string Answer = """{"type":"object","properties":{"yes":{"type":"boolean"},"why":{"type":"string","maxLength":12}},"required":["yes","why"],"additionalProperties":false}""";
        using var client = new KvChatClient(TinyPath, new KvChatClientOptions { MaxSessions = 1, SessionBackend = backend });
        var traces = new List<ReplyTrace>();
        client.Trace = traces.Add;
        List<ChatMessage> history = [new(ChatRole.System, "A system prompt long enough to be worth caching between turns.")];
        for (var turn = 0; turn < 5; turn++)
        {
            var structured = turn % 2 == 1;
            history.Add(new ChatMessage(ChatRole.User, structured ? $"Question {turn}: answer as JSON" : $"Question {turn}"));
            var options = structured ? new ChatOptions { ResponseFormat = Schema(Answer), MaxOutputTokens = 100 } : new ChatOptions { MaxOutputTokens = 6 };
            var response = await client.GetResponseAsync(history, options, TestContext.Current.CancellationToken);

            Assert.Equal(turn + 1, traces.Count); // Served on the session: the guidance fallback leaves no trace.
            var trace = traces[^1];
            var usage = response.Usage!;
            if (turn > 0)
            {
                Assert.Equal(traces[^2].SessionTokens.Length, usage.CachedInputTokenCount);
                Assert.True(usage.CachedInputTokenCount > 20);
            }

            Assert.Equal(usage.InputTokenCount - usage.CachedInputTokenCount, usage.AdditionalCounts![KvChatUsage.PrefilledInputTokenCount]);
            if (structured)
            {
                Assert.Equal(ChatFinishReason.Stop, response.FinishReason);
                ConstraintTestKit.AssertValid(Answer, response.Text);
                Assert.Equal([.. trace.Prompt, .. trace.Generated[..^1]], trace.SessionTokens); // The closing brace is pending.

                Assert.Equal(FreshConstrainedGreedy(client, trace.Prompt, Answer, 100), trace.Generated);
            }

            history.AddRange(response.Messages);
        }
    }

    /// <summary>
    /// The oracle of a constrained turn: a fresh GenAI generator prefills exactly <paramref name="prompt"/> and picks each
    /// token greedily from its own logits under a fresh mask of <paramref name="schema"/>. The ids are fed directly: a
    /// cached turn's prompt holds earlier replies as the tokens the model said (the reply memo), which a new client
    /// would tokenize differently.
    /// </summary>
    private static List<int> FreshConstrainedGreedy(KvChatClient client, int[] prompt, string schema, int maxNewTokens)
    {
        var folder = ModelFolder.Read(TinyPath);
        var vocabulary = new ConstraintVocabulary(TokenBytes.Read(Path.Combine(TinyPath, "tokenizer.json"), folder.VocabSize), folder.EosTokenIds);
        using var document = JsonDocument.Parse(schema);
        var constraint = new GrammarConstraint(JsonSchemaGrammar.Compile(document.RootElement), vocabulary);
        using var generator = RawGeneration.NewGenerator((Model)client.GetService(typeof(Model))!);
        generator.AppendTokens(prompt);
        var reply = new List<int>();
        while (reply.Count < maxNewTokens)
        {
            var logits = RawGeneration.LastLogits(generator);
            constraint.Mask(logits);
            if (!constraint.CanEnd)
            {
                foreach (var eos in folder.EosTokenIds)
                {
                    logits[eos] = float.NegativeInfinity;
                }
            }

            var next = RawGeneration.ArgMax(logits);
            if (folder.EosTokenIds.Contains(next))
            {
                break;
            }

            reply.Add(next);
            constraint.Accept(next);
            if (constraint.IsComplete)
            {
                break;
            }

            generator.AppendTokens([next]);
        }

        return reply;
    }

    /// <summary>
    /// The fallback (GenAI guidance on a temporary generator) serves a schema outside the subset, on either backend: it
    /// prefills the whole prompt, says why in the log, and leaves the cached sessions alone.
    /// </summary>
    [Theory]
    [MemberData(nameof(TestBackends.Both), MemberType = typeof(TestBackends))]
    public async Task SchemaOutsideTheSubset_FallsBackToGenAiGuidance_SaysSo_AndLeavesTheSessionAlone(KvSessionBackend backend)
    {
        var logs = new CapturingLoggerProvider();
        using var factory = LoggerFactory.Create(b => b.AddProvider(logs).SetMinimumLevel(LogLevel.Information));
        using var client = new KvChatClient(TinyPath, new KvChatClientOptions { LoggerFactory = factory, MaxSessions = 1, SessionBackend = backend });
        var traces = new List<ReplyTrace>();
        client.Trace = traces.Add;
        List<ChatMessage> history = [new(ChatRole.System, "A system prompt long enough to be worth caching between turns."), new(ChatRole.User, "Hello")];
        history.AddRange((await client.GetResponseAsync(history, new ChatOptions { MaxOutputTokens = 6 }, TestContext.Current.CancellationToken)).Messages);
        history.Add(new ChatMessage(ChatRole.User, "Digits"));

        var response = await client.GetResponseAsync(
            history, new ChatOptions { ResponseFormat = Schema("""{"type":"string","pattern":"^[0-9]{3}$"}"""), MaxOutputTokens = 20 }, TestContext.Current.CancellationToken);

        Assert.Matches("^\"[0-9]{3}\"$", response.Text);
        Assert.Equal(0, response.Usage!.CachedInputTokenCount);
        Assert.Equal(response.Usage.InputTokenCount, response.Usage.AdditionalCounts![KvChatUsage.PrefilledInputTokenCount]);
        Assert.Single(traces); // The temporary generator is no session: nothing traced, nothing committed.
        var fallback = Assert.Single(logs.Entries, e => e.Message.Contains("falls back to GenAI guidance", StringComparison.Ordinal));
        Assert.Contains("'pattern'", fallback.Message, StringComparison.Ordinal);
        Assert.Equal(10, fallback.EventId.Id); // Its own event id.
        Assert.Equal("StructuredFallback", fallback.EventId.Name);

        // The conversation's session still holds the first turn: the next turn reuses it.
        history.AddRange(response.Messages);
        history.Add(new ChatMessage(ChatRole.User, "Thanks"));
        var next = await client.GetResponseAsync(history, new ChatOptions { MaxOutputTokens = 4 }, TestContext.Current.CancellationToken);
        Assert.Equal(traces[0].SessionTokens.Length, next.Usage!.CachedInputTokenCount);

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

    // No int: AIJsonUtilities writes {"type":"integer"} without bounds, and a random model fills the 15 digits the
    // grammar allows, which Int32 cannot read.
    public sealed record Booking([property: Description("Whether the room is free.")] bool Confirmed, Mood Mood, bool? Late);

    /// <summary>
    /// The fallback is only for a schema outside the subset: plain JSON, what <c>AIJsonUtilities</c> and
    /// <c>GetResponseAsync&lt;T&gt;</c> emit for a .NET type, annotations and <c>format</c>, JSON with tools, and required
    /// calls (with or without JSON) are all constrained on the cached session, on either backend.
    /// </summary>
    [Theory]
    [MemberData(nameof(TestBackends.Both), MemberType = typeof(TestBackends))]
    public async Task SchemasInTheSubset_JsonWithTools_RequiredCalls_NeverTakeTheFallback(KvSessionBackend backend)
    {
        var logs = new CapturingLoggerProvider();
        using var factory = LoggerFactory.Create(b => b.AddProvider(logs).SetMinimumLevel(LogLevel.Information));
        using var client = new KvChatClient(TinyPath, new KvChatClientOptions { LoggerFactory = factory, MaxSessions = 1, SessionBackend = backend });
        var traces = new List<ReplyTrace>();
        client.Trace = traces.Add;
        var tool = AIFunctionFactory.CreateDeclaration(
            "get_weather", "Weather.", JsonDocument.Parse("""{"type":"object","properties":{"days":{"type":"integer","minimum":1,"maximum":7}},"required":["days"]}""").RootElement);
        var annotated = """{"$schema":"https://json-schema.org/draft/2020-12/schema","$id":"x","title":"t","description":"d","default":"a","examples":["b"],"type":"string","format":"email","x-extra":1,"maxLength":10}""";
        ChatOptions[] requests =
        [
            new() { ResponseFormat = ChatResponseFormat.Json },
            new() { ResponseFormat = ChatResponseFormat.ForJsonSchema(AIJsonUtilities.CreateJsonSchema(typeof(Booking)), "booking") },
            new() { ResponseFormat = Schema(annotated) },
            new() { ResponseFormat = Schema(annotated), Tools = [tool] },
            new() { Tools = [tool], ToolMode = ChatToolMode.RequireAny },
            new() { ResponseFormat = Schema(annotated), Tools = [tool], ToolMode = ChatToolMode.RequireSpecific("get_weather") },
        ];
        List<ChatMessage> ask = [new(ChatRole.System, "A system prompt long enough to be worth caching between turns."), new(ChatRole.User, "Go")];
        foreach (var options in requests)
        {
            options.MaxOutputTokens = 80;
            try
            {
                await client.GetResponseAsync(ask, options, TestContext.Current.CancellationToken);
            }
            catch (InvalidOperationException e) when (e.Message.Contains("MaxOutputTokens", StringComparison.Ordinal))
            {
                // A random model may fill an open value to the limit: the reply ran on the session all the same.
            }
        }

        var typed = await client.GetResponseAsync<Booking>(ask, new ChatOptions { MaxOutputTokens = 80 }, cancellationToken: TestContext.Current.CancellationToken);
        Assert.True(typed.TryGetResult(out _), typed.Text);

        Assert.Equal(requests.Length + 1, traces.Count); // Every reply ran on a cached session; the fallback leaves no trace.
        Assert.All(traces.Skip(1), t => Assert.True(t.Cached > 0));
        Assert.DoesNotContain(logs.Entries, e => e.Message.Contains("falls back", StringComparison.Ordinal));
    }
}
