namespace KvChat;

/// <summary>
/// The byte strings of a set of tokens in a trie, so that a mask step walks the matcher down shared prefixes once and
/// drops a whole subtree at the first byte the grammar refuses. Node 0 is the root (no byte); nodes are numbered in
/// depth-first order, children in byte order, linked by first-child and next-sibling.
/// </summary>
/// <remarks>Immutable; built once per client.</remarks>
internal sealed class TokenTrie
{
    private TokenTrie(int[] firstChild, int[] nextSibling, byte[] edge, int[] tokenStart, int[] tokens, int maxDepth)
    {
        FirstChild = firstChild;
        NextSibling = nextSibling;
        Edge = edge;
        TokenStart = tokenStart;
        Tokens = tokens;
        MaxDepth = maxDepth;
    }

    /// <summary>Gets the first child of each node, or -1.</summary>
    public int[] FirstChild { get; }

    /// <summary>Gets the next sibling of each node, or -1.</summary>
    public int[] NextSibling { get; }

    /// <summary>Gets the byte on the edge into each node.</summary>
    public byte[] Edge { get; }

    /// <summary>Gets where each node's tokens start in <see cref="Tokens"/> (node n's run ends at TokenStart[n + 1]).</summary>
    public int[] TokenStart { get; }

    /// <summary>Gets the token ids, grouped by the node their bytes end at.</summary>
    public int[] Tokens { get; }

    /// <summary>Gets the length of the longest token, in bytes.</summary>
    public int MaxDepth { get; }

    /// <summary>Gets the number of nodes, the root included.</summary>
    public int NodeCount => Edge.Length;

    /// <summary>Builds the trie of the tokens <paramref name="include"/> selects (tokens with no bytes are left out).</summary>
    public static TokenTrie Build(byte[][] bytes, Func<int, bool> include)
    {
        var ids = new List<int>();
        for (var id = 0; id < bytes.Length; id++)
        {
            if (bytes[id].Length > 0 && include(id))
            {
                ids.Add(id);
            }
        }

        ids.Sort((x, y) =>
        {
            var c = bytes[x].AsSpan().SequenceCompareTo(bytes[y]);
            return c != 0 ? c : x.CompareTo(y);
        });

        var firstChild = new List<int> { -1 };
        var nextSibling = new List<int> { -1 };
        var edge = new List<byte> { 0 };
        var lastChild = new List<int> { -1 };
        var nodeTokens = new List<List<int>?> { null };
        var path = new List<int> { 0 }; // path[d] = node at depth d along the previous token.
        byte[] previous = [];
        var maxDepth = 0;
        foreach (var id in ids)
        {
            var current = bytes[id];
            maxDepth = Math.Max(maxDepth, current.Length);
            var common = current.AsSpan().CommonPrefixLength(previous);
            path.RemoveRange(common + 1, path.Count - (common + 1));
            for (var d = common; d < current.Length; d++)
            {
                var parent = path[d];
                var node = edge.Count;
                firstChild.Add(-1);
                nextSibling.Add(-1);
                edge.Add(current[d]);
                lastChild.Add(-1);
                nodeTokens.Add(null);
                if (lastChild[parent] < 0)
                {
                    firstChild[parent] = node;
                }
                else
                {
                    nextSibling[lastChild[parent]] = node;
                }

                lastChild[parent] = node;
                path.Add(node);
            }

            var end = path[current.Length];
            (nodeTokens[end] ??= []).Add(id);
            previous = current;
        }

        var tokenStart = new int[edge.Count + 1];
        var tokens = new List<int>(ids.Count);
        for (var n = 0; n < edge.Count; n++)
        {
            tokenStart[n] = tokens.Count;
            if (nodeTokens[n] is { } list)
            {
                tokens.AddRange(list);
            }
        }

        tokenStart[edge.Count] = tokens.Count;
        return new TokenTrie([.. firstChild], [.. nextSibling], [.. edge], tokenStart, [.. tokens], maxDepth);
    }
}
