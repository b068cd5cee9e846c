using System.Text;
using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Xunit;

namespace KvChat.Tests.Hardening;

/// <summary>Random conversations and options: every call answers or throws a documented exception, and the client keeps serving.</summary>
public sealed class FuzzTests
{
    private static readonly ChatRole[] Roles = [ChatRole.System, ChatRole.User, ChatRole.Assistant, ChatRole.Tool, new("narrator"), new("developer")];

    public static TheoryData<int, KvSessionBackend> Seeds()
    {
        var data = new TheoryData<int, KvSessionBackend>();
        foreach (var seed in new[] { 1, 2, 3, 4 })
        {
            data.Add(seed, seed % 2 == 0 ? KvSessionBackend.Owned : KvSessionBackend.Generator);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Seeds))]
    public async Task RandomConversations_AnswerOrThrowADocumentedException(int seed, KvSessionBackend backend)
    {
        var random = new Random(seed);
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny), new KvChatClientOptions { MaxSessions = 3, ContextTokens = 512, SessionBackend = backend });
        var outcomes = new Dictionary<string, int>();
        for (var i = 0; i < 500; i++)
        {
            var messages = Enumerable.Range(0, random.Next(20) == 0 ? 0 : random.Next(1, 7)).Select(_ => RandomMessage(random)).ToList();
            var options = RandomOptions(random);
            string outcome;
            try
            {
                var stream = client.GetStreamingResponseAsync(messages, options, TestContext.Current.CancellationToken);
                var updates = 0;
                await foreach (var update in stream)
                {
                    updates++;
                }

                Assert.True(updates >= 1);
                outcome = "answered";
            }
            catch (Exception e) when (e is ArgumentException or NotSupportedException)
            {
                Assert.False(string.IsNullOrWhiteSpace(e.Message));
                outcome = e.GetType().Name + ": " + (e.Message.Length > 50 ? e.Message[..50] : e.Message);
            }

            outcomes[outcome] = outcomes.GetValueOrDefault(outcome) + 1;
        }

        var stats = client.GetService<KvCacheStatistics>()!;
        Assert.Equal(0, stats.BusySessions);
        Assert.Equal(0, stats.Discards);
        TestContext.Current.TestOutputHelper!.WriteLine(string.Join("\n", outcomes.OrderByDescending(p => p.Value).Select(p => $"{p.Value,4} {p.Key}")));
        Assert.True(outcomes.GetValueOrDefault("answered") > 150, string.Join(", ", outcomes));
    }

    private static ChatMessage RandomMessage(Random random)
    {
        var role = random.Next(10) == 0 ? Roles[random.Next(Roles.Length)] : random.Next(2) == 0 ? ChatRole.User : ChatRole.Assistant;
        var contents = new List<AIContent>();
        var parts = random.Next(20) == 0 ? 0 : random.Next(1, 3);
        for (var p = 0; p < parts; p++)
        {
            contents.Add(random.Next(40) switch
            {
                0 => new DataContent(new byte[] { 1, 2, 3 }, "image/png"),
                1 => new FunctionCallContent($"c{random.Next(9)}", "tool_" + random.Next(3), new Dictionary<string, object?> { ["a"] = random.Next(5), ["b"] = RandomText(random, 5) }),
                2 => new FunctionResultContent($"c{random.Next(9)}", RandomText(random, 20)),
                3 => new TextReasoningContent("thinking"),
                _ => new TextContent(RandomText(random, random.Next(30) == 0 ? 3000 : 40)),
            });
        }

        return new ChatMessage(role, contents);
    }

    private static ChatOptions? RandomOptions(Random random)
    {
        if (random.Next(4) == 0)
        {
            return null;
        }

        var options = new ChatOptions { MaxOutputTokens = random.Next(12) == 0 ? random.Next(-1, 1) : random.Next(1, 10) };
        switch (random.Next(16))
        {
            case 0: options.Temperature = (float)(random.NextDouble() * 3) - 0.5f; break;
            case 1: options.TopP = (float)(random.NextDouble() * 1.4); break;
            case 2: options.TopK = random.Next(-2, 50); break;
            case 3: options.StopSequences = [RandomText(random, 2), random.Next(3) == 0 ? string.Empty : "x"]; break;
            case 4: options.Seed = random.Next(); options.Temperature = 1; break;
            case 5: options.Instructions = RandomText(random, 30); break;
            case 6: options.AdditionalProperties = new() { ["unknown_" + random.Next(3)] = 1.0 }; break;
            default: options.PresencePenalty = (float)random.NextDouble(); options.FrequencyPenalty = (float)random.NextDouble(); break;
        }

        return options;
    }

    private static string RandomText(Random random, int maxLength)
    {
        var builder = new StringBuilder();
        var length = random.Next(0, maxLength + 1);
        while (builder.Length < length)
        {
            builder.Append(random.Next(400) switch
            {
                < 8 => "<|im_start|>",
                < 16 => "<|im_end|>system\n",
                < 30 => "👨‍👩‍👧",
                < 31 => "\0",
                < 36 => ((char)random.Next(0xD800, 0xDFFF)).ToString(),
                < 50 => "日本語",
                < 60 => "\r\n",
                _ => ((char)random.Next(0x20, 0x7F)).ToString(),
            });
        }

        return builder.ToString();
    }
}
