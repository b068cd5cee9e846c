namespace KvChat;

/// <summary>A pair of markers around tool calls in a reply.</summary>
/// <param name="Open">The text that opens a call block, e.g. <c>&lt;tool_call&gt;</c>. Never empty.</param>
/// <param name="Close">
/// The text that closes the block, e.g. <c>&lt;/tool_call&gt;</c>; <see langword="null"/> when the block runs to the
/// end of the reply (Llama 3's <c>&lt;|python_tag|&gt;</c>, whose end is the <c>&lt;|eom_id|&gt;</c> end-of-sequence
/// token, which never reaches the text).
/// </param>
internal readonly record struct ToolCallMarker(string Open, string? Close);

/// <summary>
/// How one family of chat templates writes tool calls into a reply: the markers around call blocks, and whether a
/// reply that is bare JSON is a call. The body of every block is JSON (see <see cref="ToolCallParser"/>).
/// </summary>
/// <remarks>
/// <para>
/// The three built-in formats are <see cref="Hermes"/> (Qwen2.5, Hermes, ChatML models), <see cref="Phi"/>
/// (Phi-4-mini) and <see cref="Llama3"/>. Another family plugs in by constructing a format with its own markers, for
/// example Mistral's <c>[TOOL_CALLS]</c> followed by a JSON array: <c>new("mistral", [new("[TOOL_CALLS]", null)],
/// bareJsonReply: false)</c>. Bodies that are not JSON (Llama 3.2's pythonic calls) are not supported: they become
/// malformed calls.
/// </para>
/// <para>Instances are immutable and thread-safe.</para>
/// </remarks>
internal sealed class ToolCallFormat
{
    /// <summary>
    /// Creates a format.
    /// </summary>
    /// <param name="name">A short name for logs and messages.</param>
    /// <param name="markers">
    /// The call-block markers. No opening marker may be a prefix of another (the parser could not tell which one
    /// starts), and there may be none when <paramref name="bareJsonReply"/> is set.
    /// </param>
    /// <param name="bareJsonReply">
    /// Whether a reply that starts (after whitespace) with <c>{"name"</c> or <c>[{"name"</c> is a call with no
    /// markers, as Llama 3 writes them.
    /// </param>
    /// <exception cref="ArgumentException">A marker is empty, an opening marker is a prefix of another, or there is no way to write a call.</exception>
    public ToolCallFormat(string name, IReadOnlyList<ToolCallMarker> markers, bool bareJsonReply)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentNullException.ThrowIfNull(markers);
        if (markers.Count == 0 && !bareJsonReply)
        {
            throw new ArgumentException($"Tool-call format '{name}' has no markers and does not take bare JSON replies: it could never find a call.", nameof(markers));
        }

        for (var i = 0; i < markers.Count; i++)
        {
            var (open, close) = markers[i];
            if (string.IsNullOrEmpty(open) || close is { Length: 0 })
            {
                throw new ArgumentException($"Marker {i} of tool-call format '{name}' has an empty {(string.IsNullOrEmpty(open) ? "opening" : "closing")} text.", nameof(markers));
            }

            for (var j = 0; j < markers.Count; j++)
            {
                if (i != j && markers[j].Open is { } other && other.StartsWith(open, StringComparison.Ordinal))
                {
                    throw new ArgumentException($"Opening marker '{open}' of tool-call format '{name}' is a prefix of '{other}'.", nameof(markers));
                }
            }
        }

        Name = name;
        Markers = [.. markers];
        BareJsonReply = bareJsonReply;
        MaxOpenLength = markers.Count == 0 ? 0 : markers.Max(m => m.Open.Length);
    }

    /// <summary>
    /// Hermes / Qwen2.5: <c>&lt;tool_call&gt;\n{"name": ..., "arguments": {...}}\n&lt;/tool_call&gt;</c>, one block per
    /// call, several blocks in a reply, text allowed around them.
    /// </summary>
    public static ToolCallFormat Hermes { get; } = new("hermes", [new("<tool_call>", "</tool_call>")], bareJsonReply: false)
    {
        RequiredOpening = "<tool_call>\n{\"name\": \"",
        ArgumentsKey = "arguments",
    };

    /// <summary>
    /// Phi-4-mini: <c>&lt;|tool_call|&gt;[{"name": ..., "arguments": {...}}, ...]&lt;|/tool_call|&gt;</c>, a JSON array of
    /// calls in one block.
    /// </summary>
    public static ToolCallFormat Phi { get; } = new("phi", [new("<|tool_call|>", "<|/tool_call|>")], bareJsonReply: false)
    {
        RequiredOpening = "<|tool_call|>[{\"name\": \"",
        ArgumentsKey = "arguments",
    };

    /// <summary>
    /// Llama 3.1 / 3.2 / 3.3: the whole reply is <c>{"name": ..., "parameters": {...}}</c> (also <c>"arguments"</c>),
    /// possibly after <c>&lt;|python_tag|&gt;</c> (which only reaches the text when special tokens are decoded).
    /// </summary>
    public static ToolCallFormat Llama3 { get; } = new("llama3", [new("<|python_tag|>", null)], bareJsonReply: true)
    {
        RequiredOpening = "{\"name\": \"",
        ArgumentsKey = "parameters",
    };

    /// <summary>
    /// Gets the text a reply starts with when a tool call is required (<c>ToolMode.RequireAny</c>): the format's opening
    /// up to the tool name, as the family's chat template renders a call; <see langword="null"/> when the format has none.
    /// </summary>
    public string? RequiredOpening { get; init; }

    /// <summary>Gets the JSON key the family's template renders a call's arguments under.</summary>
    public string ArgumentsKey { get; init; } = "arguments";

    /// <summary>The forced start of a reply that must call a tool, or a specific one (<c>RequireSpecific</c>).</summary>
    public string? ForcedReplyPrefix(string? toolName)
        => RequiredOpening is null ? null : toolName is null ? RequiredOpening : $"{RequiredOpening}{toolName}\", \"{ArgumentsKey}\": ";

    /// <summary>Gets the format's short name.</summary>
    public string Name { get; }

    /// <summary>Gets the call-block markers.</summary>
    public IReadOnlyList<ToolCallMarker> Markers { get; }

    /// <summary>Gets whether a reply that starts with <c>{"name"</c> or <c>[{"name"</c> is a call without markers.</summary>
    public bool BareJsonReply { get; }

    /// <summary>Gets the length of the longest opening marker (0 when there are none).</summary>
    internal int MaxOpenLength { get; }

    /// <summary>
    /// Picks the format a model writes tool calls in from its chat template and added tokens.
    /// </summary>
    /// <param name="chatTemplate">The model's chat template (Jinja text), or <see langword="null"/> when it has none.</param>
    /// <param name="addedTokens">The contents of the tokenizer's added tokens (special or not); may be empty.</param>
    /// <returns>
    /// The first format whose evidence is present, checked in this order, or <see langword="null"/> when none fits (the
    /// model has no known way to call tools: the caller should not offer tools to it, or render them and accept that no
    /// call will be recognised):
    /// <list type="number">
    /// <item><see cref="Hermes"/> when the template or an added token contains <c>&lt;tool_call&gt;</c>;</item>
    /// <item><see cref="Phi"/> when the template or an added token contains <c>&lt;|tool_call|&gt;</c>;</item>
    /// <item>
    /// <see cref="Llama3"/> when <c>&lt;|start_header_id|&gt;</c> is in the template or the added tokens and the template
    /// has an <c>ipython</c> role or <c>&lt;|python_tag|&gt;</c> is in the template or the added tokens (Llama 3.0's
    /// template, which has neither, knows no tools).
    /// </item>
    /// </list>
    /// Matching is ordinal and looks for the marker text anywhere, so a template that only mentions a marker in prose
    /// also selects its format.
    /// </returns>
    public static ToolCallFormat? Detect(string? chatTemplate, IReadOnlyCollection<string>? addedTokens)
    {
        var template = chatTemplate ?? string.Empty;
        addedTokens ??= [];
        bool Has(string marker) => template.Contains(marker, StringComparison.Ordinal) || addedTokens.Any(t => t is not null && t.Contains(marker, StringComparison.Ordinal));

        if (Has("<tool_call>"))
        {
            return Hermes;
        }

        if (Has("<|tool_call|>"))
        {
            return Phi;
        }

        if (Has("<|start_header_id|>") && (template.Contains("ipython", StringComparison.Ordinal) || Has("<|python_tag|>")))
        {
            return Llama3;
        }

        return null;
    }

    /// <inheritdoc/>
    public override string ToString() => Name;
}
