namespace KvChat;

/// <summary>How a family's chat template treats the reasoning of earlier assistant turns.</summary>
internal enum ReasoningHistoryMode
{
    /// <summary>
    /// The template reads the reasoning from the message's <c>reasoning_content</c> and decides itself where it goes
    /// (Qwen3 keeps it only after the last user query). An inline <c>&lt;think&gt;...&lt;/think&gt;</c> block in the
    /// text is split into <c>reasoning_content</c> and content by the client, the way the template splits it.
    /// </summary>
    ReasoningContent,

    /// <summary>
    /// The template splits content at the closing tag but does not read <c>reasoning_content</c>: it keeps only what
    /// follows the last closing tag (DeepSeek-R1 distills). The client does that cut (the template's own substring test
    /// never fires in GenAI) and drops <c>TextReasoningContent</c>.
    /// </summary>
    StripFromContent,

    /// <summary>
    /// The template does nothing with earlier reasoning (it may name the tags in prose, as Phi-4-mini-reasoning's system
    /// prompt does): text is rendered as it is (inline blocks included) and <c>TextReasoningContent</c>, which such a
    /// template never reads, is dropped.
    /// </summary>
    Verbatim,
}

/// <summary>
/// How a reasoning model marks its reasoning (<c>&lt;think&gt;...&lt;/think&gt;</c> before the answer), how its
/// template renders earlier reasoning, and whether the template can switch reasoning off.
/// </summary>
/// <remarks>Immutable and thread-safe.</remarks>
internal sealed class ReasoningFormat
{
    /// <summary>The tags Qwen3, QwQ, DeepSeek-R1 and its distills and Phi-4-reasoning write.</summary>
    public const string ThinkOpen = "<think>";

    /// <summary>The closing tag that goes with <see cref="ThinkOpen"/>.</summary>
    public const string ThinkClose = "</think>";

    /// <summary>Creates a format.</summary>
    /// <param name="open">The text that opens the reasoning.</param>
    /// <param name="close">The text that ends it; the answer follows.</param>
    /// <param name="history">How earlier reasoning is rendered.</param>
    /// <param name="switchVariable">
    /// The template variable that turns reasoning off when set to <c>false</c> (Qwen3's <c>enable_thinking</c>), or
    /// <see langword="null"/> when the template has none.
    /// </param>
    /// <param name="tagTokens">
    /// Token ids that decode to <paramref name="open"/> or <paramref name="close"/> but are special (a streaming decode
    /// drops special tokens, so the reply pipeline puts their text back); may be empty.
    /// </param>
    public ReasoningFormat(string open, string close, ReasoningHistoryMode history, string? switchVariable, IReadOnlyDictionary<int, string> tagTokens)
    {
        ArgumentException.ThrowIfNullOrEmpty(open);
        ArgumentException.ThrowIfNullOrEmpty(close);
        ArgumentNullException.ThrowIfNull(tagTokens);
        Open = open;
        Close = close;
        History = history;
        SwitchVariable = switchVariable;
        TagTokens = tagTokens;
    }

    /// <summary>Gets the text that opens the reasoning.</summary>
    public string Open { get; }

    /// <summary>Gets the text that ends the reasoning.</summary>
    public string Close { get; }

    /// <summary>Gets how earlier reasoning is rendered.</summary>
    public ReasoningHistoryMode History { get; }

    /// <summary>Gets the template variable that turns reasoning off, or <see langword="null"/>.</summary>
    public string? SwitchVariable { get; }

    /// <summary>Gets the special token ids that stand for a tag, with the tag's text.</summary>
    public IReadOnlyDictionary<int, string> TagTokens { get; }

    /// <summary>
    /// Finds the reasoning format of a model from its chat template and added tokens.
    /// </summary>
    /// <param name="chatTemplate">The chat template (Jinja text), or <see langword="null"/>.</param>
    /// <param name="addedTokens">The tokenizer's added tokens.</param>
    /// <returns>
    /// The format when both <c>&lt;think&gt;</c> and <c>&lt;/think&gt;</c> appear in the template or among the added
    /// tokens; <see langword="null"/> otherwise (the model does not reason in a way this client knows). The history mode
    /// is <see cref="ReasoningHistoryMode.ReasoningContent"/> when the template reads <c>reasoning_content</c>,
    /// <see cref="ReasoningHistoryMode.StripFromContent"/> when it splits text at the closing tag
    /// (<c>split('&lt;/think&gt;')</c>), and <see cref="ReasoningHistoryMode.Verbatim"/> otherwise. The switch is <c>enable_thinking</c> when the template
    /// reads it.
    /// </returns>
    public static ReasoningFormat? Detect(string? chatTemplate, IReadOnlyCollection<TokenizerAddedToken> addedTokens)
    {
        ArgumentNullException.ThrowIfNull(addedTokens);
        var template = chatTemplate ?? string.Empty;
        bool Has(string tag) => template.Contains(tag, StringComparison.Ordinal) || addedTokens.Any(t => t.Content == tag);
        if (!Has(ThinkOpen) || !Has(ThinkClose))
        {
            return null;
        }

        var history = template.Contains("reasoning_content", StringComparison.Ordinal) ? ReasoningHistoryMode.ReasoningContent
            : template.Contains($"split('{ThinkClose}')", StringComparison.Ordinal) || template.Contains($"split(\"{ThinkClose}\")", StringComparison.Ordinal)
                ? ReasoningHistoryMode.StripFromContent
            : ReasoningHistoryMode.Verbatim;
        var tags = addedTokens
            .Where(t => t.Special && t.Content is ThinkOpen or ThinkClose)
            .ToDictionary(t => t.Id, t => t.Content);
        var switchVariable = template.Contains("enable_thinking", StringComparison.Ordinal) ? "enable_thinking" : null;
        return new ReasoningFormat(ThinkOpen, ThinkClose, history, switchVariable, tags);
    }

    /// <summary>
    /// Where a reply starts, judged from the end of its rendered prompt: inside the reasoning when the generation
    /// prompt opens it (DeepSeek-R1 distills write <c>&lt;think&gt;\n</c>), in the answer when it has closed it already
    /// (Qwen3 with reasoning switched off writes <c>&lt;think&gt;\n\n&lt;/think&gt;\n\n</c>), and otherwise where the
    /// model decides (it may open the reasoning itself).
    /// </summary>
    /// <param name="renderedPrompt">The prompt text the template rendered, generation prompt included.</param>
    /// <returns>The reply's starting state.</returns>
    public ReasoningStart StartOf(ReadOnlySpan<char> renderedPrompt)
    {
        var tail = renderedPrompt.TrimEnd(" \t\r\n");
        return tail.EndsWith(Open, StringComparison.Ordinal) ? ReasoningStart.InsideReasoning
            : tail.EndsWith(Close, StringComparison.Ordinal) ? ReasoningStart.Answer
            : ReasoningStart.ModelDecides;
    }

    /// <summary>
    /// Splits an assistant text that holds an inline reasoning block, as Qwen3's template does: the reasoning is what
    /// comes before the first closing tag, after the last opening tag before it, with newlines trimmed at both ends;
    /// the answer is what follows the last closing tag, without its leading newlines.
    /// </summary>
    /// <param name="text">The assistant text.</param>
    /// <param name="reasoning">The reasoning, or <see langword="null"/> when the text has no closing tag.</param>
    /// <returns>The answer (the whole text when it has no closing tag).</returns>
    public string SplitInline(string text, out string? reasoning)
    {
        ArgumentNullException.ThrowIfNull(text);
        var first = text.IndexOf(Close, StringComparison.Ordinal);
        if (first < 0)
        {
            reasoning = null;
            return text;
        }

        var before = text.AsSpan(0, first).TrimEnd('\n');
        var open = before.LastIndexOf(Open, StringComparison.Ordinal);
        reasoning = (open < 0 ? before : before[(open + Open.Length)..]).TrimStart('\n').ToString();
        return AfterLastClose(text).TrimStart('\n');
    }

    /// <summary>What follows the last closing tag (the whole text when there is none), as DeepSeek-R1's template keeps it.</summary>
    /// <param name="text">The assistant text.</param>
    /// <returns>The text after the last closing tag.</returns>
    public string AfterLastClose(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var last = text.LastIndexOf(Close, StringComparison.Ordinal);
        return last < 0 ? text : text[(last + Close.Length)..];
    }
}

/// <summary>Where a reply of a reasoning model starts.</summary>
internal enum ReasoningStart
{
    /// <summary>The reply may open a reasoning block at its start (after whitespace); otherwise it is all answer.</summary>
    ModelDecides,

    /// <summary>The prompt opened the reasoning: the reply is reasoning until the closing tag.</summary>
    InsideReasoning,

    /// <summary>The prompt closed the reasoning (or it is off): the reply is all answer.</summary>
    Answer,
}
