using System.Text;

namespace KvChat.ModelKit;

/// <summary>
/// A GPT-2 style byte-level BPE vocabulary: 256 byte tokens, generated merges of letter sequences, then the family's
/// added tokens at the end of the id range (as real models place them).
/// </summary>
internal sealed class Vocabulary
{
    private const string LettersByFrequency = "etaoinshrdlcumwfgypbvkjxqz";

    private Vocabulary(List<string> tokens, List<(string Left, string Right)> merges, TemplateFamilySpec family, int firstAddedId)
    {
        Tokens = tokens;
        Merges = merges;
        Family = family;
        FirstAddedId = firstAddedId;
    }

    /// <summary>Token strings by id (byte-level unicode form; added tokens as their text).</summary>
    public IReadOnlyList<string> Tokens { get; }

    /// <summary>The merges, in rank order; empty for a scripted model.</summary>
    public IReadOnlyList<(string Left, string Right)> Merges { get; }

    public TemplateFamilySpec Family { get; }

    public int FirstAddedId { get; }

    public int Size => Tokens.Count;

    public int IdOf(string addedToken)
    {
        for (var i = 0; i < Family.AddedTokens.Length; i++)
        {
            if (Family.AddedTokens[i].Content == addedToken)
            {
                return FirstAddedId + i;
            }
        }

        throw new ArgumentException($"'{addedToken}' is not an added token of the {Family.Family} family.", nameof(addedToken));
    }

    /// <summary>Builds the vocabulary; <paramref name="withMerges"/> false keeps one token per byte for exact scripting.</summary>
    public static Vocabulary Build(int vocabSize, TemplateFamilySpec family, bool withMerges)
    {
        var byteChars = ByteLevel.ByteToChar;
        var tokens = new List<string>(vocabSize);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (var b = 0; b < 256; b++)
        {
            var s = byteChars[b].ToString();
            tokens.Add(s);
            seen.Add(s);
        }

        var regular = vocabSize - family.AddedTokens.Length;
        if (regular < 256)
        {
            throw new ArgumentOutOfRangeException(nameof(vocabSize), vocabSize, $"The vocabulary needs at least {256 + family.AddedTokens.Length} tokens.");
        }

        var merges = new List<(string, string)>();
        var space = byteChars[' '].ToString();
        var previousWave = new List<string>();
        foreach (var a in (space + LettersByFrequency).Select(c => c.ToString()))
        {
            previousWave.Add(a);
        }

        // Waves of merges: a piece of the previous wave followed by one letter, most frequent letters first.
        while (tokens.Count < regular)
        {
            var wave = new List<string>();
            foreach (var left in previousWave)
            {
                foreach (var letter in LettersByFrequency)
                {
                    if (tokens.Count >= regular)
                    {
                        break;
                    }

                    var right = letter.ToString();
                    var merged = left + right;
                    if (!seen.Add(merged))
                    {
                        continue;
                    }

                    tokens.Add(merged);
                    merges.Add((left, right));
                    wave.Add(merged);
                }
            }

            previousWave = wave;
        }

        var firstAdded = tokens.Count;
        tokens.AddRange(family.AddedTokens.Select(t => t.Content));
        return new Vocabulary(tokens, withMerges ? merges : [], family, firstAdded);
    }

    /// <summary>
    /// Encodes text the way the runtime does for a vocabulary without merges: added tokens matched first (longest at
    /// each position), every other byte its own token.
    /// </summary>
    public int[] EncodeWithoutMerges(string text)
    {
        if (Merges.Count != 0)
        {
            throw new InvalidOperationException("Exact encoding in the kit is only defined for a vocabulary without merges.");
        }

        var ids = new List<int>();
        var pending = new StringBuilder();
        var i = 0;
        while (i < text.Length)
        {
            var match = -1;
            var matchLength = 0;
            for (var t = 0; t < Family.AddedTokens.Length; t++)
            {
                var content = Family.AddedTokens[t].Content;
                if (content.Length > matchLength && string.CompareOrdinal(text, i, content, 0, content.Length) == 0)
                {
                    match = t;
                    matchLength = content.Length;
                }
            }

            if (match < 0)
            {
                pending.Append(text[i]);
                i++;
                continue;
            }

            FlushBytes();
            ids.Add(FirstAddedId + match);
            i += matchLength;
        }

        FlushBytes();
        return [.. ids];

        void FlushBytes()
        {
            foreach (var b in Encoding.UTF8.GetBytes(pending.ToString()))
            {
                ids.Add(b);
            }

            pending.Clear();
        }
    }

    /// <summary>The LM head's bias: printable tokens get <paramref name="printableBias"/>, the end-of-turn token <paramref name="endOfTurnBias"/>.</summary>
    public float[] LogitBias(float printableBias, float endOfTurnBias)
    {
        var bias = new float[Size];
        for (var id = 0; id < FirstAddedId; id++)
        {
            if (IsPrintable(id))
            {
                bias[id] = printableBias;
            }
        }

        bias[IdOf(Family.EosTokens[0])] = endOfTurnBias;
        return bias;
    }

    /// <summary>Whether a regular token decodes to printable ASCII only (letters, digits, punctuation, space).</summary>
    public bool IsPrintable(int id)
    {
        if (id >= FirstAddedId)
        {
            return false;
        }

        foreach (var c in Tokens[id])
        {
            var b = ByteLevel.CharToByte(c);
            if (b is < 0x20 or > 0x7E)
            {
                return false;
            }
        }

        return true;
    }
}

/// <summary>The GPT-2 byte-to-unicode mapping used by byte-level BPE.</summary>
internal static class ByteLevel
{
    public static readonly char[] ByteToChar = BuildMap();

    private static readonly Dictionary<char, int> CharToByteMap =
        ByteToChar.Select((c, b) => (c, b)).ToDictionary(p => p.c, p => p.b);

    public static int CharToByte(char c) => CharToByteMap[c];

    private static char[] BuildMap()
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
}
