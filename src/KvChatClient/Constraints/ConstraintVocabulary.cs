namespace KvChat;

/// <summary>
/// A model's vocabulary prepared for token masks: every token's bytes, the trie of all tokens, and for the most common
/// state (between the characters of a string with no length limit) the set of tokens that are plain string text
/// (printable, no quote or backslash, whole UTF-8 characters) with a trie of only the others, so that state walks a
/// few thousand trie nodes instead of the whole vocabulary.
/// </summary>
/// <remarks>Immutable and thread-safe; built once per client on the first constrained request.</remarks>
internal sealed class ConstraintVocabulary
{
    public ConstraintVocabulary(TokenBytes bytes, IReadOnlyCollection<int> eos)
    {
        Bytes = bytes.Bytes;
        Eos = [.. eos.Where(id => (uint)id < (uint)bytes.Count)];
        PlainString = new ulong[(bytes.Count + 63) / 64];
        var plainCount = 0;
        for (var id = 0; id < bytes.Count; id++)
        {
            if (Bytes[id].Length > 0 && JsonLexer.IsPlainRun(Bytes[id]))
            {
                PlainString[id >> 6] |= 1UL << id;
                plainCount++;
            }
        }

        PlainStringCount = plainCount;
        All = TokenTrie.Build(Bytes, _ => true);
        NotPlainString = TokenTrie.Build(Bytes, id => (PlainString[id >> 6] & (1UL << id)) == 0);
    }

    /// <summary>Gets each token's bytes (empty: never allowed in constrained text).</summary>
    public byte[][] Bytes { get; }

    /// <summary>Gets the number of logits.</summary>
    public int Count => Bytes.Length;

    /// <summary>Gets the end-of-sequence token ids, allowed exactly when the grammar may end.</summary>
    public int[] Eos { get; }

    /// <summary>Gets the tokens that are plain string text, as bits.</summary>
    public ulong[] PlainString { get; }

    /// <summary>Gets how many tokens are plain string text.</summary>
    public int PlainStringCount { get; }

    /// <summary>Gets the trie of every token with bytes.</summary>
    public TokenTrie All { get; }

    /// <summary>Gets the trie of the tokens that are not plain string text.</summary>
    public TokenTrie NotPlainString { get; }

    private readonly System.Collections.Concurrent.ConcurrentDictionary<byte, (ulong[] Without, TokenTrie With)> _splits = new();

    /// <summary>
    /// The tokens without byte <paramref name="b"/> (as bits) and a trie of those with it: free text in which a
    /// marker starting with <paramref name="b"/> opens a constrained part walks only the second (built once per byte).
    /// </summary>
    public (ulong[] Without, TokenTrie With) SplitBy(byte b) => _splits.GetOrAdd(b, key =>
    {
        var without = new ulong[PlainString.Length];
        for (var id = 0; id < Bytes.Length; id++)
        {
            if (Bytes[id].Length > 0 && Array.IndexOf(Bytes[id], key) < 0)
            {
                without[id >> 6] |= 1UL << id;
            }
        }

        return (without, TokenTrie.Build(Bytes, id => (without[id >> 6] & (1UL << id)) == 0));
    });
}
