using System.Text;
using System.Text.Json;
using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Xunit;

namespace KvChat.Tests;

/// <summary>
/// Scripted kit models say a tool call in their family's syntax through the real runtime; the streamed text, fed to
/// <see cref="ToolCallParser"/>, gives the calls. Proves the parser's formats match what the kit's templates render and
/// what its tokenizers decode (the Llama 3 <c>&lt;|python_tag|&gt;</c> is a special token and never reaches the text).
/// </summary>
public sealed class ToolCallEndToEndTests
{
    private const string HermesReply = "I'll check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n"
        + "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"zone\": \"Europe/Paris\"}}\n</tool_call>";

    private const string PhiReply = "<|tool_call|>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}, {\"name\": \"get_time\", \"arguments\": {\"zone\": \"Europe/Paris\"}}]<|/tool_call|>";

    private const string Llama3Reply = "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}";

    private static readonly AIFunction GetWeather = AIFunctionFactory.Create((string city) => $"18C in {city}", "get_weather", "Gets the weather in a city.");

    private static readonly AIFunction GetTime = AIFunctionFactory.Create((string zone) => "12:00", "get_time", "Gets the time in a time zone.");

    private static ChatOptions Options => new() { Tools = [GetWeather, GetTime] };

    private sealed record Streamed(string Text, List<FunctionCallContent> Calls, ChatFinishReason? Finish, UsageDetails Usage, string RawText);

    private static string ModelPath(ChatTemplateFamily family, string script)
        => TestModels.PathOf(ModelKitOptions.Tiny with { TemplateFamily = family, Script = script });

    private static ToolCallFormat DetectFormat(string path)
    {
        var folder = ModelFolder.Read(path);
        return ToolCallFormat.Detect(folder.ChatTemplate, [.. folder.AddedTokens.Select(t => t.Content)])
            ?? throw new InvalidOperationException("No tool-call format detected.");
    }

    /// <summary>Streams a reply: text from text updates, calls from the client's FunctionCallContent updates.</summary>
    private static async Task<Streamed> StreamAsync(KvChatClient client, ToolCallFormat format, IEnumerable<ChatMessage> messages, ChatOptions options)
    {
        _ = format;
        var text = new StringBuilder();
        var calls = new List<FunctionCallContent>();
        ChatFinishReason? finish = null;
        UsageDetails? usage = null;
        await foreach (var update in client.GetStreamingResponseAsync(messages, options, TestContext.Current.CancellationToken))
        {
            // No raw tool-call markup ever reaches a text update.
            Assert.DoesNotContain("<tool_call>", update.Text, StringComparison.Ordinal);
            Assert.DoesNotContain("<|tool_call|>", update.Text, StringComparison.Ordinal);
            Assert.DoesNotContain("\"name\": \"get_", update.Text, StringComparison.Ordinal);
            text.Append(update.Text);
            calls.AddRange(update.Contents.OfType<FunctionCallContent>());
            finish ??= update.FinishReason;
            usage ??= update.Contents.OfType<UsageContent>().SingleOrDefault()?.Details;
        }

        return new Streamed(text.ToString(), calls, finish, usage!, text.ToString());
    }

    private static void AssertCall(FunctionCallContent call, string name, string argument, string value)
    {
        Assert.Null(call.Exception);
        Assert.Equal(name, call.Name);
        Assert.StartsWith("call_", call.CallId, StringComparison.Ordinal);
        Assert.Equal(value, ((JsonElement)call.Arguments![argument]!).GetString());
    }

    [Theory]
    [InlineData(ChatTemplateFamily.ChatML, "hermes")]
    [InlineData(ChatTemplateFamily.Phi, "phi")]
    [InlineData(ChatTemplateFamily.Llama3, "llama3")]
    public void Detect_KitModelFolder_PicksTheFamilyFormat(ChatTemplateFamily family, string expected)
    {
        Assert.Equal(expected, DetectFormat(ModelPath(family, "x")).Name);
    }

    [Fact]
    public async Task Stream_HermesScript_TextAndTwoCalls()
    {
        var path = ModelPath(ChatTemplateFamily.ChatML, HermesReply);
        using var client = new KvChatClient(path);

        var r = await StreamAsync(client, DetectFormat(path), [new(ChatRole.User, "Weather and time in Paris?")], Options);

        Assert.Equal("I'll check.", r.Text);
        Assert.Equal(2, r.Calls.Count);
        AssertCall(r.Calls[0], "get_weather", "city", "Paris");
        AssertCall(r.Calls[1], "get_time", "zone", "Europe/Paris");
        Assert.Equal(ChatFinishReason.ToolCalls, r.Finish);
    }

    [Fact]
    public async Task Stream_PhiScript_TwoCallsFromOneArray()
    {
        var path = ModelPath(ChatTemplateFamily.Phi, PhiReply);
        using var client = new KvChatClient(path);

        var r = await StreamAsync(client, DetectFormat(path), [new(ChatRole.User, "Weather and time in Paris?")], Options);

        Assert.Equal("", r.Text);
        Assert.Equal(ChatFinishReason.ToolCalls, r.Finish);
        Assert.Equal(2, r.Calls.Count);
        AssertCall(r.Calls[0], "get_weather", "city", "Paris");
        AssertCall(r.Calls[1], "get_time", "zone", "Europe/Paris");
    }

    [Theory]
    [InlineData(Llama3Reply)]
    [InlineData("<|python_tag|>" + Llama3Reply)]
    public async Task Stream_Llama3Script_BareJsonCall(string script)
    {
        var path = ModelPath(ChatTemplateFamily.Llama3, script);
        using var client = new KvChatClient(path);

        var r = await StreamAsync(client, DetectFormat(path), [new(ChatRole.User, "Weather in Paris?")], Options);

        Assert.Equal("", r.Text); // <|python_tag|> is a special token: decoding drops it; the bare JSON is the call.
        AssertCall(Assert.Single(r.Calls), "get_weather", "city", "Paris");
    }

    [Fact]
    public async Task Stream_HermesScriptWithUnicodeAndBrokenCall_ValidCallAndMalformedCall()
    {
        const string Script = "Voilà 日本 👨‍👩‍👧\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Zürich 東京\"}}\n</tool_call>\n"
            + "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"zone\": }}\n</tool_call>";
        var path = ModelPath(ChatTemplateFamily.ChatML, Script);
        using var client = new KvChatClient(path);

        var r = await StreamAsync(client, DetectFormat(path), [new(ChatRole.User, "Go")], Options);

        Assert.Equal("Voilà 日本 👨‍👩‍👧", r.Text);
        Assert.Equal(2, r.Calls.Count);
        AssertCall(r.Calls[0], "get_weather", "city", "Zürich 東京");
        Assert.Equal("get_time", r.Calls[1].Name);
        Assert.Contains("not valid JSON", r.Calls[1].Exception!.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Stream_MaxOutputTokensCutsTheCall_UnterminatedMalformedCall()
    {
        var path = ModelPath(ChatTemplateFamily.ChatML, HermesReply);
        using var client = new KvChatClient(path);
        var options = Options;
        options.MaxOutputTokens = 40;

        var r = await StreamAsync(client, DetectFormat(path), [new(ChatRole.User, "Go")], options);

        Assert.Equal(ChatFinishReason.Length, r.Finish);
        Assert.Equal("I'll check.", r.Text);
        var call = Assert.Single(r.Calls);
        Assert.Contains("not terminated", call.Exception!.Message, StringComparison.Ordinal);
    }

    /// <summary>
    /// The parsed calls, sent back as the assistant message with their results, render to exactly the tokens the model
    /// said: the next turn is served from the cache through the whole reply.
    /// </summary>
    [Theory]
    [InlineData(ChatTemplateFamily.ChatML, HermesReply)]
    [InlineData(ChatTemplateFamily.Phi, PhiReply)]
    [InlineData(ChatTemplateFamily.Llama3, Llama3Reply)]
    public async Task NextTurn_ParsedCallsAndResultsSentBack_ReplyServedFromCache(ChatTemplateFamily family, string script)
    {
        var path = ModelPath(family, script);
        using var client = new KvChatClient(path);
        List<ChatMessage> history = [new(ChatRole.User, "Weather and time in Paris?")];

        var first = await StreamAsync(client, DetectFormat(path), history, Options);

        var assistant = new ChatMessage(ChatRole.Assistant, []);
        if (first.Text.Length > 0)
        {
            assistant.Contents.Add(new TextContent(first.Text));
        }

        foreach (var call in first.Calls)
        {
            assistant.Contents.Add(call);
        }

        history.Add(assistant);
        history.Add(new ChatMessage(ChatRole.Tool, [.. first.Calls.Select(c => new FunctionResultContent(c.CallId, "ok"))]));
        var second = await client.GetResponseAsync(history, Options, TestContext.Current.CancellationToken);

        var firstTurnTokens = first.Usage.InputTokenCount!.Value + first.Usage.OutputTokenCount!.Value;
        Assert.True(
            second.Usage!.CachedInputTokenCount >= firstTurnTokens,
            $"cached {second.Usage.CachedInputTokenCount} of {second.Usage.InputTokenCount}; the first turn's prompt and reply are {firstTurnTokens} tokens");
    }

    [Fact]
    public async Task Stream_CallWithNestedAndArrayArguments_ParsedThroughTheRuntime()
    {
        const string Script = "<tool_call>\n{\"name\": \"plan_trip\", \"arguments\": {\"stops\": [\"Paris\", \"Rome\"], \"budget\": {\"amount\": 1200.5, \"currency\": \"EUR\"}, \"nights\": [2, 3], \"flexible\": true, \"notes\": null}}\n</tool_call>";
        var path = ModelPath(ChatTemplateFamily.ChatML, Script);
        using var client = new KvChatClient(path);
        var plan = AIFunctionFactory.Create((string[] stops, Dictionary<string, object> budget, int[] nights, bool flexible, string? notes) => "ok", "plan_trip");

        var r = await StreamAsync(client, DetectFormat(path), [new(ChatRole.User, "Plan it")], new ChatOptions { Tools = [plan] });

        var call = Assert.Single(r.Calls);
        Assert.Null(call.Exception);
        var arguments = call.Arguments!;
        Assert.Equal(["Paris", "Rome"], ((JsonElement)arguments["stops"]!).EnumerateArray().Select(e => e.GetString()));
        Assert.Equal(1200.5, ((JsonElement)arguments["budget"]!).GetProperty("amount").GetDouble());
        Assert.Equal([2, 3], ((JsonElement)arguments["nights"]!).EnumerateArray().Select(e => e.GetInt32()));
        Assert.True(((JsonElement)arguments["flexible"]!).GetBoolean());
        Assert.Null(arguments["notes"]);
        Assert.Equal(ChatFinishReason.ToolCalls, r.Finish);
    }
}
