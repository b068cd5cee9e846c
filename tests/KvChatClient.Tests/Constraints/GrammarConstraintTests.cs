using System.Text;
using System.Text.Json;
using Xunit;

namespace KvChat.Tests;

/// <summary>
/// The token-level JSON constraint on its own: random walks that may only pick allowed tokens always give JSON that an
/// independent validator (JsonSchema.Net) accepts, the trie walk allows exactly the tokens a byte-by-byte check allows,
/// and the pieces (vocabulary reading, lexer, schema subset) behave.
/// </summary>
public sealed class GrammarConstraintTests
{
    private static readonly ConstraintVocabulary Vocabulary = ConstraintTestKit.ByteLevelVocabulary();

    public static TheoryData<string> Schemas() =>
    [
        """{"type":"object","properties":{"name":{"type":"string","maxLength":6},"age":{"type":"integer","minimum":0,"maximum":120}},"required":["name","age"],"additionalProperties":false}""",
        """{"type":"array","items":{"type":"integer","minimum":-5,"maximum":9},"minItems":2,"maxItems":3}""",
        """{"type":"integer","minimum":10,"maximum":99}""",
        """{"type":"number","minimum":-1.5,"exclusiveMaximum":2.25}""",
        """{"type":"integer","exclusiveMinimum":-3,"maximum":1000000}""",
        """{"type":"string","minLength":2,"maxLength":5}""",
        """{"type":"string","format":"date-time"}""",
        """{"type":"boolean"}""",
        """{"type":"null"}""",
        """{"type":"string","enum":["red","green","blue","gr\"ey","日本"]}""",
        """{"enum":[1,12,123,"x",null,true,{"a":[1]}]}""",
        """{"const":"fixed"}""",
        """{"type":["string","null"]}""",
        """{"type":["object","null"],"properties":{"city":{"type":"string"}},"required":["city"]}""",
        """{"type":["string","null"],"enum":["Red","Green",null]}""",
        """{"anyOf":[{"type":"object","properties":{"kind":{"const":"circle"},"r":{"type":"number"}},"required":["kind","r"],"additionalProperties":false},{"type":"object","properties":{"kind":{"const":"square"},"side":{"type":"integer"}},"required":["kind","side"],"additionalProperties":false}]}""",
        """{"oneOf":[{"type":"integer"},{"type":"string","maxLength":3},{"type":"array","items":{"type":"boolean"},"maxItems":2}]}""",
        """{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","properties":{"v":{"type":"integer"},"kids":{"type":["array","null"],"items":{"$ref":"#"},"maxItems":2}},"required":["v"]}""",
        """{"$defs":{"point":{"type":"object","properties":{"x":{"type":"integer"},"y":{"type":"integer"}},"required":["x","y"],"additionalProperties":false}},"type":"object","properties":{"from":{"$ref":"#/$defs/point"},"to":{"$ref":"#/$defs/point"}},"required":["from","to"],"additionalProperties":false}""",
        """{"type":"object","properties":{"outer":{"type":"object","properties":{"inner":{"type":"array","items":{"type":"object","properties":{"ok":{"type":"boolean"}},"required":["ok"]}}},"required":["inner"]}},"required":["outer"]}""",
        """{"type":"object","additionalProperties":{"type":"integer"}}""",
        """{"type":"object"}""",
        """{}""",
        """{"type":"object","properties":{"data":{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"integer"}},"additionalProperties":false,"required":["data"]}""",
        """{"type":"array","items":{"type":"string","enum":["a","ab","abc"]}}""",
    ];

    [Theory]
    [MemberData(nameof(Schemas))]
    public void RandomWalk_EverySchemaShape_ValidatesIndependently(string schema)
    {
        using var document = JsonDocument.Parse(schema);
        foreach (var whitespace in new[] { JsonWhitespace.Compact, JsonWhitespace.Spaced })
        {
            var grammar = JsonSchemaGrammar.Compile(document.RootElement, whitespace);
            for (var seed = 0; seed < 40; seed++)
            {
                var (text, _) = ConstraintTestKit.RandomWalk(grammar, Vocabulary, seed, hints: schema);
                ConstraintTestKit.AssertValid(schema, text);
                if (whitespace == JsonWhitespace.Compact)
                {
                    Assert.DoesNotMatch("^\\s|[,:\\[{]\\s", text.Replace("\\\"", "", StringComparison.Ordinal).Split('"').Where((_, i) => i % 2 == 0).Aggregate("", string.Concat));
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(Schemas))]
    public void Mask_EveryState_AllowsExactlyTheTokensThatFitByteByByte(string schema)
    {
        using var document = JsonDocument.Parse(schema);
        var grammar = JsonSchemaGrammar.Compile(document.RootElement);
        for (var seed = 0; seed < 4; seed++)
        {
            var (_, tokens) = ConstraintTestKit.RandomWalk(grammar, Vocabulary, seed, hints: schema);
            var constraint = new GrammarConstraint(grammar, Vocabulary);
            var logits = new float[Vocabulary.Count];
            foreach (var token in tokens.Append(-1))
            {
                Array.Fill(logits, 1f);
                constraint.Mask(logits);
                for (var id = 0; id < Vocabulary.Count; id++)
                {
                    var bytes = Vocabulary.Bytes[id];
                    var expected = Vocabulary.Eos.Contains(id) ? constraint.CanEnd : bytes.Length > 0 && constraint.Allows(bytes);
                    Assert.True(expected == !float.IsNegativeInfinity(logits[id]), $"token {id} '{Encoding.UTF8.GetString(bytes)}': expected {(expected ? "allowed" : "masked")}");
                }

                if (token >= 0)
                {
                    constraint.Accept(token);
                }
            }
        }
    }

    [Fact]
    public void Strings_TokensEndingInsideAUtf8Character_AndEscapes_AreFollowed()
    {
        using var document = JsonDocument.Parse("""{"type":"string"}""");
        var constraint = new GrammarConstraint(JsonSchemaGrammar.Compile(document.RootElement), Vocabulary);
        var ri = Encoding.UTF8.GetBytes("日");
        Assert.True(constraint.Allows([(byte)'"', ri[0], ri[1]])); // Ends inside the character.
        Assert.True(constraint.Allows([(byte)'"', ri[0], ri[1], ri[2], (byte)'"']));
        Assert.False(constraint.Allows([(byte)'"', ri[0], (byte)'"'])); // A quote cannot close a half character.
        Assert.False(constraint.Allows([(byte)'"', ri[1]])); // A continuation byte cannot start one.
        Assert.False(constraint.Allows([(byte)'"', 0xC0, 0x80])); // Overlong.
        Assert.False(constraint.Allows([(byte)'"', 0xED, 0xA0, 0x80])); // A surrogate in UTF-8.
        Assert.False(constraint.Allows("\"a\nb"u8)); // Raw control characters are not JSON.
        Assert.True(constraint.Allows("\"a\\n\\\"\\u00e9\\/\""u8));
        Assert.False(constraint.Allows("\"\\x"u8));
        Assert.False(constraint.Allows("\"\\ud800"u8)); // No lone surrogate escapes.
        Assert.True(constraint.Allows("\"\\uD7FF\""u8));
    }

    [Fact]
    public void Strings_MaxLength_CountsCodePoints_AndNeverStrandsAHalfCharacter()
    {
        using var document = JsonDocument.Parse("""{"type":"string","maxLength":2}""");
        var constraint = new GrammarConstraint(JsonSchemaGrammar.Compile(document.RootElement), Vocabulary);
        Assert.True(constraint.Allows("\"日本\""u8));
        Assert.True(constraint.Allows("\"a\\n\""u8));
        Assert.False(constraint.Allows("\"abc"u8));
        Assert.False(constraint.Allows([.. "\"日本"u8, 0xE6])); // A third character may not even start.
    }

    [Fact]
    public void Numbers_Bounds_PruneEveryPrefixThatCannotEndInRange()
    {
        using var document = JsonDocument.Parse("""{"type":"integer","minimum":10,"maximum":99}""");
        var constraint = new GrammarConstraint(JsonSchemaGrammar.Compile(document.RootElement), Vocabulary);
        Assert.False(constraint.Allows("-"u8));
        Assert.False(constraint.Allows("0"u8));
        Assert.True(constraint.Allows("9"u8));
        Assert.True(constraint.Allows("99"u8));
        Assert.False(constraint.Allows("100"u8));
        Assert.False(constraint.Allows("1."u8));
        constraint.Accept(Token("1"));
        Assert.False(constraint.CanEnd); // 1 is below the minimum.
        constraint.Accept(Token("2"));
        Assert.True(constraint.CanEnd);
        Assert.False(constraint.IsComplete); // 12 could still go on... but not within 99:
        Assert.False(constraint.Allows("0"u8));
    }

    [Fact]
    public void Objects_RequiredAndNoAdditional_OnlyKnownKeysOnceEach_CloseWhenAllRequiredAreThere()
    {
        using var document = JsonDocument.Parse("""{"type":"object","properties":{"a":{"type":"integer"},"ab":{"type":"integer"}},"required":["ab"],"additionalProperties":false}""");
        var constraint = new GrammarConstraint(JsonSchemaGrammar.Compile(document.RootElement), Vocabulary);
        Assert.False(constraint.Allows("{}"u8));
        Assert.False(constraint.Allows("{\"b"u8));
        Assert.False(constraint.Allows("{\"a\":1}"u8));
        Assert.True(constraint.Allows("{\"a\":1,\"ab\":2}"u8));
        Assert.False(constraint.Allows("{\"ab\":1,\"ab\""u8));
        Assert.False(constraint.Allows("{\"a\":1,\"ab\":2,"u8)); // Nothing left to write.
        Assert.False(constraint.Allows("{\"a\": 1"u8)); // Compact.
    }

    [Fact]
    public void Accept_ATokenTheMaskForbids_Throws()
    {
        using var document = JsonDocument.Parse("""{"type":"boolean"}""");
        var constraint = new GrammarConstraint(JsonSchemaGrammar.Compile(document.RootElement), Vocabulary);
        Assert.Throws<InvalidOperationException>(() => constraint.Accept(Token("null")));
        Assert.Throws<InvalidOperationException>(() => constraint.Accept(Vocabulary.Eos[0]));
    }

    [Theory]
    [InlineData("""{"type":"string","pattern":"^a"}""", "pattern")]
    [InlineData("""{"type":"array","items":[{"type":"string"}]}""", "items")]
    [InlineData("""{"type":"array","uniqueItems":true}""", "uniqueItems")]
    [InlineData("""{"type":"number","multipleOf":3}""", "multipleOf")]
    [InlineData("""{"not":{"type":"string"}}""", "not")]
    [InlineData("""{"$ref":"https://example.com/s.json"}""", "$ref")]
    [InlineData("""{"allOf":[{"type":"string"},{"maxLength":3}]}""", "allOf")]
    [InlineData("""{"type":"object","patternProperties":{"^a":{}}}""", "patternProperties")]
    [InlineData("""{"if":{"type":"string"},"then":{"maxLength":2}}""", "if")]
    [InlineData("""{"type":"array","prefixItems":[{"type":"string"}]}""", "prefixItems")]
    [InlineData("""{"type":"object","propertyNames":{"maxLength":2}}""", "propertyNames")]
    [InlineData("""{"type":"object","minProperties":1}""", "minProperties")]
    [InlineData("""{"type":"object","dependentRequired":{"a":["b"]}}""", "dependentRequired")]
    [InlineData("""{"type":"string","anyOf":[{"maxLength":2}]}""", "anyOf")]
    [InlineData("""{"$ref":"#/$defs/missing"}""", "$ref")]
    [InlineData("""{"type":"date"}""", "type")]
    [InlineData("""{"type":"string","maxLength":-1}""", "maxLength")]
    [InlineData("""{"type":"object","required":"a"}""", "required")]
    [InlineData("""{"type":"integer","minimum":1000000000000000}""", "minimum")]
    public void Compile_KeywordOutsideTheSubset_IsNotSupported_NamingIt(string schema, string keyword)
    {
        using var document = JsonDocument.Parse(schema);
        var error = Assert.Throws<NotSupportedException>(() => JsonSchemaGrammar.Compile(document.RootElement));
        Assert.Contains($"'{keyword}'", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void TokenBytes_SentencePieceByteFallback_SpaceMarkAndBytes()
    {
        using var document = JsonDocument.Parse("""
            {"model":{"type":"BPE","byte_fallback":true,"vocab":{"<unk>":0,"<s>":1,"</s>":2,"<0x41>":3,"<0xE6>":4,"▁hello":5,"{\"":6,"▁":7}},
             "decoder":{"type":"Sequence","decoders":[{"type":"Replace"},{"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip"}]},
             "added_tokens":[{"id":0,"content":"<unk>","special":true},{"id":1,"content":"<s>","special":true},{"id":2,"content":"</s>","special":true}]}
            """);
        var bytes = TokenBytes.Parse(document.RootElement, 9).Bytes;
        Assert.Empty(bytes[1]);
        Assert.Equal("A"u8.ToArray(), bytes[3]);
        Assert.Equal(new byte[] { 0xE6 }, bytes[4]);
        Assert.Equal(" hello"u8.ToArray(), bytes[5]);
        Assert.Equal("{\""u8.ToArray(), bytes[6]);
        Assert.Equal(" "u8.ToArray(), bytes[7]);
        Assert.Empty(bytes[8]); // Beyond the tokenizer: never allowed.
    }

    [Fact]
    public void TokenBytes_UnigramVocabulary_ById()
    {
        using var document = JsonDocument.Parse("""{"model":{"type":"Unigram","vocab":[["<pad>",0],["▁a",-1],["<0x22>",-2]]},"added_tokens":[{"id":0,"content":"<pad>","special":true}]}""");
        var bytes = TokenBytes.Parse(document.RootElement, 3).Bytes;
        Assert.Empty(bytes[0]);
        Assert.Equal(" a"u8.ToArray(), bytes[1]);
        Assert.Equal("\""u8.ToArray(), bytes[2]);
    }

    [Fact]
    public void TokenBytes_ByteLevel_MapsGpt2Characters_AddedTokensAsText()
    {
        var json = ConstraintTestKit.ByteLevelTokenizerJson(out var size, out var eos);
        using var document = JsonDocument.Parse(json);
        var bytes = TokenBytes.Parse(document.RootElement, size).Bytes;
        Assert.Equal(new byte[] { (byte)' ' }, bytes[' ']);
        Assert.Equal(new byte[] { 0x0A }, bytes[0x0A]);
        Assert.Empty(bytes[eos]);
        Assert.Equal("<tool_call>"u8.ToArray(), bytes[eos + 1]);
    }

    private static int Token(string text)
    {
        var target = Encoding.UTF8.GetBytes(text);
        for (var id = 0; id < Vocabulary.Count; id++)
        {
            if (Vocabulary.Bytes[id].AsSpan().SequenceEqual(target))
            {
                return id;
            }
        }

        throw new ArgumentException($"No token '{text}'.", nameof(text));
    }
}
