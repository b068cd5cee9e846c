using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.AI;

namespace KvChat;

/// <summary>What one <see cref="ToolCallParser.Append"/> or <see cref="ToolCallParser.Complete"/> yields.</summary>
/// <param name="Text">Text that is now safe to show as the reply's text (possibly empty); never holds call markup.</param>
/// <param name="Calls">The calls completed by this step, in reply order (possibly empty); malformed ones have <see cref="FunctionCallContent.Exception"/> set.</param>
internal readonly record struct ToolCallParseResult(string Text, IReadOnlyList<FunctionCallContent> Calls)
{
    /// <summary>Gets a result with no text and no calls.</summary>
    public static ToolCallParseResult Empty { get; } = new(string.Empty, []);
}

/// <summary>
/// Finds tool calls in a reply that arrives in chunks, and says which text is safe to show.
/// </summary>
/// <remarks>
/// <para>
/// Use it only when tools were offered: it takes any text in its format's call syntax for a call. Feed every decoded
/// chunk to <see cref="Append"/> and, when generation ends, call <see cref="Complete"/> once; show the text each step
/// returns and collect the calls. The result does not depend on how the reply was cut into chunks.
/// </para>
/// <para>
/// <b>Text.</b> Call markup (markers and the JSON between them) never reaches the text. Text that could still turn
/// out to be the start of an opening marker is held back until it is decided, like <see cref="StopSequenceMatcher"/>
/// does, so the held text is shorter than the longest marker. In a <see cref="ToolCallFormat.BareJsonReply"/> format,
/// a reply that starts (after whitespace) with a prefix of <c>{"name"</c> or <c>[{"name"</c> is held until that is
/// decided; once it is, the whole reply is held to the end, since it may be a call. Whitespace (space, tab, CR, LF)
/// next to a call is dropped: the newline a template writes between text and a call is not text. Other whitespace is
/// kept, though trailing whitespace is held until non-whitespace text follows (or the end). With no call in the
/// reply, the shown text is exactly the reply.
/// </para>
/// <para>
/// <b>Calls.</b> A call block is returned when its closing marker arrives; a block without a closing marker, and a
/// bare JSON reply, are read at <see cref="Complete"/>. See <see cref="ToolCallReader"/> for the JSON accepted and for
/// malformed calls: invalid JSON, a missing or empty name, arguments that are not an object, a tool that was not
/// offered, an empty block, and a block still open at <see cref="Complete"/> each become a call with
/// <see cref="FunctionCallContent.Exception"/> set, its raw text in <see cref="AIContent.RawRepresentation"/> and in
/// the exception message. Nothing is dropped and nothing throws. Each call gets a fresh id (<c>call_</c> and 16 hex
/// digits by default).
/// </para>
/// <para>
/// Not handled: a closing marker inside a JSON string ends the block early (the JSON is then malformed); markers are
/// matched ordinally; a stray closing marker outside a block is text; a bare JSON call is only recognised at the start
/// of the reply. One instance serves one reply and is not thread-safe.
/// </para>
/// </remarks>
internal sealed class ToolCallParser
{
    private const string Whitespace = " \t\r\n";

    private readonly ToolCallFormat _format;
    private readonly ToolCallReader _reader;
    private readonly StringBuilder _body = new();
    private readonly StringBuilder _text = new();
    private readonly List<FunctionCallContent> _calls = [];
    private string _buffer = string.Empty;
    private string _pendingWhitespace = string.Empty;
    private State _state = State.Text;
    private ToolCallMarker _marker;
    private int _closeSearchFrom;
    private bool _dropLeadingWhitespace;
    private bool _bareLeadPossible;
    private bool _completed;

    /// <summary>
    /// Creates a parser for one reply.
    /// </summary>
    /// <param name="format">The model's tool-call format (see <see cref="ToolCallFormat.Detect"/>).</param>
    /// <param name="toolNames">
    /// The names of the offered tools (ordinal); a call to another name is malformed. <see langword="null"/> accepts any
    /// name.
    /// </param>
    /// <param name="newCallId">Makes call ids; <see langword="null"/> for <c>call_</c> plus 16 random hex digits.</param>
    public ToolCallParser(ToolCallFormat format, IEnumerable<string>? toolNames = null, Func<string>? newCallId = null)
    {
        ArgumentNullException.ThrowIfNull(format);
        _format = format;
        _reader = new ToolCallReader(toolNames, newCallId ?? NewCallId);
        _bareLeadPossible = format.BareJsonReply;
    }

    private enum State
    {
        Text,
        Block,
        BareReply,
    }

    /// <summary>Gets the number of calls returned so far, malformed ones included.</summary>
    public int CallCount { get; private set; }

    /// <summary>
    /// Gets whether the parser is inside call markup (a block whose end has not come, or a bare JSON reply): the text
    /// generated now is held as a call, not shown.
    /// </summary>
    public bool IsInsideCall => _state != State.Text;

    /// <summary>
    /// Feeds the next chunk of the reply.
    /// </summary>
    /// <param name="chunk">The chunk; may be empty.</param>
    /// <returns>The text now safe to show and the calls completed by this chunk.</returns>
    /// <exception cref="InvalidOperationException"><see cref="Complete"/> has been called.</exception>
    public ToolCallParseResult Append(string chunk)
    {
        ArgumentNullException.ThrowIfNull(chunk);
        if (_completed)
        {
            throw new InvalidOperationException("The parser has completed; use a new parser for a new reply.");
        }

        if (chunk.Length == 0)
        {
            return ToolCallParseResult.Empty;
        }

        if (_state == State.Text)
        {
            _buffer = _buffer.Length == 0 ? chunk : string.Concat(_buffer, chunk);
        }
        else
        {
            _body.Append(chunk);
        }

        Run(final: false);
        return TakeResult();
    }

    /// <summary>
    /// Ends the reply: returns the held-back text and the calls that end with the reply (a block without a closing
    /// marker, a bare JSON reply, or a malformed call for a block that was never closed).
    /// </summary>
    /// <returns>The rest of the text and the last calls.</returns>
    /// <exception cref="InvalidOperationException"><see cref="Complete"/> has already been called.</exception>
    public ToolCallParseResult Complete()
    {
        if (_completed)
        {
            throw new InvalidOperationException("The parser has already completed.");
        }

        _completed = true;
        Run(final: true);
        _text.Append(_pendingWhitespace);
        _pendingWhitespace = string.Empty;
        return TakeResult();
    }

    private void Run(bool final)
    {
        while (true)
        {
            switch (_state)
            {
                case State.Text:
                    if (!RunText(final))
                    {
                        return;
                    }

                    break;
                case State.Block when _marker.Close is { } close:
                    if (!RunBlock(close, final))
                    {
                        return;
                    }

                    break;
                default:
                    // A block that runs to the end of the reply, or a bare JSON reply: read it at the end.
                    if (final)
                    {
                        FinishOpenEnded();
                    }

                    return;
            }
        }
    }

    // Returns true when the state changed and Run should go on.
    private bool RunText(bool final)
    {
        var text = _buffer;
        if (_bareLeadPossible)
        {
            var start = SkipWhitespace(text, 0);
            var lead = MatchBareLead(text.AsSpan(start));
            if (lead == Lead.Maybe && !final)
            {
                return false;
            }

            _bareLeadPossible = false;
            if (lead == Lead.Yes)
            {
                _pendingWhitespace = string.Empty;
                _buffer = string.Empty;
                _body.Clear().Append(text);
                _state = State.BareReply;
                return true;
            }
        }

        var (index, marker) = FindOpening(text);
        if (index >= 0)
        {
            EmitText(text.AsSpan(0, index));
            _pendingWhitespace = string.Empty;
            _buffer = string.Empty;
            _body.Clear().Append(text, index + marker.Open.Length, text.Length - index - marker.Open.Length);
            _marker = marker;
            _closeSearchFrom = 0;
            _state = State.Block;
            return true;
        }

        var hold = final ? text.Length : IndexOfPossibleOpening(text);
        EmitText(text.AsSpan(0, hold));
        _buffer = text[hold..];
        return false;
    }

    private bool RunBlock(string close, bool final)
    {
        var end = IndexOf(_body, close, _closeSearchFrom);
        if (end < 0)
        {
            if (final)
            {
                var open = _body.ToString();
                Add(_reader.Unterminated(close, open, _marker.Open + open));
                _body.Clear();
                _state = State.Text;
                return false;
            }

            _closeSearchFrom = Math.Max(0, _body.Length - close.Length + 1);
            return false;
        }

        var body = _body.ToString(0, end);
        var rest = _body.ToString(end + close.Length, _body.Length - end - close.Length);
        _body.Clear();
        var first = _calls.Count;
        _reader.Read(body, _marker.Open + body + close, trailingTextAllowed: false, _calls);
        CallCount += _calls.Count - first;
        _buffer = rest;
        _state = State.Text;
        _dropLeadingWhitespace = true;
        return true;
    }

    private void FinishOpenEnded()
    {
        var body = _body.ToString();
        _body.Clear();
        var first = _calls.Count;
        if (_state == State.BareReply)
        {
            _state = State.Text;
            if (!_reader.IsBareCall(body[SkipWhitespace(body, 0)..]))
            {
                EmitText(body);
                return;
            }

            var trailing = _reader.Read(body, body, trailingTextAllowed: true, _calls);
            CallCount += _calls.Count - first;
            _dropLeadingWhitespace = true;
            EmitText(body.AsSpan(trailing));
            return;
        }

        _state = State.Text;
        var rest = _reader.Read(body, _marker.Open + body, trailingTextAllowed: true, _calls);
        CallCount += _calls.Count - first;
        _dropLeadingWhitespace = true;
        EmitText(body.AsSpan(rest));
    }

    private void Add(FunctionCallContent call)
    {
        _calls.Add(call);
        CallCount++;
    }

    // Shows text, dropping whitespace right after a call and holding trailing whitespace (it is dropped if a call
    // follows).
    private void EmitText(ReadOnlySpan<char> text)
    {
        if (_dropLeadingWhitespace)
        {
            text = text.TrimStart(Whitespace);
            if (text.IsEmpty)
            {
                return;
            }

            _dropLeadingWhitespace = false;
        }

        if (text.IsEmpty)
        {
            return;
        }

        var end = text.TrimEnd(Whitespace).Length;
        if (end == 0)
        {
            _pendingWhitespace = string.Concat(_pendingWhitespace, text);
            return;
        }

        _text.Append(_pendingWhitespace).Append(text[..end]);
        _pendingWhitespace = text[end..].ToString();
    }

    private ToolCallParseResult TakeResult()
    {
        if (_text.Length == 0 && _calls.Count == 0)
        {
            return ToolCallParseResult.Empty;
        }

        var result = new ToolCallParseResult(_text.ToString(), _calls.Count == 0 ? [] : [.. _calls]);
        _text.Clear();
        _calls.Clear();
        return result;
    }

    private (int Index, ToolCallMarker Marker) FindOpening(string text)
    {
        var best = -1;
        ToolCallMarker found = default;
        foreach (var marker in _format.Markers)
        {
            var index = text.IndexOf(marker.Open, StringComparison.Ordinal);
            if (index >= 0 && (best < 0 || index < best))
            {
                best = index;
                found = marker;
            }
        }

        return (best, found);
    }

    // The smallest i such that text[i..] is a proper prefix of an opening marker, or text.Length.
    private int IndexOfPossibleOpening(string text)
    {
        for (var i = Math.Max(0, text.Length - _format.MaxOpenLength + 1); i < text.Length; i++)
        {
            var tail = text.AsSpan(i);
            foreach (var marker in _format.Markers)
            {
                if (marker.Open.Length > tail.Length && marker.Open.AsSpan().StartsWith(tail, StringComparison.Ordinal))
                {
                    return i;
                }
            }
        }

        return text.Length;
    }

    private enum Lead
    {
        No,
        Maybe,
        Yes,
    }

    // Matches {"name" or [{"name" with optional whitespace after the brackets.
    private static Lead MatchBareLead(ReadOnlySpan<char> text)
    {
        if (text.IsEmpty)
        {
            return Lead.Maybe;
        }

        var i = 0;
        if (text[0] == '[')
        {
            i = SkipWhitespace(text, 1);
            if (i == text.Length)
            {
                return Lead.Maybe;
            }
        }

        if (text[i] != '{')
        {
            return Lead.No;
        }

        i = SkipWhitespace(text, i + 1);
        const string Key = "\"name\"";
        for (var k = 0; k < Key.Length; k++, i++)
        {
            if (i == text.Length)
            {
                return Lead.Maybe;
            }

            if (text[i] != Key[k])
            {
                return Lead.No;
            }
        }

        return Lead.Yes;
    }

    private static int SkipWhitespace(ReadOnlySpan<char> text, int from)
    {
        while (from < text.Length && Whitespace.Contains(text[from]))
        {
            from++;
        }

        return from;
    }

    private static int IndexOf(StringBuilder text, string value, int from)
    {
        if (text.Length - from < value.Length)
        {
            return -1;
        }

        var index = text.ToString(from, text.Length - from).IndexOf(value, StringComparison.Ordinal);
        return index < 0 ? -1 : from + index;
    }

    private static string NewCallId() => "call_" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8));
}
