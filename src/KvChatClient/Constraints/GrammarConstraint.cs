using System.Numerics;

namespace KvChat;

/// <summary>
/// Constrains a reply token by token to a <see cref="GrammarNode"/> grammar (a JSON schema, tool calls, or a choice of
/// both): <see cref="Mask"/> sets the logit of every token that cannot come next to negative infinity, by walking the
/// vocabulary trie with the byte-level matcher; <see cref="Accept"/> advances past the chosen token.
/// </summary>
/// <remarks>
/// <para>
/// Hand-written because no library serves this in .NET: none masks a tokenizer's vocabulary against a JSON schema
/// (llguidance, outlines and xgrammar are Rust/Python/C++), and GenAI 0.18 bundles llguidance without exporting it: its
/// guidance only acts inside its own <c>GenerateNextToken</c> on a fresh generator, never on a cached session's logits.
/// </para>
/// <para>
/// Only logits are touched, so it works on any session backend. One instance serves one reply; not thread-safe.
/// </para>
/// </remarks>
internal sealed class GrammarConstraint : ITokenConstraint
{
    private readonly ConstraintVocabulary _vocabulary;
    private readonly ulong[] _allowed;
    private readonly List<MatchFrame>[] _levels;
    private List<MatchFrame> _threads;
    private List<MatchFrame> _spare = [];
    private float[]? _saved;

    public GrammarConstraint(GrammarNode root, ConstraintVocabulary vocabulary)
    {
        _vocabulary = vocabulary;
        _allowed = new ulong[vocabulary.PlainString.Length];
        _levels = new List<MatchFrame>[Math.Max(vocabulary.All.MaxDepth, 1) + 1];
        for (var i = 0; i < _levels.Length; i++)
        {
            _levels[i] = [];
        }

        _threads = GrammarMatcher.Start(root);
    }

    /// <summary>Gets whether the grammar may end here (end-of-sequence is allowed).</summary>
    public bool CanEnd => GrammarMatcher.CanEnd(_threads);

    /// <summary>Gets whether the grammar is complete and nothing may follow: the reply ends here.</summary>
    public bool IsComplete => _threads.TrueForAll(t => t.Phase == MatchPhase.Accepted);

    /// <summary>Gets the number of tokens the last <see cref="Mask"/> allowed (end-of-sequence included).</summary>
    public int LastAllowedCount { get; private set; }

    /// <summary>Whether the bytes could come next (for tests; the state is unchanged).</summary>
    public bool Allows(ReadOnlySpan<byte> bytes)
    {
        var current = _threads;
        foreach (var b in bytes)
        {
            var next = new List<MatchFrame>();
            if (!GrammarMatcher.StepAll(current, b, next))
            {
                return false;
            }

            current = next;
        }

        return true;
    }

    /// <summary>Sets the logits of every token that may not come next to negative infinity.</summary>
    /// <exception cref="InvalidOperationException">No token of the vocabulary can continue the grammar.</exception>
    public void Mask(Span<float> logits)
    {
        var allowed = _allowed;
        var vocabulary = _vocabulary;
        if (_threads.Count == 1 && GrammarMatcher.InUnboundedStringBody(_threads[0]))
        {
            vocabulary.PlainString.CopyTo(allowed, 0);
            Walk(vocabulary.NotPlainString, _threads);
        }
        else if (_threads.Count == 1 && _threads[0] is { Phase: MatchPhase.Text, A: 0, Node: TextWithMarkerNode text })
        {
            // Free text: every token without the marker's first byte goes; the others are walked.
            var (without, with) = vocabulary.SplitBy(text.Marker[0]);
            without.CopyTo(allowed, 0);
            Walk(with, _threads);
        }
        else
        {
            Array.Clear(allowed);
            Walk(vocabulary.All, _threads);
        }

        var count = 0;
        foreach (var word in allowed)
        {
            count += BitOperations.PopCount(word);
        }

        var canEnd = CanEnd;
        if (count == 0 && !canEnd)
        {
            throw new InvalidOperationException("No token of the vocabulary can continue the constrained reply (the schema cannot be completed with this tokenizer).");
        }

        var n = Math.Min(logits.Length, vocabulary.Count);
        var eos = vocabulary.Eos;
        Span<float> eosLogits = stackalloc float[eos.Length];
        for (var i = 0; i < eos.Length; i++)
        {
            eosLogits[i] = eos[i] < logits.Length ? logits[eos[i]] : 0;
        }

        if (count < n / 16)
        {
            // Few allowed: keep them, fill everything with -inf, put them back.
            var saved = _saved ??= new float[vocabulary.Count];
            var k = 0;
            for (var w = 0; w < allowed.Length; w++)
            {
                var word = allowed[w];
                while (word != 0)
                {
                    var id = (w << 6) + BitOperations.TrailingZeroCount(word);
                    word &= word - 1;
                    if (id < n)
                    {
                        saved[k++] = logits[id];
                    }
                }
            }

            logits.Fill(float.NegativeInfinity);
            k = 0;
            for (var w = 0; w < allowed.Length; w++)
            {
                var word = allowed[w];
                while (word != 0)
                {
                    var id = (w << 6) + BitOperations.TrailingZeroCount(word);
                    word &= word - 1;
                    if (id < n)
                    {
                        logits[id] = saved[k++];
                    }
                }
            }
        }
        else
        {
            for (var w = 0; w < allowed.Length; w++)
            {
                var word = ~allowed[w];
                while (word != 0)
                {
                    var id = (w << 6) + BitOperations.TrailingZeroCount(word);
                    word &= word - 1;
                    if (id >= n)
                    {
                        break;
                    }

                    logits[id] = float.NegativeInfinity;
                }
            }

            logits[n..].Fill(float.NegativeInfinity);
        }

        for (var i = 0; i < eos.Length; i++)
        {
            if (eos[i] < logits.Length)
            {
                logits[eos[i]] = canEnd ? eosLogits[i] : float.NegativeInfinity;
            }
        }

        LastAllowedCount = count + (canEnd ? eos.Length : 0);
    }

    /// <summary>Advances past <paramref name="token"/>.</summary>
    /// <exception cref="InvalidOperationException">The token cannot come next.</exception>
    public void Accept(int token)
    {
        var vocabulary = _vocabulary;
        if (Array.IndexOf(vocabulary.Eos, token) >= 0)
        {
            if (!CanEnd)
            {
                throw new InvalidOperationException($"End-of-sequence token {token} came before the constrained reply was complete.");
            }

            _threads = [MatchFrame.Accepted];
            return;
        }

        var bytes = (uint)token < (uint)vocabulary.Count ? vocabulary.Bytes[token] : [];
        if (bytes.Length == 0)
        {
            throw new InvalidOperationException($"Token {token} has no text and cannot be part of the constrained reply.");
        }

        foreach (var b in bytes)
        {
            if (!GrammarMatcher.StepAll(_threads, b, _spare))
            {
                throw new InvalidOperationException($"Token {token} does not fit the constrained reply here.");
            }

            (_threads, _spare) = (_spare, _threads);
        }
    }

    private void Walk(TokenTrie trie, List<MatchFrame> threads) => Walk(trie, 0, threads, 0);

    private void Walk(TokenTrie trie, int node, List<MatchFrame> threads, int depth)
    {
        var next = _levels[depth + 1];
        var allowed = _allowed;
        for (var child = trie.FirstChild[node]; child >= 0; child = trie.NextSibling[child])
        {
            if (!GrammarMatcher.StepAll(threads, trie.Edge[child], next))
            {
                continue;
            }

            for (var t = trie.TokenStart[child]; t < trie.TokenStart[child + 1]; t++)
            {
                var id = trie.Tokens[t];
                allowed[id >> 6] |= 1UL << id;
            }

            if (trie.FirstChild[child] >= 0)
            {
                Walk(trie, child, next, depth + 1);
            }
        }
    }
}
