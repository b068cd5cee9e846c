namespace KvChat;

/// <summary>
/// Finds stop sequences in text that arrives in chunks, and says which text is safe to show.
/// </summary>
/// <remarks>
/// <para>
/// Feed every decoded chunk to <see cref="Append"/> and show what it emits; at the end of
/// generation, show what <see cref="Flush"/> returns. The emitted text, concatenated, is exactly the
/// generated text up to (not including) the earliest occurrence of any stop sequence, or all of it
/// when none occurs; nothing after a stop sequence is ever emitted.
/// </para>
/// <para>
/// Text that could still turn out to be the start of a stop sequence is held back until it is
/// decided, so the held-back text is always shorter than the longest stop sequence, except while a
/// completed stop sequence waits on a longer one that started earlier and may still complete (stops
/// <c>"abcd"</c> and <c>"c"</c> over <c>"abc"</c>: the earliest occurrence wins, so <c>"c"</c> is
/// confirmed only when the next character rules out <c>"abcd"</c>, or at <see cref="Flush"/>).
/// </para>
/// <para>
/// Matching is ordinal (UTF-16 code units, case-sensitive). One instance serves one generation and
/// is not thread-safe.
/// </para>
/// </remarks>
internal sealed class StopSequenceMatcher
{
    private readonly string[] _stopSequences;
    private readonly int _maxLength;
    private string _pending = string.Empty;
    private bool _flushed;

    /// <summary>
    /// Creates a matcher for <paramref name="stopSequences"/>.
    /// </summary>
    /// <param name="stopSequences">
    /// The stop sequences; may be empty (the matcher then only passes text through). Each must be
    /// non-empty.
    /// </param>
    /// <exception cref="ArgumentException">A stop sequence is <see langword="null"/> or empty.</exception>
    public StopSequenceMatcher(IReadOnlyList<string> stopSequences)
    {
        ArgumentNullException.ThrowIfNull(stopSequences);
        _stopSequences = new string[stopSequences.Count];
        for (var i = 0; i < _stopSequences.Length; i++)
        {
            var stop = stopSequences[i];
            if (string.IsNullOrEmpty(stop))
            {
                throw new ArgumentException(
                    $"The stop sequence at index {i} is {(stop is null ? "null" : "empty")}; every stop sequence must have at least one character.",
                    nameof(stopSequences));
            }

            _stopSequences[i] = stop;
            _maxLength = Math.Max(_maxLength, stop.Length);
        }
    }

    /// <summary>
    /// Gets whether a stop sequence has been matched, by <see cref="Append"/> or by <see cref="Flush"/>.
    /// </summary>
    public bool IsStopped { get; private set; }

    /// <summary>
    /// Feeds the next chunk of generated text.
    /// </summary>
    /// <param name="chunk">The chunk; may be empty.</param>
    /// <param name="emit">
    /// The text that is now safe to show (possibly empty). When this method returns
    /// <see langword="true"/>, the text before the stop sequence that is not shown yet.
    /// </param>
    /// <returns>
    /// <see langword="true"/> when a stop sequence has completed: generation should stop, and the
    /// stop sequence and everything after it are dropped. Once it has returned
    /// <see langword="true"/>, later calls return <see langword="true"/> and emit nothing.
    /// </returns>
    /// <exception cref="InvalidOperationException"><see cref="Flush"/> has been called.</exception>
    public bool Append(string chunk, out string emit)
    {
        ArgumentNullException.ThrowIfNull(chunk);
        if (IsStopped)
        {
            emit = string.Empty;
            return true;
        }

        if (_flushed)
        {
            throw new InvalidOperationException("The matcher has been flushed; use a new matcher for a new generation.");
        }

        if (chunk.Length == 0)
        {
            emit = string.Empty;
            return false;
        }

        var text = _pending.Length == 0 ? chunk : string.Concat(_pending, chunk);
        var match = IndexOfEarliestMatch(text);
        var limit = match >= 0 ? match : text.Length;
        var hold = IndexOfEarliestPossibleStart(text, limit);
        if (match >= 0 && hold == match)
        {
            // No stop sequence that starts earlier can still complete: the match is final.
            IsStopped = true;
            _pending = string.Empty;
            emit = text[..match];
            return true;
        }

        emit = text[..hold];
        _pending = text[hold..];
        return false;
    }

    /// <summary>
    /// Ends the text: returns the held-back text that is safe to show.
    /// </summary>
    /// <returns>
    /// The held-back text, cut before a stop sequence if one completed but was still waiting on a
    /// longer one (then <see cref="IsStopped"/> becomes <see langword="true"/>); empty once a stop
    /// sequence has been reported.
    /// </returns>
    public string Flush()
    {
        _flushed = true;
        if (IsStopped)
        {
            return string.Empty;
        }

        var text = _pending;
        _pending = string.Empty;
        var match = IndexOfEarliestMatch(text);
        if (match < 0)
        {
            return text;
        }

        IsStopped = true;
        return text[..match];
    }

    private int IndexOfEarliestMatch(string text)
    {
        var earliest = -1;
        foreach (var stop in _stopSequences)
        {
            var searchLength = earliest < 0 ? text.Length : Math.Min(text.Length, earliest + stop.Length - 1);
            var index = text.AsSpan(0, searchLength).IndexOf(stop, StringComparison.Ordinal);
            if (index >= 0 && (earliest < 0 || index < earliest))
            {
                earliest = index;
            }
        }

        return earliest;
    }

    // The smallest i < limit such that text[i..] is a proper prefix of some stop sequence (an
    // occurrence starting at i could still complete), or limit when there is none.
    private int IndexOfEarliestPossibleStart(string text, int limit)
    {
        for (var i = Math.Max(0, text.Length - _maxLength + 1); i < limit; i++)
        {
            var tail = text.AsSpan(i);
            foreach (var stop in _stopSequences)
            {
                if (stop.Length > tail.Length && stop.AsSpan().StartsWith(tail, StringComparison.Ordinal))
                {
                    return i;
                }
            }
        }

        return limit;
    }
}
