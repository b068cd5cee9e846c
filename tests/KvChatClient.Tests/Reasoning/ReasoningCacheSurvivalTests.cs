using System.ComponentModel;
using System.Globalization;
using System.Text;
using KvChat;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Xunit;

namespace KvChatClient.Tests.Reasoning;

/// <summary>
/// How much of the KV cache survives a turn on Qwen3 (real tokenizer and template) when the history holds generated
/// reasoning, against the same conversation without reasoning: per turn, the prompt, the tokens served from the cache
/// and the tokens prefilled. Token counts are exact (no timing), so the figures are asserted and printed as a table:
/// <c>dotnet test tests/KvChatClient.Tests -c Release --filter "FullyQualifiedName~ReasoningCacheSurvival" --logger "console;verbosity=detailed"</c>.
/// </summary>
public sealed class ReasoningCacheSurvivalTests
{
    private const string SystemPrompt =
        "You are a concise travel assistant. Answer in two or three sentences, give concrete numbers when you know them, " +
        "and say so plainly when you do not know something. Prefer public transport and walking over taxis.";

    private const string Reasoning =
        "Okay, the user wants practical advice for their trip. Let me think about what matters most here: the season, " +
        "the budget and how they like to travel. They asked a short question, so they probably want a short answer, " +
        "not a full itinerary. I should give one or two concrete suggestions with rough costs, mention the metro since " +
        "the system prompt prefers public transport, and avoid inventing opening hours I am not sure about. Then I can " +
        "offer to go into more detail if they want.";

    private const string Answer =
        "Take the metro: a day pass costs about 12 euros and reaches every sight in the centre. Walk along the river in " +
        "the evening; it is free and the best view of the city. Want a day-by-day plan?";

    private static readonly string[] UserTurns =
    [
        "I have three days in Paris next month. What should I do first?",
        "And how do I get around cheaply?",
        "What about the evenings?",
        "Thanks! Anything to avoid?",
    ];

    private sealed record Turn(int Prompt, int Cached, int Prefilled, int Output);

    private sealed record Ids(int[] Reasoned, int[] Plain, int[] ClosedThenAnswer, int[] ReasonedCall, int ReasoningTokens);

    private static readonly Lazy<Ids> Encoded = new(Encode);

    private static Ids Encode()
    {
        var ids = Qwen3Scripts.Encode(
            $"<think>\n{Reasoning}\n</think>\n\n{Answer}",
            Answer,
            "<think>\n\n</think>\n\n",
            $"<think>\n{Reasoning}\n</think>\n\n<tool_call>\n{{\"name\": \"get_weather\", \"arguments\": {{\"city\": \"Paris\"}}}}\n</tool_call>");
        return new Ids(ids[0], ids[1], [.. ids[2], .. ids[1]], ids[3], ids[0].Length - ids[1].Length);
    }

    private static string Saying(int[] reply, IReadOnlyDictionary<int, IReadOnlyList<int>>? byCount = null)
        => TestModels.PathOf(Qwen3Scripts.Saying(reply, byCount, contextLength: 4096));

    private static async Task<List<Turn>> Converse(string model, ChatOptions options)
    {
        using var client = new KvChat.KvChatClient(model);
        var history = new List<ChatMessage> { new(ChatRole.System, SystemPrompt) };
        var turns = new List<Turn>();
        foreach (var user in UserTurns)
        {
            history.Add(new ChatMessage(ChatRole.User, user));
            var response = await client.GetResponseAsync(history, options);
            turns.Add(TurnOf(response.Usage!));
            history.AddRange(response.Messages);
        }

        return turns;
    }

    private static Turn TurnOf(UsageDetails usage)
        => new((int)usage.InputTokenCount!, (int)usage.CachedInputTokenCount!, (int)usage.AdditionalCounts![KvChatUsage.PrefilledInputTokenCount], (int)usage.OutputTokenCount!);

    private static ChatOptions Greedy(bool reasoningOff = false) => new()
    {
        Temperature = 0,
        MaxOutputTokens = 400,
        Reasoning = reasoningOff ? new ReasoningOptions { Effort = ReasoningEffort.None } : null,
    };

    [Fact]
    public async Task CacheSurvival_Qwen3_ReasoningIsLostAtEveryUserTurnButKeptInsideAToolLoop()
    {
        var ids = Encoded.Value;
        var reasoned = await Converse(Saying(ids.Reasoned), Greedy());
        var plain = await Converse(Saying(ids.Plain), Greedy());
        var off = await Converse(Saying(ids.ClosedThenAnswer), Greedy(reasoningOff: true));
        var closedThink = ids.ClosedThenAnswer.Length - ids.Plain.Length;

        for (var t = 1; t < UserTurns.Length; t++)
        {
            // Reasoning on: the template drops the last reply's reasoning, so the cache keeps the previous prompt only.
            Assert.Equal(reasoned[t - 1].Prompt, reasoned[t].Cached);
            Assert.Equal(ids.Reasoned.Length, reasoned[t - 1].Output);

            // No reasoning: the previous prompt and the whole reply survive.
            Assert.Equal(plain[t - 1].Prompt + plain[t - 1].Output, plain[t].Cached);

            // Reasoning off: the generation prompt's empty <think></think> is not in the history either.
            Assert.Equal(off[t - 1].Prompt - closedThink, off[t].Cached);
        }

        // A tool loop: reasoning after the last user query stays in the history, so the call turn survives whole; the
        // next user query drops the reasoning of every turn before it, so the cache falls back to before the first call.
        var loop = await ToolLoop(ids);
        Assert.Equal(loop[0].Prompt + loop[0].Output, loop[1].Cached);
        Assert.Equal(loop[0].Prompt, loop[2].Cached);

        var table = new StringBuilder()
            .AppendLine(CultureInfo.InvariantCulture, $"Qwen3 tokenizer and template; reply = {ids.ReasoningTokens} reasoning tokens + {ids.Plain.Length} answer tokens.")
            .AppendLine("| turn | reasoning: prompt / cached / prefilled | no reasoning: prompt / cached / prefilled | reasoning off: prompt / cached / prefilled |")
            .AppendLine("| --- | --- | --- | --- |");
        for (var t = 0; t < UserTurns.Length; t++)
        {
            table.AppendLine(CultureInfo.InvariantCulture, $"| {t + 1} | {Cells(reasoned[t])} | {Cells(plain[t])} | {Cells(off[t])} |");
        }

        table.AppendLine().AppendLine("Tool loop with reasoning (user, call, result, answer, user):").AppendLine("| request | prompt / cached / prefilled |").AppendLine("| --- | --- |");
        string[] names = ["user asks (reply: reasoning + call)", "tool result (reply: reasoning + answer)", "next user turn"];
        for (var r = 0; r < loop.Count; r++)
        {
            table.AppendLine(CultureInfo.InvariantCulture, $"| {names[r]} | {Cells(loop[r])} |");
        }

        TestContext.Current.TestOutputHelper?.WriteLine(table.ToString());
    }

    private static string Cells(Turn t) => string.Create(CultureInfo.InvariantCulture, $"{t.Prompt} / {t.Cached} / {t.Prefilled}");

    [Description("Gets the weather in a city.")]
    private static string GetWeather([Description("The city.")] string city) => $"18C and sunny in {city}.";

    private static async Task<List<Turn>> ToolLoop(Ids ids)
    {
        // Messages before the generation prompt: system + user = 2 -> call; + assistant + tool = 4 -> answer.
        var model = Saying(ids.Reasoned, new Dictionary<int, IReadOnlyList<int>> { [2] = ids.ReasonedCall });
        using var client = new KvChat.KvChatClient(model);
        var options = Greedy();
        options.Tools = [AIFunctionFactory.Create(GetWeather, "get_weather")];
        var history = new List<ChatMessage> { new(ChatRole.System, SystemPrompt), new(ChatRole.User, "What is the weather in Paris?") };
        var turns = new List<Turn>();

        var first = await client.GetResponseAsync(history, options);
        turns.Add(TurnOf(first.Usage!));
        var call = Assert.Single(first.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>());
        Assert.Null(call.Exception);
        Assert.Single(first.Messages.SelectMany(m => m.Contents).OfType<TextReasoningContent>());
        history.AddRange(first.Messages);
        history.Add(new ChatMessage(ChatRole.Tool, [new FunctionResultContent(call.CallId, "18C and sunny in Paris.")]));

        var second = await client.GetResponseAsync(history, options);
        turns.Add(TurnOf(second.Usage!));
        history.AddRange(second.Messages);
        history.Add(new ChatMessage(ChatRole.User, "Thanks!"));

        var third = await client.GetResponseAsync(history, options);
        turns.Add(TurnOf(third.Usage!));
        return turns;
    }
}
