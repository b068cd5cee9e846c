using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Json.Schema;
using Xunit;

namespace KvChat.Tests;

/// <summary>
/// Small vocabularies written as real tokenizer.json documents, a random walk that samples only allowed tokens, and the
/// independent validator (JsonSchema.Net) that judges the result: never the code under test.
/// </summary>
internal static class ConstraintTestKit
{
    /// <summary>Merged tokens that cross JSON structure, escapes, and UTF-8 characters (split and whole).</summary>
    public static readonly string[] Merges =
    [
        "{\"", "\":", "\",", "\"}", "\":\"", "\",\"", "}]", "],", ": ", ", ", "\": \"", "\", \"", "true", "false", "null", "na", "name", "me",
        "\\n", "\\\"", "\\u00", "12", "0.", "-1", "1,", "é", "日本", "\u00e9t", "ab", "abc", "hello", " world", "Paris", "\"Paris\"", "city", "age",
        "[{", "}}", "\"]", "[\"", "<tool_call>\n{\"", "\n</tool_call>", "{\"name\": \"", "get_weather", "\", \"arguments\": ", "zone",
    ];

    /// <summary>A byte-level BPE tokenizer.json: 256 byte tokens, the merges above, an EOS and a non-special added token.</summary>
    public static string ByteLevelTokenizerJson(out int vocabSize, out int eos)
    {
        var map = ByteToChar();
        var vocab = new JsonObject();
        var id = 0;
        for (var b = 0; b < 256; b++)
        {
            vocab[map[b].ToString()] = id++;
        }

        // Split UTF-8 pieces: the lead byte of 日 with its first continuation byte, and the last continuation alone.
        var ri = Encoding.UTF8.GetBytes("日");
        foreach (var piece in new[] { new[] { ri[0], ri[1] }, [ri[2], (byte)'"'], Encoding.UTF8.GetBytes("é")[..1] })
        {
            var key = new string([.. piece.Select(b => map[b])]);
            if (!vocab.ContainsKey(key))
            {
                vocab[key] = id++;
            }
        }

        foreach (var merge in Merges)
        {
            var key = new string([.. Encoding.UTF8.GetBytes(merge).Select(b => map[b])]);
            if (!vocab.ContainsKey(key))
            {
                vocab[key] = id++;
            }
        }

        var added = new JsonArray
        {
            new JsonObject { ["id"] = id, ["content"] = "<|im_end|>", ["special"] = true },
            new JsonObject { ["id"] = id + 1, ["content"] = "<tool_call>", ["special"] = false },
        };
        eos = id;
        vocabSize = id + 2;
        return new JsonObject
        {
            ["added_tokens"] = added,
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel" },
            ["model"] = new JsonObject { ["type"] = "BPE", ["vocab"] = vocab, ["merges"] = new JsonArray() },
        }.ToJsonString();
    }

    public static ConstraintVocabulary ByteLevelVocabulary()
    {
        var json = ByteLevelTokenizerJson(out var size, out var eos);
        using var document = JsonDocument.Parse(json);
        return new ConstraintVocabulary(TokenBytes.Parse(document.RootElement, size), [eos]);
    }

    public static char[] ByteToChar()
    {
        var map = new char[256];
        var next = 256;
        for (var b = 0; b < 256; b++)
        {
            var printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            map[b] = printable ? (char)b : (char)next++;
        }

        return map;
    }

    /// <summary>
    /// Samples a constrained reply from random logits (structure-closing tokens favoured so walks end), until
    /// end-of-sequence or the grammar is complete. Returns the text and the tokens.
    /// </summary>
    public static (string Text, List<int> Tokens) RandomWalk(GrammarNode grammar, ConstraintVocabulary vocabulary, int seed, int maxTokens = 3000, string? hints = null, bool strictUtf8 = true)
    {
        // Tokens inside the schema's property names (quoted) are favoured, so walks write required keys that free keys compete with.
        var hinted = hints is null ? [] : System.Text.RegularExpressions.Regex.Matches(hints, "\"(\\w+)\":\\{").Select(m => $"\"{m.Groups[1].Value}\"").ToArray();
        var constraint = new GrammarConstraint(grammar, vocabulary);
        var random = new Random(seed);
        var logits = new float[vocabulary.Count];
        var bytes = new List<byte>();
        var tokens = new List<int>();
        for (var step = 0; step < maxTokens; step++)
        {
            if (constraint.IsComplete)
            {
                break;
            }

            for (var i = 0; i < logits.Length; i++)
            {
                var b = vocabulary.Bytes[i];
                var quote = b.Length > 0 && b.Contains((byte)'"');
                var closing = b.Length > 0 && (b.Contains((byte)'}') || b.Contains((byte)']'));
                logits[i] = (float)(random.NextDouble() * 4) + (quote || closing ? 2 : 0)
                    + (b.Length == 1 && b[0] is (byte)'"' or (byte)'}' or (byte)']' ? step / 4f : 0)
                    + (b.Length > 0 && hinted.Any(h => h.Contains(Encoding.UTF8.GetString(b), StringComparison.Ordinal)) ? 2 + (step / 8f) : 0);
            }

            foreach (var e in vocabulary.Eos)
            {
                logits[e] = 6;
            }

            constraint.Mask(logits);
            var next = Sample(logits, random);
            if (vocabulary.Eos.Contains(next))
            {
                Assert.True(constraint.CanEnd);
                break;
            }

            constraint.Accept(next);
            tokens.Add(next);
            bytes.AddRange(vocabulary.Bytes[next]);
        }

        Assert.True(constraint.CanEnd, $"The walk did not finish: {Encoding.UTF8.GetString([.. bytes])}");
        return (new UTF8Encoding(false, strictUtf8).GetString([.. bytes]), tokens); // Free text may hold any bytes.
    }

    private static int Sample(float[] logits, Random random)
    {
        var max = logits.Max();
        var total = 0.0;
        foreach (var l in logits)
        {
            total += float.IsNegativeInfinity(l) ? 0 : Math.Exp(l - max);
        }

        var r = random.NextDouble() * total;
        for (var i = 0; i < logits.Length; i++)
        {
            if (float.IsNegativeInfinity(logits[i]))
            {
                continue;
            }

            r -= Math.Exp(logits[i] - max);
            if (r <= 0)
            {
                return i;
            }
        }

        return Array.FindLastIndex(logits, l => !float.IsNegativeInfinity(l));
    }

    /// <summary>Validates <paramref name="json"/> against <paramref name="schema"/> with JsonSchema.Net.</summary>
    /// <remarks>
    /// <c>format</c> is removed first: constrained decoding keeps it as a plain string where it is not enforced, and this
    /// validator asserts formats.
    /// </remarks>
    public static void AssertValid(string schema, string json)
    {
        schema = System.Text.RegularExpressions.Regex.Replace(schema, ",\"format\":\"[^\"]*\"|\"format\":\"[^\"]*\",", "");
        using var instance = JsonDocument.Parse(json);
        var validator = JsonSchema.FromText(schema, new BuildOptions { SchemaRegistry = new SchemaRegistry() });
        var result = validator.Evaluate(instance.RootElement, new EvaluationOptions { OutputFormat = OutputFormat.List });
        Assert.True(result.IsValid, $"Not valid against {schema}: {json}\n{string.Join("\n", (result.Details ?? []).Where(d => d.Errors is not null).SelectMany(d => d.Errors!.Select(e => $"{d.InstanceLocation}: {e.Value}")))}");
    }
}
