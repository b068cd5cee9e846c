namespace KvChat;

/// <summary>
/// Who computes a reply's logits and picks its next token. The decode loop (<c>KvChatClient.Decode</c>) does everything
/// else, once for every source: text and stop strings, tool calls, the token limit, the structured-output constraint,
/// the finish reason, usage, logs and metrics.
/// </summary>
/// <remarks>
/// <para>One instance per reply; not thread-safe. The loop calls, in this order:</para>
/// <list type="number">
/// <item><see cref="Prefill"/> once;</item>
/// <item>per token <see cref="ReadLogits"/>, <see cref="Choose"/> (unless the token is forced), <see cref="Accept"/>,
/// and <see cref="Append"/> unless the reply ends with that token;</item>
/// <item>on success <see cref="Commit"/> then <see cref="Release"/>; on cancellation <see cref="Cancel"/>; on any other
/// failure <see cref="Discard"/>;</item>
/// <item><see cref="Dispose"/> always.</item>
/// </list>
/// </remarks>
internal abstract class TokenSource(int[] prompt) : IDisposable
{
    /// <summary>What <see cref="Choose"/> returns when the source ended the sequence itself.</summary>
    public const int EndOfSequence = -1;

    /// <summary>Gets the prompt the reply continues.</summary>
    public int[] Prompt { get; } = prompt;

    /// <summary>Gets how many leading prompt tokens came from the KV cache (not prefilled).</summary>
    public virtual int CachedTokens => 0;

    /// <summary>Gets whether a cached session was found by prefix.</summary>
    public virtual bool IsHit => false;

    /// <summary>Gets whether serving this reply took over another conversation's session.</summary>
    public virtual bool Evicted => false;

    /// <summary>Gets the most tokens the reply can have before the context is full.</summary>
    public abstract int MaxReplyTokens { get; }

    /// <summary>Gets what the reply is, for error messages ("the reply", "a structured (JSON) reply").</summary>
    public abstract string ReplyKind { get; }

    /// <summary>
    /// Gets whether a cached session holds the reply's tokens once it is committed: the client then remembers the reply's
    /// exact tokens for the next turn, and the test trace reports the session.
    /// </summary>
    public virtual bool HoldsReply => false;

    /// <summary>Gets the tokens the cached session holds (valid until <see cref="Release"/>); empty when none.</summary>
    public virtual IReadOnlyList<int> SessionTokens => [];

    /// <summary>Gets the logits at the end of the prompt when the source keeps them for the test trace.</summary>
    public virtual float[]? PromptLogits => null;

    /// <summary>Computes what the prompt needs before the first token.</summary>
    public abstract void Prefill();

    /// <summary>
    /// Gets the logits of the next token, which the loop may mask in place before <see cref="Choose"/>; empty when the
    /// source picks tokens inside the runtime (and so cannot take a constraint).
    /// </summary>
    /// <param name="step">The number of tokens generated so far.</param>
    public abstract Span<float> ReadLogits(int step);

    /// <summary>Picks the next token from <paramref name="logits"/> (as returned by <see cref="ReadLogits"/>, maybe masked).</summary>
    /// <returns>The token id, or <see cref="EndOfSequence"/> when the source ended the sequence.</returns>
    public abstract int Choose(Span<float> logits);

    /// <summary>Records a token of the reply (chosen or forced), e.g. for penalties.</summary>
    public virtual void Accept(int token)
    {
    }

    /// <summary>Continues the sequence with <paramref name="token"/>: the reply goes on after it.</summary>
    public virtual void Append(int token)
    {
    }

    /// <summary>Records in the cache what the session now holds (the reply succeeded).</summary>
    public virtual void Commit()
    {
    }

    /// <summary>Hands the session back; after this the source touches it no more.</summary>
    public virtual void Release()
    {
    }

    /// <summary>
    /// The reply was cancelled between native calls, so a session holds exactly its recorded tokens: keep what it holds
    /// and hand it back.
    /// </summary>
    public virtual void Cancel()
    {
    }

    /// <summary>Drops a session still held, whose state is unknown after a failure.</summary>
    /// <returns>Whether a session was discarded (none is once it was released or cancelled).</returns>
    public virtual bool Discard() => false;

    /// <summary>Frees what the source holds; a session still held is discarded. Never throws.</summary>
    public abstract void Dispose();
}
