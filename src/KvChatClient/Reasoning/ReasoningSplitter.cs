using System.Text;

namespace KvChat;

/// <summary>What one <see cref="ReasoningSplitter"/> step yields: reasoning text first, then answer text (either may be empty).</summary>
/// <param name="Reasoning">Reasoning text now safe to show.</param>
/// <param name="Answer">Answer text now safe to pass on (to the tool-call parser and stop sequences).</param>
internal readonly record struct ReasoningSplit(string Reasoning, string Answer)
{
    /// <summary>Gets a split with no text.</summary>
    public static ReasoningSplit Empty { get; } = new(string.Empty, string.Empty);
}

/// <summary>
/// Splits a reply that arrives in chunks into its reasoning (<c>&lt;think&gt;...&lt;/think&gt;</c>) and its answer,
/// and holds back what could still be a tag. The tags never reach either text.
/// </summary>
/// <remarks>
/// <para>
/// A reply that starts in <see cref="ReasoningStart.ModelDecides"/> is reasoning when its first non-whitespace text is
/// the opening tag, and otherwise all answer, shown exactly as generated. Whitespace next to the tags is not text:
/// leading and trailing whitespace of the reasoning and the whitespace that separates the closing tag from the answer
/// are dropped (the templates write newlines there and trim them again when they render the history). An opening tag
/// later in the answer, and a second reasoning block, are answer text. A reply that ends inside the reasoning (a token
/// limit) is all reasoning. The result does not depend on how the reply was cut into chunks.
/// </para>
/// <para>
/// Hand-written because no library serves: Microsoft.Extensions.AI defines <c>TextReasoningContent</c> but leaves the
/// parsing to each provider, GenAI 0.18's managed API has no reasoning parser, and the serving stacks that have one
/// (vLLM's reasoning parsers) are Python.
/// </para>
/// <para>One instance serves one reply; not thread-safe.</para>
/// </remarks>
internal sealed class ReasoningSplitter
{
    private const string Whitespace = " \t\r\n";

    private readonly ReasoningFormat _format;
    private readonly StringBuilder _held = new();
    private State _state;
    private bool _trimLeading;

    /// <summary>Creates a splitter for one reply.</summary>
    /// <param name="format">The model's reasoning format.</param>
    /// <param name="start">Where the reply starts (see <see cref="ReasoningFormat.StartOf"/>).</param>
    public ReasoningSplitter(ReasoningFormat format, ReasoningStart start)
    {
        ArgumentNullException.ThrowIfNull(format);
        _format = format;
        _state = start switch
        {
            ReasoningStart.InsideReasoning => State.Reasoning,
            ReasoningStart.Answer => State.Answer,
            _ => State.Start,
        };
        _trimLeading = _state == State.Reasoning;
    }

    private enum State
    {
        Start,
        Reasoning,
        Answer,
    }

    /// <summary>Gets whether the text generated now is reasoning (or may still turn out to be).</summary>
    public bool InReasoning => _state != State.Answer;

    /// <summary>The text of a special token that stands for a tag (its streamed decode is empty), or <see langword="null"/>.</summary>
    /// <param name="token">A generated token id.</param>
    /// <returns>The tag's text, or <see langword="null"/> for any other token.</returns>
    public string? TagText(int token) => _format.TagTokens.Count > 0 && _format.TagTokens.TryGetValue(token, out var tag) ? tag : null;

    /// <summary>Feeds the next chunk of the reply.</summary>
    /// <param name="chunk">The chunk; may be empty.</param>
    /// <returns>The reasoning and answer text now safe to pass on.</returns>
    public ReasoningSplit Append(string chunk)
    {
        ArgumentNullException.ThrowIfNull(chunk);
        if (_state == State.Answer && _held.Length == 0 && !_trimLeading)
        {
            return new ReasoningSplit(string.Empty, chunk);
        }

        _held.Append(chunk);
        return Run(final: false);
    }

    /// <summary>Ends the reply: returns what was held back.</summary>
    /// <returns>The rest of the reasoning or answer.</returns>
    public ReasoningSplit Complete() => Run(final: true);

    private ReasoningSplit Run(bool final)
    {
        var reasoning = string.Empty;
        if (_state == State.Start)
        {
            var text = _held.ToString();
            var lead = text.AsSpan().TrimStart(Whitespace);
            if (lead.StartsWith(_format.Open, StringComparison.Ordinal))
            {
                _held.Clear().Append(lead[_format.Open.Length..]);
                _state = State.Reasoning;
                _trimLeading = true;
            }
            else if (!final && (lead.IsEmpty || _format.Open.AsSpan().StartsWith(lead, StringComparison.Ordinal)))
            {
                return ReasoningSplit.Empty; // Still may open the reasoning.
            }
            else
            {
                _held.Clear();
                _state = State.Answer;
                return new ReasoningSplit(string.Empty, text);
            }
        }

        if (_state == State.Reasoning)
        {
            var text = _held.ToString();
            var span = _trimLeading ? text.AsSpan().TrimStart(Whitespace) : text.AsSpan();
            if (span.IsEmpty && !final)
            {
                _held.Clear();
                return ReasoningSplit.Empty;
            }

            _trimLeading = false;
            var close = span.IndexOf(_format.Close, StringComparison.Ordinal);
            if (close < 0)
            {
                // Hold what could be the start of the closing tag, and trailing whitespace (it may precede the tag).
                var keep = 0;
                if (!final)
                {
                    var partial = PartialTagLength(span, _format.Close);
                    keep = span.Length - span[..(span.Length - partial)].TrimEnd(Whitespace).Length;
                }

                var shown = span[..(span.Length - keep)];
                if (final)
                {
                    shown = shown.TrimEnd(Whitespace);
                }

                reasoning = shown.ToString();
                var rest = span[(span.Length - keep)..].ToString();
                _held.Clear().Append(rest);
                return new ReasoningSplit(reasoning, string.Empty);
            }

            reasoning = span[..close].TrimEnd(Whitespace).ToString();
            var after = span[(close + _format.Close.Length)..].ToString();
            _held.Clear().Append(after);
            _state = State.Answer;
            _trimLeading = true;
        }

        // Answer: drop the whitespace that separates it from the closing tag, then pass everything on.
        var answer = _held.ToString();
        if (_trimLeading)
        {
            var trimmed = answer.AsSpan().TrimStart(Whitespace);
            if (trimmed.IsEmpty && !final)
            {
                _held.Clear();
                return new ReasoningSplit(reasoning, string.Empty);
            }

            answer = trimmed.ToString();
            _trimLeading = false;
        }

        _held.Clear();
        return new ReasoningSplit(reasoning, answer);
    }

    /// <summary>The length of the longest suffix of <paramref name="text"/> that is a proper prefix of <paramref name="tag"/>.</summary>
    private static int PartialTagLength(ReadOnlySpan<char> text, string tag)
    {
        for (var length = Math.Min(text.Length, tag.Length - 1); length > 0; length--)
        {
            if (tag.AsSpan(0, length).SequenceEqual(text[^length..]))
            {
                return length;
            }
        }

        return 0;
    }
}
