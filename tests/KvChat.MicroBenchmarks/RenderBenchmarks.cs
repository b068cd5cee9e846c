using System.Text;
using BenchmarkDotNet.Attributes;
using Microsoft.Extensions.AI;

namespace KvChat.MicroBenchmarks;

/// <summary>
/// Rendering and tokenizing one turn's prompt (<see cref="RenderBenchmarkBase"/>): a system prompt of about 500 tokens
/// and 10 user messages with the 9 replies between them (about 1,250 tokens), on the bench model's tokenizer
/// (byte-level BPE, vocabulary 32000, ChatML template).
/// </summary>
[MemoryDiagnoser]
public class RenderBenchmarks : RenderBenchmarkBase
{
    private static readonly string[] Words =
    [
        "the", "assistant", "answers", "questions", "about", "orders", "shipping", "returns", "and", "billing", "with",
        "care", "never", "invent", "policy", "details", "customers", "may", "ask", "for", "refunds", "within", "thirty",
        "days", "of", "delivery", "items", "must", "be", "unused", "keep", "replies", "short", "polite", "clear", "when",
        "unsure", "say", "so", "escalate", "to", "a", "human", "agent", "account", "numbers", "are", "private",
    ];

    [GlobalSetup]
    public void Setup() => Open("bench", BenchModels.PathOf(BenchModels.Bench), () =>
    {
        var random = new Random(11);
        List<ChatMessage> messages = [new(ChatRole.System, MakeText(random, 500))];
        for (var turn = 0; turn < 10; turn++)
        {
            if (turn > 0)
            {
                messages.Add(new ChatMessage(ChatRole.Assistant, MakeText(random, 32)));
            }

            messages.Add(new ChatMessage(ChatRole.User, MakeText(random, 40)));
        }

        return messages;
    });

    private string MakeText(Random random, int tokens)
    {
        var builder = new StringBuilder();
        var step = Math.Max(1, tokens / 8);
        while (true)
        {
            for (var i = 0; i < step; i++)
            {
#pragma warning disable CA5394 // Benchmark text, not a secret.
                builder.Append(Words[random.Next(Words.Length)]).Append(i % 12 == 11 ? ". " : " ");
#pragma warning restore CA5394
            }

            if (CountTokens(builder.ToString()) >= tokens)
            {
                return builder.ToString().TrimEnd();
            }

            step = Math.Max(1, step / 2);
        }
    }
}
