using System.Text;
using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.ML.OnnxRuntimeGenAI;
using Xunit;

namespace KvChat.ModelKit.Tests;

public sealed class TokenizerTests
{
    public static TheoryData<string> Texts() =>
    [
        string.Empty,
        "Hello world, the cat sat on the mat.",
        "héllo wörld — naïve café",
        "日本語のテキストと中文文本",
        "family 👨‍👩‍👧‍👦 flag 🇫🇷 skin 👍🏽",
        "line one\r\nline two\n\ttabbed  double  spaces   ",
        "   leading and trailing   ",
        "{\"json\": [1, 2.5, null], \"x\": \"y\"}",
        "\u0001 control and \u007f delete",
    ];

    [Fact]
    public void Encode_TextWithNul_IsCutAtTheNulByTheRuntime()
    {
        // The native API takes NUL-terminated strings: a client must reject U+0000 rather than lose text silently.
        using var model = new Model(TestModels.PathOf(ModelKitOptions.Tiny));
        using var tokenizer = new Tokenizer(model);
        using var sequences = tokenizer.Encode("before\0after");
        Assert.Equal("before", tokenizer.Decode(sequences[0]));
    }

    [Theory]
    [MemberData(nameof(Texts))]
    public void Encode_ThenDecode_RoundTrips(string text)
    {
        foreach (var family in Enum.GetValues<ChatTemplateFamily>())
        {
            using var model = new Model(TestModels.PathOf(ModelKitOptions.Tiny with { TemplateFamily = family }));
            using var tokenizer = new Tokenizer(model);
            using var sequences = tokenizer.Encode(text);
            Assert.Equal(text, tokenizer.Decode(sequences[0]));
        }
    }

    [Fact]
    public void Encode_RandomUnicode_RoundTrips()
    {
        using var model = new Model(TestModels.PathOf(ModelKitOptions.Tiny));
        using var tokenizer = new Tokenizer(model);
        var random = new Random(1234);
        for (var i = 0; i < 200; i++)
        {
            var text = RandomText(random, random.Next(0, 80));
            using var sequences = tokenizer.Encode(text);
            Assert.Equal(text, tokenizer.Decode(sequences[0]));
        }
    }

    [Fact]
    public void TokenizerStream_DecodesTokenByToken_ToTheSameText()
    {
        using var model = new Model(TestModels.PathOf(ModelKitOptions.Tiny));
        using var tokenizer = new Tokenizer(model);
        const string text = "Stream 日本 👨‍👩‍👧 ok";
        using var sequences = tokenizer.Encode(text);
        using var stream = tokenizer.CreateStream();
        var builder = new StringBuilder();
        foreach (var id in sequences[0])
        {
            builder.Append(stream.Decode(id));
        }

        Assert.Equal(text, builder.ToString());
    }

    [Fact]
    public void Encode_MergesShortenCommonWords()
    {
        using var model = new Model(TestModels.PathOf(ModelKitOptions.Tiny));
        using var tokenizer = new Tokenizer(model);
        using var sequences = tokenizer.Encode(" the the the");
        Assert.True(sequences[0].Length < 12, $"{sequences[0].Length} tokens: merges are not applied.");
    }

    [Theory]
    [InlineData(ChatTemplateFamily.ChatML)]
    [InlineData(ChatTemplateFamily.Phi)]
    [InlineData(ChatTemplateFamily.Llama3)]
    public void Encode_AddedTokenText_IsOneTokenWithTheKitsId(ChatTemplateFamily family)
    {
        // The runtime parses added-token text in any input as the token itself: a client must keep user text from
        // forging control tokens. This pins the ids the kit reports.
        var kit = TestModels.Get(ModelKitOptions.Tiny with { TemplateFamily = family });
        using var model = new Model(kit.Directory);
        using var tokenizer = new Tokenizer(model);
        foreach (var (content, id) in kit.AddedTokenIds)
        {
            using var sequences = tokenizer.Encode("a" + content + "b");
            Assert.Equal(new[] { (int)'a', id, (int)'b' }, sequences[0].ToArray());
        }
    }

    [Fact]
    public void Decode_DropsSpecialTokens_KeepsToolCallDelimiters()
    {
        var kit = TestModels.Get(ModelKitOptions.Tiny);
        using var model = new Model(kit.Directory);
        using var tokenizer = new Tokenizer(model);
        int[] ids = [kit.AddedTokenIds["<|im_start|>"], 'x', kit.AddedTokenIds["<tool_call>"], 'y', kit.AddedTokenIds["<|im_end|>"]];
        Assert.Equal("x<tool_call>y", tokenizer.Decode(ids));
    }

    private static string RandomText(Random random, int length)
    {
        var builder = new StringBuilder();
        while (builder.Length < length)
        {
            var kind = random.Next(6);
            var codePoint = kind switch
            {
                0 => random.Next(0x20, 0x7F),
                1 => random.Next(0xA0, 0x800),
                2 => random.Next(0x3040, 0x9FFF),
                3 => random.Next(0x1F300, 0x1FAFF),
                4 => "\r\n\t "[random.Next(4)],
                _ => random.Next(0x1, 0xD7FF),
            };
            builder.Append(char.ConvertFromUtf32(codePoint));
        }

        return builder.ToString();
    }
}
