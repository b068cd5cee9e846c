namespace KvChat;

/// <summary>
/// A small immutable trie of byte strings, each with a value (its index in the list it was built from): the values of
/// an enum, the names of an object's properties, the names of the offered tools. Node 0 is the root.
/// </summary>
internal sealed class ByteTrie
{
    private readonly int[] _edgeStart;
    private readonly byte[] _edgeByte;
    private readonly int[] _edgeChild;
    private readonly int[] _value;
    private readonly ulong[] _subtree;

    private ByteTrie(int[] edgeStart, byte[] edgeByte, int[] edgeChild, int[] value, ulong[] subtree)
    {
        _edgeStart = edgeStart;
        _edgeByte = edgeByte;
        _edgeChild = edgeChild;
        _value = value;
        _subtree = subtree;
    }

    /// <summary>Gets the number of strings.</summary>
    public int Count { get; private init; }

    /// <summary>Builds the trie; a string listed twice keeps its first index.</summary>
    public static ByteTrie Build(IReadOnlyList<byte[]> strings)
    {
        var children = new List<SortedDictionary<byte, int>> { new() };
        var values = new List<int> { -1 };
        for (var i = 0; i < strings.Count; i++)
        {
            var node = 0;
            foreach (var b in strings[i])
            {
                if (!children[node].TryGetValue(b, out var next))
                {
                    next = children.Count;
                    children[node][b] = next;
                    children.Add(new SortedDictionary<byte, int>());
                    values.Add(-1);
                }

                node = next;
            }

            if (values[node] < 0)
            {
                values[node] = i;
            }
        }

        var edgeStart = new int[children.Count + 1];
        var edgeByte = new List<byte>();
        var edgeChild = new List<int>();
        for (var n = 0; n < children.Count; n++)
        {
            edgeStart[n] = edgeByte.Count;
            foreach (var (b, child) in children[n])
            {
                edgeByte.Add(b);
                edgeChild.Add(child);
            }
        }

        edgeStart[children.Count] = edgeByte.Count;

        // Children always have higher ids than their parent: fill subtree masks from the leaves up.
        var subtree = new ulong[children.Count];
        for (var n = children.Count - 1; n >= 0; n--)
        {
            if (values[n] is >= 0 and < 64)
            {
                subtree[n] |= 1UL << values[n];
            }

            foreach (var child in children[n].Values)
            {
                subtree[n] |= subtree[child];
            }
        }

        return new ByteTrie(edgeStart, [.. edgeByte], [.. edgeChild], [.. values], subtree) { Count = strings.Count };
    }

    /// <summary>The child of <paramref name="node"/> along <paramref name="b"/>, or -1.</summary>
    public int Next(int node, byte b)
    {
        for (var e = _edgeStart[node]; e < _edgeStart[node + 1]; e++)
        {
            if (_edgeByte[e] == b)
            {
                return _edgeChild[e];
            }
        }

        return -1;
    }

    /// <summary>The index of the string that ends at <paramref name="node"/>, or -1.</summary>
    public int ValueAt(int node) => _value[node];

    /// <summary>Whether a longer string continues past <paramref name="node"/>.</summary>
    public bool HasChildren(int node) => _edgeStart[node + 1] > _edgeStart[node];

    /// <summary>The indexes (below 64) of the strings at or under <paramref name="node"/>, as bits.</summary>
    public ulong SubtreeMask(int node) => _subtree[node];
}
