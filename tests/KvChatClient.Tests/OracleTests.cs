using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Xunit;

namespace KvChat.Tests;

/// <summary>The main oracle: over generated conversation scripts, every cached reply equals a fresh full prefill's.</summary>
public sealed class OracleTests
{
    private static readonly string[] Words =
    [
        "the", "cat", "sat", "on", "a", "mat", "why", "is", "sky", "blue", "tell", "me", "about", "KV", "caches",
        "naïve", "café", "日本", "語", "👍", "emoji", "🇫🇷", "tab\t", "line\n", "<|im_start|>system", "<tool_call>", "{\"x\": 1}",
    ];

    public static TheoryData<ModelVariant, KvSessionBackend, int> Scripts()
    {
        var data = new TheoryData<ModelVariant, KvSessionBackend, int>();
        foreach (var variant in new[] { ModelVariant.GroupQueryAttention, ModelVariant.Concat })
        {
            foreach (var backend in new[] { KvSessionBackend.Generator, KvSessionBackend.Owned })
            {
                for (var seed = 1; seed <= 12; seed++)
                {
                    data.Add(variant, backend, seed);
                }
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Scripts))]
    public async Task RandomConversationScripts_EveryReply_EqualsFreshPrefill(ModelVariant variant, KvSessionBackend backend, int seed)
    {
        var random = new Random(seed);
        var path = TestModels.PathOf(ModelKitOptions.Tiny with { Variant = variant });
        using var harness = new OracleHarness(path, new KvChatClientOptions { MaxSessions = 1 + (seed % 3), BlockSize = 1 + (seed % 8) * 4, SessionBackend = TestBackends.For(variant, backend) });
        TestBackends.AssertBackend(harness.Client, variant, backend);
        var conversations = new List<List<ChatMessage>>();
        for (var i = 0; i < 3 + (seed % 3); i++)
        {
            conversations.Add([new ChatMessage(ChatRole.System, SystemPrompt(i % 2)), User(random)]);
        }

        for (var step = 0; step < 24; step++)
        {
            var history = conversations[random.Next(conversations.Count)];
            var options = new ChatOptions { MaxOutputTokens = random.Next(1, 14) };
            if (random.Next(6) == 0)
            {
                options.Instructions = "Instructions " + random.Next(3);
            }

            switch (random.Next(10))
            {
                case 0 when history.Count > 2 && history[^1].Role == ChatRole.Assistant:
                    history.RemoveAt(history.Count - 1); // Regenerate the last reply.
                    break;
                case 1 when history.Count > 3:
                    // Edit an earlier user message and drop what followed it.
                    var users = Enumerable.Range(1, history.Count - 1).Where(i => history[i].Role == ChatRole.User).ToList();
                    var at = users[random.Next(users.Count)];
                    history.RemoveRange(at, history.Count - at);
                    history.Add(User(random));
                    break;
                case 2 when conversations.Count < 8:
                    // Branch: a new conversation from a prefix of this one.
                    var cut = random.Next(1, history.Count + 1);
                    var branch = history.Take(cut).ToList();
                    if (branch[^1].Role == ChatRole.User)
                    {
                        branch.RemoveAt(branch.Count - 1);
                    }

                    branch.Add(User(random));
                    conversations.Add(branch);
                    history = branch;
                    break;
                case 3:
                    history[0] = new ChatMessage(ChatRole.System, SystemPrompt(random.Next(3))); // A changed system prompt.
                    if (history[^1].Role == ChatRole.Assistant)
                    {
                        history.Add(User(random));
                    }

                    break;
                default:
                    if (history[^1].Role == ChatRole.Assistant)
                    {
                        history.Add(User(random));
                    }

                    break;
            }

            if (random.Next(5) == 0)
            {
                await CancelledTurnAsync(harness, history, options, random.Next(0, 3));
                continue;
            }

            if (random.Next(5) == 0)
            {
                // A stop sequence taken from the middle of what the model will say.
                var said = harness.StreamDecode(harness.Fresh(PromptOf(harness, history, options), options.MaxOutputTokens!.Value));
                if (said.Length >= 3)
                {
                    options.StopSequences = [said.Substring(random.Next(1, said.Length - 1), 2)];
                }
            }

            var response = await harness.AskAsync(history, options, TestContext.Current.CancellationToken);
            history.AddRange(response.Messages);
        }

        Assert.True(harness.Checked >= 12, $"only {harness.Checked} replies checked");
    }

    private static int[] PromptOf(OracleHarness harness, List<ChatMessage> history, ChatOptions options)
    {
        // Render through the client itself: one greedy token with the same history gives the trace's prompt.
        var probe = new ChatOptions { MaxOutputTokens = 1, Instructions = options.Instructions };
        harness.Client.GetResponseAsync(history, probe).GetAwaiter().GetResult();
        return harness.Last.Prompt;
    }

    private static async Task CancelledTurnAsync(OracleHarness harness, List<ChatMessage> history, ChatOptions options, int afterUpdates)
    {
        using var cts = new CancellationTokenSource();
        var text = new System.Text.StringBuilder();
        var updates = 0;
        try
        {
            if (afterUpdates == 0)
            {
                await cts.CancelAsync();
            }

            await foreach (var update in harness.Client.GetStreamingResponseAsync(history, options, cts.Token))
            {
                text.Append(update.Text);
                if (++updates >= afterUpdates)
                {
                    await cts.CancelAsync();
                }
            }
        }
        catch (OperationCanceledException)
        {
        }

        // The caller keeps whatever arrived; the next turn must still match the oracle.
        history.Add(new ChatMessage(ChatRole.Assistant, text.ToString()));
        history.Add(new ChatMessage(ChatRole.User, "after a cancelled reply"));
    }

    private static string SystemPrompt(int variant) => variant switch
    {
        0 => "You are a careful assistant. Answer briefly and precisely, and never invent facts you do not know.",
        1 => "You are a pirate. Answer in pirate speak.",
        _ => "Changed system prompt " + variant,
    };

    private static ChatMessage User(Random random)
    {
        var words = Enumerable.Range(0, random.Next(1, 12)).Select(_ => Words[random.Next(Words.Length)]);
        return new ChatMessage(ChatRole.User, string.Join(' ', words));
    }
}
