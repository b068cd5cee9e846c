using KvChat.Testing;
using Microsoft.ML.OnnxRuntimeGenAI;
using Xunit;

namespace KvChat.ModelKit.Tests;

/// <summary>The GGUF export runs the same network as the GenAI folder: llama.cpp's greedy tokens equal GenAI's.</summary>
public sealed class GgufExportTests
{
    private const string Conversation = "<|im_start|>system\nYou answer questions about orders and shipping.<|im_end|>\n<|im_start|>user\nWhere is my parcel? It was sent on Monday.<|im_end|>\n<|im_start|>assistant\n";

    public static TheoryData<ChatTemplateFamily> Families() => [.. Enum.GetValues<ChatTemplateFamily>()];

    [Theory]
    [MemberData(nameof(Families))]
    public void Fp32_LlamaCppGreedyTokens_EqualGenAi(ChatTemplateFamily family)
    {
        var kit = TestModels.Get(ModelKitOptions.Tiny with { TemplateFamily = family, WriteGguf = true });
        using var model = new Model(kit.Directory);
        using var tokenizer = new Tokenizer(model);
        using var llama = new LlamaCppRunner(Path.Combine(kit.Directory, ModelKit.GgufFileName));
        using var encoded = tokenizer.Encode(Render(tokenizer, kit));
        var prompt = encoded[0].ToArray();

        var genai = RawGeneration.FreshGreedy(model, prompt, 32);
        var cpp = llama.Greedy(prompt, 32);

        Assert.True(genai.Count >= 8, $"GenAI said {genai.Count} tokens");
        Assert.Equal(genai, cpp);
    }

    [Fact]
    public void Fp32_PrefillLogits_MatchGenAi()
    {
        var kit = TestModels.Get(ModelKitOptions.Tiny with { WriteGguf = true });
        using var model = new Model(kit.Directory);
        using var tokenizer = new Tokenizer(model);
        using var llama = new LlamaCppRunner(Path.Combine(kit.Directory, ModelKit.GgufFileName));
        using var encoded = tokenizer.Encode(Conversation);
        using var generator = RawGeneration.NewGenerator(model);
        generator.AppendTokens(encoded[0]);

        var expected = RawGeneration.LastLogits(generator);
        var actual = llama.PrefillLogits(encoded[0].ToArray());

        // Both sum in float32 in different orders: the difference is rounding, far below the logits' spread.
        var spread = expected.Max() - expected.Min();
        var difference = RawGeneration.MaxAbsDifference(expected, actual);
        Assert.True(difference < 1e-4f * spread * 10, $"max |diff| {difference}, logits spread {spread}");
        Assert.Equal(RawGeneration.ArgMax(expected), RawGeneration.ArgMax(actual));
    }

    [Fact]
    public void Int4_LlamaCppGreedyTokens_EqualGenAi()
    {
        var kit = TestModels.Get(ModelKitOptions.Tiny with { Precision = WeightPrecision.Int4, WriteGguf = true });
        using var model = new Model(kit.Directory);
        using var tokenizer = new Tokenizer(model);
        using var llama = new LlamaCppRunner(Path.Combine(kit.Directory, ModelKit.GgufFileName));
        using var encoded = tokenizer.Encode(Conversation);
        var prompt = encoded[0].ToArray();

        var genai = RawGeneration.FreshGreedy(model, prompt, 32);
        var cpp = llama.Greedy(prompt, 32);

        Assert.Equal(genai, cpp);
    }

    [Theory]
    [InlineData("Hello there, how are you?")]
    [InlineData("the assistant answers questions about orders, shipping and returns")]
    [InlineData("Accents: café, naïve; CJK: 你好; emoji: 👩‍💻\r\nnew line")]
    [InlineData("<|im_start|>user\nA<|im_end|>B <tool_call>{\"x\": 1}</tool_call>")]
    [InlineData("")]
    public void Tokenizer_LlamaCppIds_EqualGenAi(string text)
    {
        var kit = TestModels.Get(ModelKitOptions.Tiny with { WriteGguf = true });
        using var model = new Model(kit.Directory);
        using var tokenizer = new Tokenizer(model);
        using var llama = new LlamaCppRunner(Path.Combine(kit.Directory, ModelKit.GgufFileName));
        using var encoded = tokenizer.Encode(text);

        Assert.Equal(encoded[0].ToArray(), llama.Tokenize(text));
    }

    [Fact]
    public void Gguf_CarriesTheChatTemplateAndStopTokens()
    {
        var kit = TestModels.Get(ModelKitOptions.Tiny with { TemplateFamily = ChatTemplateFamily.Llama3, WriteGguf = true });
        using var llama = new LlamaCppRunner(Path.Combine(kit.Directory, ModelKit.GgufFileName));

        Assert.Equal(kit.ChatTemplate, llama.Weights.Metadata["tokenizer.chat_template"]);
        Assert.Equal("qwen2", llama.Weights.Metadata["general.architecture"]);
        Assert.All(kit.EosTokenIds, id => Assert.True(((LLama.Native.LLamaToken)id).IsEndOfGeneration(llama.Weights.Vocab), $"token {id}"));
    }

    [Fact]
    public void Gguf_ScriptedModel_IsRefused()
    {
        var options = ModelKitOptions.Tiny with { Script = "hi", WriteGguf = true };
        var error = Assert.Throws<ArgumentException>(() => ModelKit.Write(options, Path.Combine(TestModels.RunDirectory, "scripted-gguf")));
        Assert.Contains("GGUF", error.Message, StringComparison.Ordinal);
    }

    private static string Render(Tokenizer tokenizer, ModelKitResult kit)
    {
        const string messages = """[{"role": "system", "content": "You answer questions about orders and shipping."}, {"role": "user", "content": "Where is my parcel? It was sent on Monday."}]""";
        return tokenizer.ApplyChatTemplate(kit.ChatTemplate, messages, null, true);
    }
}
