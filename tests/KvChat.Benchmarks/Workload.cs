using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat.Benchmarks;

/// <summary>A deterministic conversation script run the same way through every way.</summary>
internal sealed class Workload(int number, string title, bool manyConversations, Func<IWay, Task<List<TurnResult>>> run)
{
    public int Number { get; } = number;

    public string Title { get; } = title;

    /// <summary>Whether the workload holds several conversations at once (KvChatClient also runs with a session each).</summary>
    public bool ManyConversations { get; } = manyConversations;

    public Task<List<TurnResult>> RunAsync(IWay way) => run(way);

    public static IEnumerable<Workload> All(BenchSettings s, string system, TextMaker text)
    {
        // Texts are made once, so every way sees the same words.
        var users = Enumerable.Range(0, 64).Select(i => text.Make(s.UserTokens, $"Question {i}: ")).ToArray();
        var toolResults = Enumerable.Range(0, 8).Select(i => text.Make(12, $"{{\"result\": {i}, \"note\": \"")).ToArray();

        yield return new Workload(1, "one conversation, long system prompt, 8 turns", false, async way =>
        {
            using var conversation = way.Start(system);
            var turns = new List<TurnResult>();
            for (var turn = 0; turn < 8; turn++)
            {
                turns.Add(await TurnAsync(conversation, users[turn], s.ReplyTokens).ConfigureAwait(false));
            }

            return turns;
        });

        yield return new Workload(2, "12 conversations sharing the system prompt, round-robin, 3 turns each", true, async way =>
        {
            var conversations = Enumerable.Range(0, 12).Select(_ => way.Start(system)).ToList();
            try
            {
                var turns = new List<TurnResult>();
                for (var round = 0; round < 3; round++)
                {
                    for (var c = 0; c < conversations.Count; c++)
                    {
                        turns.Add(await TurnAsync(conversations[c], users[(round * 12) + c], s.ReplyTokens).ConfigureAwait(false));
                    }
                }

                return turns;
            }
            finally
            {
                conversations.ForEach(c => c.Dispose());
            }
        });

        yield return new Workload(3, "agent loop: 4 tool results (tool-role messages), then an answer", false, async way =>
        {
            using var conversation = way.Start(system);
            var turns = new List<TurnResult> { await TurnAsync(conversation, users[40], s.ReplyTokens).ConfigureAwait(false) };
            for (var step = 0; step < 4; step++)
            {
                conversation.History.Add(new ChatMessage(ChatRole.Tool, toolResults[step]));
                turns.Add(await ReplyAsync(conversation, s.ReplyTokens).ConfigureAwait(false));
            }

            return turns;
        });

        yield return new Workload(4, "edit and regenerate: 4 turns, then edit the last message, regenerate, edit the second message", false, async way =>
        {
            using var conversation = way.Start(system);
            var turns = new List<TurnResult>();
            for (var turn = 0; turn < 4; turn++)
            {
                turns.Add(await TurnAsync(conversation, users[50 + turn], s.ReplyTokens).ConfigureAwait(false));
            }

            var h = conversation.History;

            // Change the last user message and answer again.
            h.RemoveAt(h.Count - 1);
            h[^1] = new ChatMessage(ChatRole.User, users[60]);
            conversation.HistoryRewritten();
            turns.Add(await ReplyAsync(conversation, s.ReplyTokens).ConfigureAwait(false));

            // Regenerate the last reply.
            h.RemoveAt(h.Count - 1);
            conversation.HistoryRewritten();
            turns.Add(await ReplyAsync(conversation, s.ReplyTokens).ConfigureAwait(false));

            // Edit the second user message: what followed it is gone.
            var second = h.FindIndex(2, m => m.Role == ChatRole.User);
            h.RemoveRange(second, h.Count - second);
            h.Add(new ChatMessage(ChatRole.User, users[61]));
            conversation.HistoryRewritten();
            turns.Add(await ReplyAsync(conversation, s.ReplyTokens).ConfigureAwait(false));
            return turns;
        });

        yield return new Workload(5, "agent loop replayed on the random model: the scripted loop's three tool calls and results as history, a reply at each step", false, async way =>
        {
            using var conversation = way.Start(system);
            var h = conversation.History;
            var turns = new List<TurnResult> { await TurnAsync(conversation, AgentLoop.Question, s.ReplyTokens).ConfigureAwait(false) };
            foreach (var (call, result) in AgentLoop.Steps())
            {
                // The model's reply is replaced by the call the scripted model makes, then the tool's result follows.
                h.RemoveAt(h.Count - 1);
                h.Add(new ChatMessage(ChatRole.Assistant, [call]));
                h.Add(new ChatMessage(ChatRole.Tool, [result]));
                conversation.HistoryRewritten();
                turns.Add(await ReplyAsync(conversation, s.ReplyTokens).ConfigureAwait(false));
            }

            return turns;
        });
    }

    private static Task<TurnResult> TurnAsync(IConversation conversation, string user, int replyTokens)
    {
        conversation.History.Add(new ChatMessage(ChatRole.User, user));
        return ReplyAsync(conversation, replyTokens);
    }

    private static async Task<TurnResult> ReplyAsync(IConversation conversation, int replyTokens)
    {
        var before = conversation.History.ToList();
        var result = await conversation.ReplyAsync(replyTokens).ConfigureAwait(false);
        return result with { HistoryBefore = before };
    }
}

/// <summary>Creates the ways a workload is run through.</summary>
internal static class WayFactory
{
    public static IEnumerable<string> Names(Workload workload, bool peer, bool realShape)
    {
        if (realShape)
        {
            // The side-by-side ways only: GenAI's own clients re-prefill or mis-cache exactly as on the bench model. On
            // int4 shapes KvChatClient decodes two rows a step (RowExactness); kvchat-recompute is the other way, one-row
            // steps with each reply prefilled again by the next turn.
            return peer ? ["kvchat", "kvchat-recompute", "ideal", "llama-stateless", "llama-interactive", "llama-ideal"] : ["kvchat", "kvchat-recompute", "ideal"];
        }

        IEnumerable<string> names = workload.ManyConversations
            ? ["genai", "genai-caching", "kvchat", "kvchat-generator", "kvchat-session-each", "ideal"]
            : workload.Number == 1 ? ["genai", "genai-caching", "kvchat", "kvchat-generator", "kvchat-no-memo", "ideal"] : ["genai", "genai-caching", "kvchat", "kvchat-generator", "ideal"];
        return peer && BenchmarkApp.PeerWorkloads.Contains(workload.Number) ? names.Concat(["llama-stateless", "llama-interactive", "llama-ideal"]) : names;
    }

    public static IWay Create(string name, Model model, string modelPath, int context, Workload workload, LlamaPeer? peer)
    {
        switch (name)
        {
            case "llama-stateless":
                return new LlamaChatClientWay(peer!, interactive: false);
            case "llama-interactive":
                return new LlamaChatClientWay(peer!, interactive: true);
            case "llama-ideal":
                return new LlamaIdealWay(peer!);
            case "genai":
                return new ChatClientWay("GenAI client (stateless)", new OnnxRuntimeGenAIChatClient(model, ownsModel: false), deltas: false);
            case "genai-caching":
                return new ChatClientWay(
                    "GenAI client (EnableCaching)",
                    new OnnxRuntimeGenAIChatClient(model, ownsModel: false, new OnnxRuntimeGenAIChatClientOptions { EnableCaching = true }),
                    deltas: true);
            case "kvchat":
            case "kvchat-session-each":
            case "kvchat-no-memo":
            case "kvchat-generator":
            case "kvchat-recompute":
                var options = new KvChatClientOptions();
                if (name == "kvchat-recompute")
                {
                    options.TwoRowDecodeSteps = false;
                }

                if (name == "kvchat-generator")
                {
                    options.SessionBackend = KvSessionBackend.Generator;
                }

                if (name == "kvchat-session-each")
                {
                    options.MaxSessions = 12;
                }

                if (name == "kvchat-no-memo")
                {
                    options.ReplyMemoCapacity = 0;
                }

                var client = new KvChatClient(model, modelPath, options);
                ReplyTrace? last = null;
                client.Trace = trace => last = trace;
                return new ChatClientWay(name, client, deltas: false, () => last);
            case "ideal":
                return new IdealWay(model, modelPath, context);
            default:
                throw new ArgumentException($"Unknown way '{name}'.", nameof(name));
        }
    }
}
