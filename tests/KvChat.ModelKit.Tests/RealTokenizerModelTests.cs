using System.Text.Json;
using KvChat.Testing;
using Microsoft.ML.OnnxRuntimeGenAI;
using Xunit;

namespace KvChat.ModelKit.Tests;

/// <summary>The kit over real tokenizer folders (<c>--tokenizer-from</c>): the model loads in GenAI and talks in words.</summary>
public sealed class RealTokenizerModelTests
{
    public static TheoryData<string> Families() => [.. RealTokenizers.All.Select(f => f.Name)];

    private static RealTokenizerFamily Family(string name) => RealTokenizers.All.Single(f => f.Name == name);

    [Theory]
    [MemberData(nameof(Families))]
    public void TokenizerFrom_RealFamily_LoadsWithTheFilesAndVocabulary(string name)
    {
        var family = Family(name);
        var source = RealTokenizers.FolderOf(family);
        var kit = TestModels.Get(RealTokenizers.Tiny(family));

        // The tokenizer files are the family's, byte for byte.
        Assert.Equal(File.ReadAllBytes(Path.Combine(source, "tokenizer.json")), File.ReadAllBytes(Path.Combine(kit.Directory, "tokenizer.json")));
        Assert.Equal(File.ReadAllBytes(Path.Combine(source, "tokenizer_config.json")), File.ReadAllBytes(Path.Combine(kit.Directory, "tokenizer_config.json")));

        using var tokenizerJson = JsonDocument.Parse(File.ReadAllText(Path.Combine(source, "tokenizer.json")));
        var added = tokenizerJson.RootElement.GetProperty("added_tokens").EnumerateArray()
            .ToDictionary(t => t.GetProperty("content").GetString()!, t => t.GetProperty("id").GetInt32());
        var maxId = Math.Max(added.Values.Max(), tokenizerJson.RootElement.GetProperty("model").GetProperty("vocab").EnumerateObject().Max(p => p.Value.GetInt32()));
        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(source, "tokenizer_config.json")));
        var eos = added[config.RootElement.GetProperty("eos_token").GetString()!];

        using var model = new Model(kit.Directory);
        using var tokenizer = new Tokenizer(model);
        Assert.Equal(eos, tokenizer.GetEosTokenIds()[0]);
        Assert.Equal(kit.EosTokenIds, tokenizer.GetEosTokenIds().ToArray());
        Assert.Equal(kit.ChatTemplate, config.RootElement.GetProperty("chat_template").GetString());

        // Every id, the last added token's included, is in the model's vocabulary and encodes as itself.
        var last = added.MaxBy(p => p.Value);
        using var encoded = tokenizer.Encode("a" + last.Key);
        Assert.Equal(last.Value, encoded[0][^1]);
        using var generator = RawGeneration.NewGenerator(model);
        generator.AppendTokens(encoded[0]);
        Assert.Equal(maxId + 1, RawGeneration.LastLogits(generator).Length);
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void TokenizerFrom_RealFamily_RepliesReadAsWords(string name)
    {
        var kit = TestModels.Get(RealTokenizers.Tiny(Family(name)));
        using var model = new Model(kit.Directory);
        using var tokenizer = new Tokenizer(model);
        var json = """[{"role":"user","content":"Tell me something about the sea."}]""";
        var prompt = tokenizer.ApplyChatTemplate(null, json, null, true);
        using var ids = tokenizer.Encode(prompt);

        var reply = RawGeneration.FreshGreedy(model, ids[0], 24);
        var text = tokenizer.Decode(reply.ToArray());
        var words = text.Split(' ', StringSplitOptions.RemoveEmptyEntries);

        Assert.True(words.Length >= 3, $"'{text}'");
        Assert.All(words, w => Assert.Matches("^[a-z]+$", w));
    }

    [Theory]
    [InlineData("qwen3", "qwen3")]
    [InlineData("llama3_1", "llama")]
    [InlineData("gemma3", "gemma3_text")]
    public void TokenizerFrom_RealFamily_WritesAModelTypeGenAiLoads(string name, string expected)
    {
        var kit = TestModels.Get(RealTokenizers.Tiny(Family(name)));
        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(kit.Directory, "genai_config.json")));
        Assert.Equal(expected, config.RootElement.GetProperty("model").GetProperty("type").GetString());
    }

    [Fact]
    public void TokenizerFrom_WithScript_IsRejected()
    {
        var options = RealTokenizers.Tiny(RealTokenizers.Qwen3) with { Script = "hello" };
        Assert.Throws<ArgumentException>(options.Validate);
    }

    [Fact]
    public void CommandLine_TokenizerFrom_ParsesFolderAndModelType()
    {
        var (options, directory) = ModelKitCommandLine.Parse(["--tokenizer-from", "/tmp/x", "--model-type", "qwen2", "--out", "/tmp/y"]);
        Assert.Equal("/tmp/x", options.TokenizerFrom);
        Assert.Equal("qwen2", options.ModelType);
        Assert.Equal("/tmp/y", directory);
    }
}
