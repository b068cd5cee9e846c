using System.Globalization;
using System.Text;
using System.Text.Json;

namespace KvChat;

/// <summary>
/// The bytes each token of a model's vocabulary decodes to, read from its <c>tokenizer.json</c>: byte-level BPE (the
/// GPT-2 byte-to-unicode mapping: Qwen, Llama 3, Phi-4, the kit's models), SentencePiece-style BPE or Unigram
/// (<c>▁</c> for a space, byte-fallback tokens <c>&lt;0xNN&gt;</c>: Llama 2, Mistral, Gemma), and added tokens
/// (their text; special ones decode to nothing). A token that decodes to nothing can never be part of constrained text.
/// </summary>
/// <remarks>Immutable; shared by every constrained reply of a client.</remarks>
internal sealed class TokenBytes
{
    private static readonly byte[] None = [];

    private TokenBytes(byte[][] bytes) => Bytes = bytes;

    /// <summary>Gets the bytes of every token id below the model's vocabulary size (empty: never in constrained text).</summary>
    public byte[][] Bytes { get; }

    /// <summary>Gets the number of token ids (the logits' length).</summary>
    public int Count => Bytes.Length;

    /// <summary>Reads the vocabulary of <paramref name="tokenizerJson"/> for <paramref name="vocabSize"/> logits.</summary>
    /// <exception cref="InvalidDataException">The file is not a tokenizer this reader knows (the message says why).</exception>
    public static TokenBytes Read(string tokenizerJson, int vocabSize)
    {
        using var stream = File.OpenRead(tokenizerJson);
        using var document = JsonDocument.Parse(stream, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
        return Parse(document.RootElement, vocabSize, tokenizerJson);
    }

    /// <summary>Parses a tokenizer document (tests build small ones).</summary>
    public static TokenBytes Parse(JsonElement root, int vocabSize, string source = "tokenizer.json")
    {
        var bytes = new byte[vocabSize][];
        Array.Fill(bytes, None);
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
        {
            throw new InvalidDataException($"'{source}' has no 'model': its vocabulary cannot be read for constrained decoding.");
        }

        var type = model.TryGetProperty("type", out var t) ? t.GetString() : null;
        var byteLevel = IsByteLevel(root);
        if (!model.TryGetProperty("vocab", out var vocab))
        {
            throw new InvalidDataException($"'{source}' has no 'model.vocab'.");
        }

        if (vocab.ValueKind == JsonValueKind.Object && type is null or "BPE" or "WordLevel")
        {
            foreach (var entry in vocab.EnumerateObject())
            {
                if (entry.Value.TryGetInt32(out var id) && (uint)id < (uint)vocabSize)
                {
                    bytes[id] = Decode(entry.Name, byteLevel);
                }
            }
        }
        else if (vocab.ValueKind == JsonValueKind.Array && type == "Unigram")
        {
            var id = 0;
            foreach (var entry in vocab.EnumerateArray())
            {
                if (id < vocabSize && entry.ValueKind == JsonValueKind.Array && entry.GetArrayLength() > 0 && entry[0].GetString() is { } piece)
                {
                    bytes[id] = Decode(piece, byteLevel);
                }

                id++;
            }
        }
        else
        {
            throw new InvalidDataException($"'{source}' has a '{type}' model; constrained decoding reads BPE and Unigram vocabularies.");
        }

        if (root.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
        {
            foreach (var token in added.EnumerateArray())
            {
                if (token.TryGetProperty("id", out var idElement) && idElement.TryGetInt32(out var id) && (uint)id < (uint)vocabSize
                    && token.TryGetProperty("content", out var content) && content.GetString() is { } text)
                {
                    var special = token.TryGetProperty("special", out var s) && s.ValueKind == JsonValueKind.True;
                    bytes[id] = special ? None : Encoding.UTF8.GetBytes(text);
                }
            }
        }

        return new TokenBytes(bytes);
    }

    /// <summary>Whether the tokenizer decodes with the GPT-2 byte-level mapping (a ByteLevel decoder anywhere).</summary>
    private static bool IsByteLevel(JsonElement root)
        => root.TryGetProperty("decoder", out var decoder) && decoder.ValueKind == JsonValueKind.Object && HasByteLevel(decoder);

    private static bool HasByteLevel(JsonElement decoder)
    {
        if (decoder.TryGetProperty("type", out var type) && type.GetString() == "ByteLevel")
        {
            return true;
        }

        if (decoder.TryGetProperty("decoders", out var list) && list.ValueKind == JsonValueKind.Array)
        {
            foreach (var inner in list.EnumerateArray())
            {
                if (inner.ValueKind == JsonValueKind.Object && HasByteLevel(inner))
                {
                    return true;
                }
            }
        }

        return false;
    }

    private static byte[] Decode(string token, bool byteLevel)
    {
        if (byteLevel)
        {
            var result = new byte[token.Length];
            for (var i = 0; i < token.Length; i++)
            {
                var b = ByteLevelMap.ToByte(token[i]);
                if (b < 0)
                {
                    return None; // Not a byte-level token: never produced by the byte mapping.
                }

                result[i] = (byte)b;
            }

            return result;
        }

        // SentencePiece: <0xNN> is one raw byte, ▁ a space.
        if (token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
            && byte.TryParse(token.AsSpan(3, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var raw))
        {
            return [raw];
        }

        return Encoding.UTF8.GetBytes(token.Replace('\u2581', ' '));
    }
}

/// <summary>The GPT-2 byte-to-unicode mapping of byte-level BPE: printable bytes map to themselves, others from U+0100 on.</summary>
internal static class ByteLevelMap
{
    private static readonly short[] CharToByte = Build();

    /// <summary>The byte a mapped character stands for, or -1.</summary>
    public static int ToByte(char c) => c < CharToByte.Length ? CharToByte[c] : -1;

    private static short[] Build()
    {
        var map = new short[512];
        Array.Fill(map, (short)-1);
        var next = 256;
        for (var b = 0; b < 256; b++)
        {
            var printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            map[printable ? b : next++] = (short)b;
        }

        return map;
    }
}
