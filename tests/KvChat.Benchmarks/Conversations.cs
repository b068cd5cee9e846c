using System.Text;
using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat.Benchmarks;

/// <summary>Deterministic texts of a given token length, made from a fixed word list.</summary>
internal sealed class TextMaker(Tokenizer tokenizer, int seed)
{
    private static readonly string[] Words =
    [
        "the", "assistant", "answers", "questions", "about", "orders", "shipping", "returns", "and", "billing", "with",
        "care", "never", "invent", "policy", "details", "customers", "may", "ask", "for", "refunds", "within", "thirty",
        "days", "of", "delivery", "items", "must", "be", "unused", "keep", "replies", "short", "polite", "clear", "when",
        "unsure", "say", "so", "escalate", "to", "a", "human", "agent", "account", "numbers", "are", "private",
    ];

    private readonly Random _random = new(seed);

    public int CountTokens(string text)
    {
        using var sequences = tokenizer.Encode(text);
        return sequences[0].Length;
    }

    /// <summary>Words appended until the text encodes to at least <paramref name="tokens"/> tokens.</summary>
    public string Make(int tokens, string prefix = "")
    {
        var builder = new StringBuilder(prefix);
        var step = Math.Max(1, tokens / 8);
        while (true)
        {
            for (var i = 0; i < step; i++)
            {
                builder.Append(Words[_random.Next(Words.Length)]).Append(i % 12 == 11 ? ". " : " ");
            }

            if (CountTokens(builder.ToString()) >= tokens)
            {
                return builder.ToString().TrimEnd();
            }

            step = Math.Max(1, step / 2);
        }
    }
}
