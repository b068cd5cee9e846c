using KvChat.Testing;
using Microsoft.ML.OnnxRuntimeGenAI;
using Xunit;

namespace KvChat.ModelKit.Tests;

/// <summary>A scripted model over a real tokenizer (<see cref="TokenScript"/>): it says the given real ids, per message count.</summary>
public sealed class TokenScriptTests
{
    [Fact]
    public void TokenScript_Qwen3_SaysTheIdsAfterEveryGenerationPromptThenEndOfSequence()
    {
        var plain = TestModels.Get(RealTokenizers.Tiny(RealTokenizers.Qwen3));
        int[] first, second;
        int generationPrompt;
        using (var model = new Model(plain.Directory))
        using (var tokenizer = new Tokenizer(model))
        {
            first = Encode(tokenizer, "<think>\nhmm\n</think>\n\nYes.");
            second = Encode(tokenizer, "Second reply.");
            generationPrompt = Encode(tokenizer, "<|im_start|>assistant\n").Length;
        }

        var kit = TestModels.Get(RealTokenizers.Tiny(RealTokenizers.Qwen3) with
        {
            TokenScript = new TokenScript("<|im_start|>", generationPrompt, first) { ByMessageCount = new Dictionary<int, IReadOnlyList<int>> { [4] = second } },
        });
        Assert.Equal(first, kit.ScriptTokens(1));
        Assert.Equal(second, kit.ScriptTokens(4));
        using var scripted = new Model(kit.Directory);
        using var scriptedTokenizer = new Tokenizer(scripted);
        Assert.Equal([.. first, kit.EosTokenIds[0]], Reply(scripted, scriptedTokenizer, """[{"role":"user","content":"Hi"}]""", first.Length + 1));
        Assert.Equal([.. second, kit.EosTokenIds[0]], Reply(scripted, scriptedTokenizer,
            """[{"role":"system","content":"S"},{"role":"user","content":"Hi"},{"role":"assistant","content":"Yes."},{"role":"user","content":"Again"}]""",
            second.Length + 1));
    }

    [Fact]
    public void TokenScript_WithoutRealTokenizer_IsRejected()
    {
        var options = ModelKitOptions.Tiny with { TokenScript = new TokenScript("<|im_start|>", 3, [1, 2]) };
        Assert.Throws<ArgumentException>(options.Validate);
    }

    private static int[] Encode(Tokenizer tokenizer, string text)
    {
        using var sequences = tokenizer.Encode(text);
        return sequences[0].ToArray();
    }

    /// <summary>The greedy ids after the rendered prompt, end-of-sequence included when it comes.</summary>
    private static int[] Reply(Model model, Tokenizer tokenizer, string messages, int count)
    {
        var prompt = Encode(tokenizer, tokenizer.ApplyChatTemplate(null, messages, null, true));
        using var generator = RawGeneration.NewGenerator(model);
        generator.AppendTokens(prompt);
        var ids = new List<int>();
        while (ids.Count < count)
        {
            var next = RawGeneration.ArgMax(RawGeneration.LastLogits(generator));
            ids.Add(next);
            generator.AppendTokens([next]);
        }

        return [.. ids];
    }
}
