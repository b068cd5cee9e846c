using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.AI;
using Xunit;

namespace KvChat.Tests.RealFamilies;

/// <summary>
/// Multi-turn conversations through the client on kit models over real tokenizers: every reply equals a fresh prefill
/// of the prompt (the oracle, with cache accounting), the prompt is the canonical encoding of the conversation, and the
/// KV cache survives each turn up to where the template re-renders the previous reply differently.
/// </summary>
public sealed class RealFamilyOracleTests(ITestOutputHelper output)
{
    private static readonly string[] Questions =
    [
        "Tell me about the sea.",
        "  And about mountains?  ",
        "\nWhat is 12 * 7?",
        "Write <b>bold</b> words, please.\n\n",
        "中文可以吗？ 🎉",
    ];

    public static TheoryData<string, int> Runs()
    {
        var data = new TheoryData<string, int>();
        foreach (var name in RealFamily.Names)
        {
            data.Add(name, 0);
        }

        data.Add("qwen3", new KvChatClientOptions().ReplyMemoCapacity); // The default, with the reply memo on.

        return data;
    }

    [Theory]
    [MemberData(nameof(Runs))]
    public async Task MultiTurn_EveryReply_EqualsFreshPrefill_OfTheCanonicalPrompt(string name, int replyMemoCapacity)
    {
        var family = RealFamily.Get(name);
        using var harness = new OracleHarness(family.Path, new KvChatClientOptions { MaxSessions = 1, ReplyMemoCapacity = replyMemoCapacity });
        var history = new List<ChatMessage> { new(ChatRole.System, "You are a concise assistant."), new(ChatRole.User, Questions[0]) };
        int[]? previousSession = null;
        var canonicalTurns = 0;
        for (var turn = 0; turn < Questions.Length; turn++)
        {
            var response = await harness.AskAsync(history, new ChatOptions { MaxOutputTokens = 10 });
            var trace = harness.Last;
            var canonical = family.Canonical(JsonOf(history));
            var isCanonical = canonical.SequenceEqual(trace.Prompt);
            canonicalTurns += isCanonical ? 1 : 0;
            if (replyMemoCapacity == 0)
            {
                Assert.True(isCanonical, $"turn {turn}: the prompt is not the canonical encoding");
            }

            if (previousSession is not null)
            {
                // Everything before the previous reply survives; the reply itself survives where the template keeps it verbatim.
                var common = previousSession.AsSpan().CommonPrefixLength(trace.Prompt);
                Assert.Equal(Math.Min(common, previousSession.Length - 1), Math.Min(trace.Cached, previousSession.Length - 1));
                output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{name} memo {replyMemoCapacity} turn {turn}: prompt {trace.Prompt.Length}, cached {trace.Cached} of the {previousSession.Length} the session held ({100.0 * trace.Cached / previousSession.Length:F0}%), canonical {isCanonical}, reply '{response.Text}'"));
            }

            previousSession = [.. trace.Prompt, .. trace.Generated];
            history.AddRange(response.Messages);
            if (turn + 1 < Questions.Length)
            {
                history.Add(new ChatMessage(ChatRole.User, Questions[turn + 1]));
            }
        }

        output.WriteLine($"{name} memo {replyMemoCapacity}: {harness.Checked} oracle turns, {canonicalTurns} canonical prompts");
        Assert.Equal(Questions.Length, harness.Checked);
    }

    [Fact]
    public async Task Qwen3_ToolHistory_ThroughTheClient_EqualsFreshPrefill_AndKeepsTheCache()
    {
        var family = RealFamily.Get("qwen3");
        using var harness = new OracleHarness(family.Path, new KvChatClientOptions { MaxSessions = 1 });
        var weather = AIFunctionFactory.Create((string city) => "sunny", "get_weather", "Gets the weather.");
        var options = new ChatOptions { Tools = [weather], MaxOutputTokens = 8 };
        var history = new List<ChatMessage>
        {
            new(ChatRole.System, "You help."),
            new(ChatRole.User, "Weather in Paris?"),
            new(ChatRole.Assistant, [new FunctionCallContent("call_1", "get_weather", new Dictionary<string, object?> { ["city"] = "Paris" })]),
            new(ChatRole.Tool, [new FunctionResultContent("call_1", "sunny")]),
        };

        var first = await harness.AskAsync(history, options);
        var firstPrompt = harness.Last.Prompt;
        history.AddRange(first.Messages);
        history.Add(new ChatMessage(ChatRole.User, "And tomorrow?"));
        await harness.AskAsync(history, options);

        Assert.Contains("<tool_response>\nsunny\n</tool_response>", family.Decode(firstPrompt), StringComparison.Ordinal);
        Assert.True(harness.Last.Cached >= firstPrompt.Length - 1, $"cached {harness.Last.Cached} of {firstPrompt.Length}");
        Assert.Equal(2, harness.Checked);
    }

    private static string JsonOf(List<ChatMessage> history)
        => JsonSerializer.Serialize(history.Select(m => new Dictionary<string, string> { ["role"] = m.Role.Value, ["content"] = m.Text }).ToList());
}
