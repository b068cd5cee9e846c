using KvChat.Testing;
using Microsoft.ML.OnnxRuntimeGenAI;
using Xunit;

namespace KvChat.ModelKit.Tests;

/// <summary>
/// The raw GenAI facts the client builds on: a generator kept alive across turns, with the pending token re-fed, gives
/// the logits of a fresh generator that prefills the whole sequence.
/// </summary>
public sealed class KvContinuationTests
{
    private const float Tolerance = 1e-4f;

    public static TheoryData<ModelVariant> Variants() => [ModelVariant.GroupQueryAttention, ModelVariant.Concat];

    /// <summary>A model that never says end-of-sequence, so every generated token is a pending one.</summary>
    private static Model Load(ModelVariant variant) => new(TestModels.PathOf(ModelKitOptions.Tiny with { Variant = variant, EndOfTurnBias = -100 }));

    private static int[] Encode(Tokenizer tokenizer, string text)
    {
        using var sequences = tokenizer.Encode(text);
        return sequences[0].ToArray();
    }

    private static float[] FreshLogits(Model model, ReadOnlySpan<int> tokens)
    {
        using var fresh = RawGeneration.NewGenerator(model);
        fresh.AppendTokens(tokens);
        return RawGeneration.LastLogits(fresh);
    }

    /// <summary>Generates greedily without stopping on EOS, so the last token is pending (no KV yet).</summary>
    private static void GenerateWithPendingToken(Generator generator, int count)
    {
        for (var i = 0; i < count; i++)
        {
            generator.GenerateNextToken();
        }
    }

    /// <summary>
    /// Appends the next turn after a reply that stopped on anything but EOS: re-feed the pending token. A non-shared
    /// (Concat) KV cache cannot be rewound to its own length, so it rewinds one token further and re-feeds two.
    /// </summary>
    private static void AppendAfterPending(Generator generator, ModelVariant variant, ReadOnlySpan<int> newTokens)
    {
        var count = (int)generator.TokenCount();
        var back = variant == ModelVariant.GroupQueryAttention ? 1 : 2;
        var refed = generator.GetSequence(0)[(count - back)..].ToArray();
        generator.RewindTo((ulong)(count - back));
        generator.AppendTokens([.. refed, .. newTokens]);
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public void KeptAliveGenerator_PendingTokenRefed_EqualsFreshPrefill(ModelVariant variant)
    {
        using var model = Load(variant);
        using var tokenizer = new Tokenizer(model);
        using var generator = RawGeneration.NewGenerator(model);
        generator.AppendTokens(Encode(tokenizer, "<|im_start|>system\nYou are a test.<|im_end|>\n<|im_start|>user\nFirst question<|im_end|>\n<|im_start|>assistant\n"));

        for (var turn = 0; turn < 4; turn++)
        {
            GenerateWithPendingToken(generator, 5 + turn);
            AppendAfterPending(generator, variant, Encode(tokenizer, $"<|im_end|>\n<|im_start|>user\nQuestion {turn}, a little longer<|im_end|>\n<|im_start|>assistant\n"));

            var kept = RawGeneration.LastLogits(generator);
            var full = generator.GetSequence(0).ToArray();
            var fresh = FreshLogits(model, full);
            Assert.True(RawGeneration.MaxAbsDifference(kept, fresh) < Tolerance, $"turn {turn}: {RawGeneration.MaxAbsDifference(kept, fresh)}");
        }
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public void KeptAliveGenerator_RewoundIntoHistory_EqualsFreshPrefill(ModelVariant variant)
    {
        using var model = Load(variant);
        using var tokenizer = new Tokenizer(model);
        using var generator = RawGeneration.NewGenerator(model);
        var prompt = Encode(tokenizer, "<|im_start|>user\nA prompt that will be edited near its end<|im_end|>\n<|im_start|>assistant\n");
        generator.AppendTokens(prompt);
        GenerateWithPendingToken(generator, 6);

        foreach (var keep in new[] { prompt.Length - 8, 3, 1 })
        {
            generator.RewindTo((ulong)keep);
            var edit = Encode(tokenizer, $"edited at {keep}<|im_end|>\n<|im_start|>assistant\n");
            generator.AppendTokens(edit);
            var expected = prompt[..keep].Concat(edit).ToArray();
            Assert.Equal(expected, generator.GetSequence(0).ToArray());
            Assert.True(RawGeneration.MaxAbsDifference(RawGeneration.LastLogits(generator), FreshLogits(model, expected)) < Tolerance);
        }
    }

    [Fact]
    public void KeptAliveGenerator_AfterEos_AppendsDirectlyAndEqualsFreshPrefill()
    {
        var kit = TestModels.Get(ModelKitOptions.Tiny with { Script = "Done." });
        using var model = new Model(kit.Directory);
        using var tokenizer = new Tokenizer(model);
        using var generator = RawGeneration.NewGenerator(model);
        generator.AppendTokens(Encode(tokenizer, "<|im_start|>user\nGo<|im_end|>\n<|im_start|>assistant\n"));
        while (!generator.IsDone())
        {
            var before = generator.TokenCount();
            generator.GenerateNextToken();
            if (generator.TokenCount() == before)
            {
                break;
            }
        }

        generator.AppendTokens(Encode(tokenizer, "<|im_end|>\n<|im_start|>user\nAgain<|im_end|>\n<|im_start|>assistant\n"));
        var full = generator.GetSequence(0).ToArray();
        Assert.DoesNotContain(kit.EosTokenIds[1], full);
        Assert.True(RawGeneration.MaxAbsDifference(RawGeneration.LastLogits(generator), FreshLogits(model, full)) < Tolerance);
    }

    [Fact]
    public void SharedBufferGenerator_PendingTokenIgnored_IsSilentlyWrong()
    {
        // The trap the client must avoid: appending the next turn right after a non-EOS stop leaves a hole in the KV cache.
        using var model = Load(ModelVariant.GroupQueryAttention);
        using var tokenizer = new Tokenizer(model);
        using var generator = RawGeneration.NewGenerator(model);
        generator.AppendTokens(Encode(tokenizer, "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"));
        GenerateWithPendingToken(generator, 4);
        generator.AppendTokens(Encode(tokenizer, "<|im_end|>\n<|im_start|>user\nNext<|im_end|>\n<|im_start|>assistant\n"));

        var full = generator.GetSequence(0).ToArray();
        Assert.True(RawGeneration.MaxAbsDifference(RawGeneration.LastLogits(generator), FreshLogits(model, full)) > 1e-3f);
    }

    [Fact]
    public void ConcatGenerator_RewindToItsKvLength_Throws()
    {
        // Why the non-shared path rewinds by two: after a pending token the KV holds count - 1 positions, and a Concat
        // KV cache refuses a rewind to its own length.
        using var model = Load(ModelVariant.Concat);
        using var tokenizer = new Tokenizer(model);
        using var generator = RawGeneration.NewGenerator(model);
        generator.AppendTokens(Encode(tokenizer, "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"));
        GenerateWithPendingToken(generator, 3);

        Assert.Throws<OnnxRuntimeGenAIException>(() => generator.RewindTo(generator.TokenCount() - 1));
    }
}
