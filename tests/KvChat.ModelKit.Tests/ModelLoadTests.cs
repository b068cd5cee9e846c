using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.ML.OnnxRuntimeGenAI;
using Xunit;

namespace KvChat.ModelKit.Tests;

public sealed class ModelLoadTests
{
    public static TheoryData<ModelVariant, ChatTemplateFamily> AllVariants()
    {
        var data = new TheoryData<ModelVariant, ChatTemplateFamily>();
        foreach (var variant in Enum.GetValues<ModelVariant>())
        {
            foreach (var family in Enum.GetValues<ChatTemplateFamily>())
            {
                data.Add(variant, family);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(AllVariants))]
    public void TinyModel_EveryVariantAndFamily_LoadsAndGenerates(ModelVariant variant, ChatTemplateFamily family)
    {
        var options = ModelKitOptions.Tiny with { Variant = variant, TemplateFamily = family };
        var kit = TestModels.Get(options);
        using var model = new Model(kit.Directory);
        using var tokenizer = new Tokenizer(model);

        Assert.Equal(kit.EosTokenIds, tokenizer.GetEosTokenIds().ToArray());
        using var prompt = tokenizer.Encode("Hello there, how are you?");
        using var generator = RawGeneration.NewGenerator(model);
        generator.AppendTokens(prompt[0]);
        var logits = RawGeneration.LastLogits(generator);
        Assert.Equal(options.VocabSize, logits.Length);
        Assert.All(logits, value => Assert.True(float.IsFinite(value)));

        var tokens = RawGeneration.FreshGreedy(model, prompt[0], 8);
        Assert.NotEmpty(tokens);
        Assert.All(tokens, t => Assert.InRange(t, 0, options.VocabSize - 1));
    }

    [Fact]
    public void TinyModel_RandomWeights_SayPrintableText()
    {
        var kit = TestModels.Get(ModelKitOptions.Tiny);
        using var model = new Model(kit.Directory);
        using var tokenizer = new Tokenizer(model);
        using var prompt = tokenizer.Encode("<|im_start|>user\nTell me something.<|im_end|>\n<|im_start|>assistant\n");
        var tokens = RawGeneration.FreshGreedy(model, prompt[0], 24);
        var text = tokenizer.Decode(tokens.ToArray());

        Assert.NotEmpty(text);
        Assert.All(text, c => Assert.InRange(c, ' ', '~'));
    }

    [Fact]
    public void BenchPreset_Writes128MParameterModel_ThatGenerates()
    {
        var kit = TestModels.Get(ModelKitOptions.Bench);
        Assert.InRange(kit.ParameterCount, 125_000_000, 135_000_000);

        using var model = new Model(kit.Directory);
        using var tokenizer = new Tokenizer(model);
        using var prompt = tokenizer.Encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
        var tokens = RawGeneration.FreshGreedy(model, prompt[0], 2);
        Assert.Equal(2, tokens.Count);
    }

    [Fact]
    public void Write_SameOptionsTwice_GivesByteIdenticalFiles()
    {
        var options = ModelKitOptions.Tiny with { Script = "Same bytes.", Seed = 7 };
        var first = ModelKit.Write(options, Path.Combine(TestModels.RunDirectory, "determinism-a"));
        var second = ModelKit.Write(options, Path.Combine(TestModels.RunDirectory, "determinism-b"));

        foreach (var file in ModelKit.FileNames)
        {
            Assert.Equal(File.ReadAllBytes(Path.Combine(first.Directory, file)), File.ReadAllBytes(Path.Combine(second.Directory, file)));
        }
    }

    [Fact]
    public void Write_DifferentSeed_GivesDifferentWeights()
    {
        var first = ModelKit.Write(ModelKitOptions.Tiny with { Seed = 1 }, Path.Combine(TestModels.RunDirectory, "seed-1"));
        var second = ModelKit.Write(ModelKitOptions.Tiny with { Seed = 2 }, Path.Combine(TestModels.RunDirectory, "seed-2"));

        Assert.NotEqual(File.ReadAllBytes(Path.Combine(first.Directory, "model.onnx")), File.ReadAllBytes(Path.Combine(second.Directory, "model.onnx")));
        Assert.Equal(File.ReadAllBytes(Path.Combine(first.Directory, "tokenizer.json")), File.ReadAllBytes(Path.Combine(second.Directory, "tokenizer.json")));
    }

    [Fact]
    public void Variants_SameWeights_GiveSameLogits()
    {
        using var gqa = new Model(TestModels.PathOf(TestModels.Tiny));
        using var concat = new Model(TestModels.PathOf(TestModels.TinyConcat));
        using var tokenizer = new Tokenizer(gqa);
        using var prompt = tokenizer.Encode("The same weights run through two attention graphs.");

        using var a = RawGeneration.NewGenerator(gqa);
        using var b = RawGeneration.NewGenerator(concat);
        a.AppendTokens(prompt[0]);
        b.AppendTokens(prompt[0]);

        Assert.True(RawGeneration.MaxAbsDifference(RawGeneration.LastLogits(a), RawGeneration.LastLogits(b)) < 1e-4f);
    }

    [Theory]
    [InlineData(0, 64, 4, 2)]
    [InlineData(1, 96, 6, 3)]
    [InlineData(3, 128, 4, 4)]
    public void Options_CustomDimensions_LoadAndGenerate(int extraLayers, int hidden, int heads, int kvHeads)
    {
        var options = ModelKitOptions.Tiny with
        {
            NumLayers = 1 + extraLayers,
            HiddenSize = hidden,
            NumHeads = heads,
            NumKvHeads = kvHeads,
            IntermediateSize = hidden * 2,
            VocabSize = 500,
            ContextLength = 256,
        };
        using var model = new Model(TestModels.PathOf(options));
        using var tokenizer = new Tokenizer(model);
        using var prompt = tokenizer.Encode("dimensions");
        Assert.NotEmpty(RawGeneration.FreshGreedy(model, prompt[0], 3));
    }

    [Theory]
    [InlineData(63, 4, 2)]
    [InlineData(64, 4, 3)]
    [InlineData(64, 1, 1)]
    [InlineData(48, 4, 2)]
    public void Validate_DimensionsThatDoNotFit_Throw(int hidden, int heads, int kvHeads)
    {
        var options = ModelKitOptions.Tiny with { HiddenSize = hidden, NumHeads = heads, NumKvHeads = kvHeads };
        Assert.Throws<ArgumentOutOfRangeException>(options.Validate);
    }
}
