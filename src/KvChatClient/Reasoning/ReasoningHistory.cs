namespace KvChat;

/// <summary>
/// How an assistant message's reasoning enters the template, so that the prompt is what Hugging Face's Jinja2 rendering
/// of the same history gives. GenAI's template engine evaluates every substring test (<c>'&lt;/think&gt;' in content</c>)
/// as false, so templates that split an inline reasoning block themselves never do: the client splits it here, the
/// same way, and hands the template its <c>reasoning_content</c>.
/// </summary>
internal static class ReasoningHistory
{
    /// <summary>
    /// Prepares an assistant message: returns the content to render and sets <paramref name="reasoning"/> to the
    /// <c>reasoning_content</c> to pass (or <see langword="null"/> to pass none).
    /// </summary>
    /// <param name="format">The model's reasoning format, or <see langword="null"/> for a model that does not reason.</param>
    /// <param name="text">The message's text.</param>
    /// <param name="reasoning">In: the message's <c>TextReasoningContent</c> text, or <see langword="null"/>. Out: what to pass.</param>
    /// <returns>The content to render.</returns>
    /// <remarks>
    /// <list type="bullet">
    /// <item>
    /// <see cref="ReasoningHistoryMode.ReasoningContent"/> (Qwen3): reasoning given as content is passed as it is, and the
    /// text is left alone (the template then ignores any inline block, as it does in Jinja2); otherwise an inline block
    /// is split off as the template would (<see cref="ReasoningFormat.SplitInline"/>). The template decides where the
    /// reasoning goes (Qwen3 drops it from the turns before the last user query).
    /// </item>
    /// <item><see cref="ReasoningHistoryMode.StripFromContent"/> (DeepSeek-R1): only what follows the last closing tag is kept.</item>
    /// <item>
    /// <see cref="ReasoningHistoryMode.Verbatim"/>, or no reasoning format: the text is kept as it is and reasoning given
    /// as content is dropped (the template has nowhere to put it).
    /// </item>
    /// </list>
    /// </remarks>
    public static string Prepare(ReasoningFormat? format, string text, ref string? reasoning)
    {
        switch (format?.History)
        {
            case ReasoningHistoryMode.ReasoningContent:
                if (reasoning is null && text.Contains(format.Close, StringComparison.Ordinal))
                {
                    return format.SplitInline(text, out reasoning);
                }

                return text;
            case ReasoningHistoryMode.StripFromContent:
                reasoning = null;
                return format.AfterLastClose(text);
            default:
                reasoning = null;
                return text;
        }
    }
}
