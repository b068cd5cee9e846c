using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using KvChat;
using KvChat.Testing;
using KvChat.Tests;
using KvChat.Tests.RealFamilies;
using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntimeGenAI;
using Xunit;

namespace KvChatClient.Tests.Reasoning;

/// <summary>
/// Reasoning models end to end: a scripted kit model over Qwen3's real tokenizer and template says
/// <c>&lt;think&gt;...&lt;/think&gt;answer</c> in real Qwen3 tokens, and a kit model runs an R1-distill-style template
/// whose generation prompt opens the reasoning. Histories are compared with Jinja2's rendering of the same history.
/// </summary>
public sealed class ReasoningEndToEndTests
{
    private const string Thought = "The user greets me, so I greet back.";
    private const string Answer = "Hello! How can I help?";
    private const string Reply = $"<think>\n{Thought}\n</think>\n\n{Answer}";
    private const string ClosedThink = "<think>\n\n</think>\n\n";
    private const string SystemPrompt = "You are a friendly assistant. Answer in one or two short sentences, and ask a question back when it helps.";

    private static readonly Lazy<Qwen3Ids> Ids = new(EncodeQwen3);

    private sealed record Qwen3Ids(int[] Reasoned, int[] AnswerOnly, int[] AfterClosedThink);

    private static string PlainQwen3 => TestModels.PathOf(Qwen3Scripts.Plain());

    private static Qwen3Ids EncodeQwen3()
    {
        var ids = Qwen3Scripts.Encode(Reply, Answer, ClosedThink);
        return new Qwen3Ids(ids[0], ids[1], [.. ids[2], .. ids[1]]);
    }

    /// <summary>A kit model over Qwen3's tokenizer that always says <paramref name="reply"/> (real Qwen3 ids).</summary>
    internal static string Qwen3Saying(int[] reply) => TestModels.PathOf(Qwen3Scripts.Saying(reply));

    internal static int[] ReasonedReply => Ids.Value.Reasoned;

    internal static int[] AnswerOnlyReply => Ids.Value.AnswerOnly;

    internal static int[] AnswerAfterClosedThink => Ids.Value.AfterClosedThink;

    /// <summary>Hugging Face's rendering of the messages, with the generation prompt (Jinja2 in python3).</summary>
    private static string Jinja(string template, JsonArray messages, string? variablesJson = null)
        => JinjaReference.Render(template, messages.ToJsonString(), null, addGenerationPrompt: true, new Dictionary<string, string?>(), variablesJson);

    private static ChatOptions Greedy() => new() { Temperature = 0, MaxOutputTokens = 256 };

    [Fact]
    public async Task Streaming_Qwen3_StreamsReasoningThenAnswerWithoutMarkup()
    {
        using var client = new KvChat.KvChatClient(Qwen3Saying(ReasonedReply));
        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in client.GetStreamingResponseAsync([new ChatMessage(ChatRole.User, "Hi!")], Greedy()))
        {
            updates.Add(update);
        }

        var contents = updates.SelectMany(u => u.Contents).ToList();
        Assert.Equal(Thought, string.Concat(contents.OfType<TextReasoningContent>().Select(r => r.Text)));
        Assert.Equal(Answer, string.Concat(contents.OfType<TextContent>().Select(t => t.Text)));
        Assert.True(contents.FindLastIndex(c => c is TextReasoningContent) < contents.FindIndex(c => c is TextContent));
        Assert.True(contents.OfType<TextReasoningContent>().Count() > 1, "Reasoning streams in pieces, before the answer.");
        Assert.DoesNotContain(contents.OfType<TextContent>(), t => t.Text.Contains("think>", StringComparison.Ordinal));
        var usage = Assert.Single(contents.OfType<UsageContent>()).Details;
        Assert.Equal(ReasonedReply.Length, usage.OutputTokenCount);
        Assert.Equal(usage.InputTokenCount + usage.OutputTokenCount, usage.TotalTokenCount);
        Assert.Equal(ChatFinishReason.Stop, updates.Last(u => u.FinishReason is not null).FinishReason);
    }

    [Fact]
    public async Task GetResponse_Qwen3_MessageHoldsReasoningThenText()
    {
        using var client = new KvChat.KvChatClient(Qwen3Saying(ReasonedReply));
        var response = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Hi!")], Greedy());
        var message = Assert.Single(response.Messages);
        Assert.Equal(Thought, Assert.IsType<TextReasoningContent>(message.Contents[0]).Text);
        Assert.Equal(Answer, response.Text);

        var hidden = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Hi!")], new ChatOptions { Temperature = 0, Reasoning = new ReasoningOptions { Output = ReasoningOutput.None } });
        Assert.Empty(hidden.Messages.SelectMany(m => m.Contents).OfType<TextReasoningContent>());
        Assert.Equal(Answer, hidden.Text);
    }

    [Fact]
    public async Task SecondTurn_Qwen3_ReasoningIsDroppedAndThePromptBeforeTheReplySurvives()
    {
        using var client = new KvChat.KvChatClient(Qwen3Saying(ReasonedReply));
        var traces = new List<ReplyTrace>();
        client.Trace = traces.Add;
        List<ChatMessage> history = [new(ChatRole.System, SystemPrompt), new(ChatRole.User, "Hi!")];
        var first = await client.GetResponseAsync(history, Greedy());
        history.AddRange(first.Messages);
        history.Add(new ChatMessage(ChatRole.User, "Tell me more."));
        var second = await client.GetResponseAsync(history, Greedy());

        // Qwen3's template drops reasoning before the last user query: the cache keeps turn 1's prompt, not its reply.
        Assert.Equal(traces[0].Prompt.Length, second.Usage!.CachedInputTokenCount);
        Assert.Equal(traces[0].Prompt, traces[1].Prompt[..traces[0].Prompt.Length]);
        using var model = new Model(PlainQwen3);
        using var tokenizer = new Tokenizer(model);
        var prompt = tokenizer.Decode(traces[1].Prompt);
        Assert.DoesNotContain(Thought, prompt, StringComparison.Ordinal);
        Assert.Contains("assistant\n" + Answer, prompt, StringComparison.Ordinal);
    }

    [Fact]
    public async Task SecondTurn_Qwen3WithoutReasoning_TheWholeReplySurvives()
    {
        using var client = new KvChat.KvChatClient(Qwen3Saying(AnswerOnlyReply));
        var traces = new List<ReplyTrace>();
        client.Trace = traces.Add;
        List<ChatMessage> history = [new(ChatRole.System, SystemPrompt), new(ChatRole.User, "Hi!")];
        var first = await client.GetResponseAsync(history, Greedy());
        Assert.Empty(first.Messages.SelectMany(m => m.Contents).OfType<TextReasoningContent>());
        Assert.Equal(Answer, first.Text);
        history.AddRange(first.Messages);
        history.Add(new ChatMessage(ChatRole.User, "Tell me more."));
        var second = await client.GetResponseAsync(history, Greedy());
        Assert.Equal(traces[0].Prompt.Length + AnswerOnlyReply.Length, second.Usage!.CachedInputTokenCount);
    }

    [Fact]
    public async Task ReasoningOff_Qwen3_PromptClosesTheReasoningAndTheReplyIsAnswer()
    {
        using var client = new KvChat.KvChatClient(Qwen3Saying(AnswerAfterClosedThink));
        var traces = new List<ReplyTrace>();
        client.Trace = traces.Add;
        var off = new ChatOptions { Temperature = 0, Reasoning = new ReasoningOptions { Effort = ReasoningEffort.None } };
        var response = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Hi!")], off);
        Assert.Equal(Answer, response.Text);
        Assert.Empty(response.Messages.SelectMany(m => m.Contents).OfType<TextReasoningContent>());

        var byProperty = new ChatOptions { Temperature = 0, AdditionalProperties = new() { ["enable_thinking"] = false } };
        Assert.Equal(Answer, (await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Hi!")], byProperty)).Text);
        Assert.Equal(traces[0].Prompt, traces[1].Prompt);

        var expected = Jinja(ReasoningTemplates.Qwen3, [new JsonObject { ["role"] = "user", ["content"] = "Hi!" }], """{"enable_thinking": false}""");
        Assert.EndsWith(ClosedThink, expected, StringComparison.Ordinal);
        using var model = new Model(PlainQwen3);
        using var tokenizer = new Tokenizer(model);
        using var encoded = tokenizer.Encode(expected);
        Assert.Equal(encoded[0].ToArray(), traces[0].Prompt);
    }

    [Fact]
    public async Task Oracle_Qwen3ReasoningTurns_EachTurnIsAFreshPrefillOfJinja2sPrompt()
    {
        using var harness = new OracleHarness(Qwen3Saying(ReasonedReply), new KvChatClientOptions { MaxSessions = 1 });
        var history = new List<ChatMessage> { new(ChatRole.System, SystemPrompt) };
        var reference = new JsonArray { Hf("system", SystemPrompt) };
        using var model = new Model(PlainQwen3);
        using var tokenizer = new Tokenizer(model);
        foreach (var user in new[] { "Hi!", "Tell me more.", "And then?" })
        {
            history.Add(new ChatMessage(ChatRole.User, user));
            reference.Add(Hf("user", user));
            var response = await harness.Client.GetResponseAsync(history, Greedy());
            var trace = harness.Last;

            // The prompt is the canonical encoding of Hugging Face's rendering of the same history (reasoning_content).
            using var encoded = tokenizer.Encode(Jinja(ReasoningTemplates.Qwen3, reference));
            Assert.Equal(encoded[0].ToArray(), trace.Prompt);

            // The cached turn says what a fresh prefill of that prompt says, and its logits are a fresh prefill's.
            Assert.Equal(harness.Fresh(trace.Prompt, 256), trace.Generated);
            using var fresh = RawGeneration.NewGenerator((Model)harness.Client.GetService(typeof(Model))!);
            fresh.AppendTokens(trace.Prompt);
            Assert.True(RawGeneration.MaxAbsDifference(RawGeneration.LastLogits(fresh), trace.PromptLogits!) < 1e-4f);
            Assert.True(history.Count == 2 ? trace.Cached == 0 : trace.Cached > 0);

            history.AddRange(response.Messages);
            reference.Add(Hf("assistant", Answer, Thought));
        }
    }

    public static TheoryData<string> Histories() => ["reasoning-content", "inline", "tools", "mixed"];

    [Theory]
    [MemberData(nameof(Histories))]
    public void Render_Qwen3History_EqualsJinja2(string name)
    {
        var (messages, reference) = History(name);
        using var model = new Model(PlainQwen3);
        using var tokenizer = new Tokenizer(model);
        var renderer = new PromptRenderer(tokenizer, new Lock(), ModelFolder.Read(PlainQwen3), null, 0);
        var expected = Jinja(ReasoningTemplates.Qwen3, reference);
        var prompt = renderer.Render(messages, null, addGenerationPrompt: true);
        using var encoded = tokenizer.Encode(expected);
        Assert.Equal(encoded[0].ToArray(), prompt.Tokens); // The canonical encoding of Jinja2's rendering.
    }

    /// <summary>An MEAI history and the Hugging Face messages it stands for.</summary>
    private static (List<ChatMessage> Messages, JsonArray Reference) History(string name)
    {
        var messages = new List<ChatMessage> { new(ChatRole.System, "Be brief.") };
        var reference = new JsonArray { Hf("system", "Be brief.") };
        void Add(ChatMessage m, JsonObject r)
        {
            messages.Add(m);
            reference.Add(r);
        }

        void User(string text) => Add(new ChatMessage(ChatRole.User, text), Hf("user", text));
        ChatMessage Assistant(params AIContent[] contents) => new(ChatRole.Assistant, contents);

        User("Hi!");
        if (name is "reasoning-content" or "mixed")
        {
            Add(Assistant(new TextReasoningContent("\nFirst thought.\n"), new TextContent("Hello.")), Hf("assistant", "Hello.", "\nFirst thought.\n"));
        }
        else
        {
            Add(Assistant(new TextContent("<think>\nFirst thought.\n</think>\n\nHello.")), Hf("assistant", "<think>\nFirst thought.\n</think>\n\nHello."));
        }

        User("What is the weather in Paris?");
        if (name is "tools" or "mixed")
        {
            var call = new FunctionCallContent("call_1", "get_weather", new Dictionary<string, object?> { ["city"] = "Paris" });
            var hfCall = new JsonObject
            {
                ["id"] = "call_1",
                ["type"] = "function",
                ["function"] = new JsonObject { ["name"] = "get_weather", ["arguments"] = new JsonObject { ["city"] = "Paris" } },
            };
            var withCall = Hf("assistant", string.Empty, "I need the weather tool.");
            withCall["tool_calls"] = new JsonArray { hfCall };
            Add(Assistant(new TextReasoningContent("I need the weather tool."), call), withCall);
            var result = new ChatMessage(ChatRole.Tool, [new FunctionResultContent("call_1", "18C and sunny")]);
            var hfResult = Hf("tool", "18C and sunny");
            hfResult["tool_call_id"] = "call_1";
            Add(result, hfResult);
            Add(Assistant(new TextContent("<think>\nThe tool answered.\n</think>\n\nIt is 18C.")), Hf("assistant", "<think>\nThe tool answered.\n</think>\n\nIt is 18C."));
        }
        else
        {
            Add(Assistant(new TextReasoningContent("Weather question."), new TextContent("I cannot look it up.")), Hf("assistant", "I cannot look it up.", "Weather question."));
        }

        if (name is not "tools")
        {
            User("Thanks!");
        }

        return (messages, reference);
    }

    private static JsonObject Hf(string role, string content, string? reasoning = null)
    {
        var m = new JsonObject { ["role"] = role, ["content"] = content };
        if (reasoning is not null)
        {
            m["reasoning_content"] = reasoning;
        }

        return m;
    }

    private static string R1Model => TestModels.PathOf(TestModels.Tiny with { Script = Reply });

    private static KvChatClientOptions R1Options => new() { ChatTemplate = ReasoningTemplates.R1Distill };

    [Fact]
    public async Task R1DistillTemplate_GenerationPromptOpensThink_ReplyStartsInsideTheReasoning()
    {
        using var client = new KvChat.KvChatClient(R1Model, R1Options);
        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in client.GetStreamingResponseAsync([new ChatMessage(ChatRole.User, "Hi!")], Greedy()))
        {
            updates.Add(update);
        }

        var response = updates.ToChatResponse();
        Assert.Equal(Thought, string.Concat(response.Messages.SelectMany(m => m.Contents).OfType<TextReasoningContent>().Select(r => r.Text)));
        Assert.Equal(Answer, response.Text);
        Assert.DoesNotContain("think>", response.Text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task R1DistillTemplate_History_EqualsJinja2AndReasoningCannotBeSwitchedOff()
    {
        using var client = new KvChat.KvChatClient(R1Model, R1Options);
        var traces = new List<ReplyTrace>();
        client.Trace = traces.Add;
        List<ChatMessage> history = [new(ChatRole.User, "Hi!")];
        var first = await client.GetResponseAsync(history, Greedy());
        history.AddRange(first.Messages);
        history.Add(new ChatMessage(ChatRole.User, "Inline now."));
        history.Add(new ChatMessage(ChatRole.Assistant, "<think>\nx\n</think>\n\nInline answer."));
        history.Add(new ChatMessage(ChatRole.User, "Bye."));
        await client.GetResponseAsync(history, Greedy());

        var expected = Jinja(ReasoningTemplates.R1Distill,
        [
            Hf("user", "Hi!"), Hf("assistant", Answer, Thought), Hf("user", "Inline now."),
            Hf("assistant", "<think>\nx\n</think>\n\nInline answer."), Hf("user", "Bye."),
        ]);
        Assert.Contains("assistant\n\n\nInline answer.", expected, StringComparison.Ordinal);
        using var model = new Model(R1Model);
        using var tokenizer = new Tokenizer(model);
        using var encoded = tokenizer.Encode(expected);
        Assert.Equal(encoded[0].ToArray(), traces[1].Prompt);

        Assert.Throws<NotSupportedException>(() => client.GetStreamingResponseAsync(history, new ChatOptions { Reasoning = new ReasoningOptions { Effort = ReasoningEffort.None } }));
    }

    [Fact]
    public void Render_ReasoningInAUserMessage_Throws()
    {
        using var client = new KvChat.KvChatClient(R1Model, R1Options);
        var e = Assert.Throws<NotSupportedException>(() => client.GetStreamingResponseAsync([new ChatMessage(ChatRole.User, [new TextReasoningContent("x")])]));
        Assert.Contains("TextReasoningContent", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Reasoning_ModelWithoutReasoning_DropsHistoryReasoning()
    {
        using var client = new KvChat.KvChatClient(TestModels.PathOf(TestModels.Tiny with { Script = "Fine." }));
        var traces = new List<ReplyTrace>();
        client.Trace = traces.Add;
        ChatMessage[] withReasoning = [new(ChatRole.User, "Hi"), new(ChatRole.Assistant, [new TextReasoningContent("secret"), new TextContent("Hello.")]), new(ChatRole.User, "More")];
        ChatMessage[] without = [new(ChatRole.User, "Hi"), new(ChatRole.Assistant, "Hello."), new(ChatRole.User, "More")];
        await client.GetResponseAsync(withReasoning, Greedy());
        await client.GetResponseAsync(without, Greedy());
        Assert.Equal(traces[1].Prompt, traces[0].Prompt);
    }
}
