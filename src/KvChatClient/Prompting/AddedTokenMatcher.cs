using System.Buffers;

namespace KvChat;

/// <summary>
/// Finds the tokenizer's added tokens in text the way the tokenizer splits on them before BPE (Hugging Face
/// tokenizers and GenAI's alike): leftmost, then longest. A trie over the token strings keeps a scan linear even with
/// thousands of added tokens (Gemma 3 has 6,415).
/// </summary>
internal sealed class AddedTokenMatcher
{
    private readonly Node _root = new();
    private readonly SearchValues<char> _firstChars;

    public AddedTokenMatcher(IEnumerable<(string Content, int Id, bool IsControl)> tokens)
    {
        var first = new HashSet<char>();
        foreach (var (content, id, isControl) in tokens)
        {
            if (content.Length == 0)
            {
                continue;
            }

            var node = _root;
            foreach (var c in content)
            {
                node.Children ??= [];
                if (!node.Children.TryGetValue(c, out var next))
                {
                    next = new Node();
                    node.Children.Add(c, next);
                }

                node = next;
            }

            // The first listing of a string wins, as in the tokenizer's own table.
            if (node.Id < 0)
            {
                node.Id = id;
                node.IsControl = isControl;
                node.Length = content.Length;
            }

            first.Add(content[0]);
        }

        _firstChars = SearchValues.Create([.. first]);
    }

    /// <summary>A match: where it starts, its length, the token id and whether it is a control token.</summary>
    public readonly record struct Match(int Index, int Length, int Id, bool IsControl);

    /// <summary>The longest added token that starts exactly at <paramref name="at"/>, or a match of length 0.</summary>
    public Match LongestAt(ReadOnlySpan<char> text, int at)
    {
        var node = _root;
        Match best = default;
        for (var i = at; i < text.Length; i++)
        {
            if (node.Children is null || !node.Children.TryGetValue(text[i], out node))
            {
                break;
            }

            if (node.Id >= 0)
            {
                best = new Match(at, node.Length, node.Id, node.IsControl);
            }
        }

        return best;
    }

    /// <summary>The leftmost-longest added token at or after <paramref name="from"/>, or a match of length 0.</summary>
    public Match Next(ReadOnlySpan<char> text, int from)
    {
        var at = from;
        while (at < text.Length)
        {
            var skip = text[at..].IndexOfAny(_firstChars);
            if (skip < 0)
            {
                break;
            }

            at += skip;
            var match = LongestAt(text, at);
            if (match.Length > 0)
            {
                return match;
            }

            at++;
        }

        return default;
    }

    private sealed class Node
    {
        public Dictionary<char, Node>? Children;
        public int Id = -1;
        public int Length;
        public bool IsControl;
    }
}
