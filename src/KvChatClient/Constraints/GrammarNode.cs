namespace KvChat;

/// <summary>The kinds of <see cref="GrammarNode"/>, switched on by <see cref="GrammarMatcher"/>.</summary>
internal enum GrammarKind
{
    /// <summary>A JSON value of some types, with per-type constraints (<see cref="JsonValueNode"/>).</summary>
    Value,

    /// <summary>Fixed bytes (<see cref="LiteralNode"/>).</summary>
    Literal,

    /// <summary>One of a set of byte strings, e.g. an enum's values (<see cref="LiteralSetNode"/>).</summary>
    LiteralSet,

    /// <summary>Children one after the other (<see cref="SequenceNode"/>).</summary>
    Sequence,

    /// <summary>Any one of the children (<see cref="ChoiceNode"/>): the matcher follows each alternative at once.</summary>
    Choice,

    /// <summary>Free text in which a marker opens a constrained part (<see cref="TextWithMarkerNode"/>).</summary>
    Text,
}

/// <summary>
/// A node of the byte-level grammar a constrained reply follows: JSON values from a schema, plus the literals,
/// sequences and choices that tool-call formats need. Nodes form a graph (a <c>$ref</c> cycle is a cycle). Immutable
/// once built.
/// </summary>
internal abstract class GrammarNode(GrammarKind kind)
{
    /// <summary>Gets the kind, so the matcher switches on a field instead of calling virtually per byte.</summary>
    public GrammarKind Kind { get; } = kind;
}

/// <summary>Fixed bytes, matched exactly.</summary>
internal sealed class LiteralNode(byte[] bytes) : GrammarNode(GrammarKind.Literal)
{
    public byte[] Bytes { get; } = bytes;

    public static LiteralNode Of(string text) => new(System.Text.Encoding.UTF8.GetBytes(text));
}

/// <summary>One of several byte strings (an enum's or const's canonical JSON, or a tool's name).</summary>
internal sealed class LiteralSetNode(ByteTrie set) : GrammarNode(GrammarKind.LiteralSet)
{
    public ByteTrie Set { get; } = set;
}

/// <summary>Children in order; an empty sequence matches nothing (the empty string).</summary>
internal sealed class SequenceNode(GrammarNode[] children) : GrammarNode(GrammarKind.Sequence)
{
    public GrammarNode[] Children { get; } = children;
}

/// <summary>Alternatives; the matcher runs them side by side until the bytes tell them apart.</summary>
internal sealed class ChoiceNode : GrammarNode
{
    public ChoiceNode(GrammarNode[] alternatives)
        : base(GrammarKind.Choice) => Alternatives = alternatives;

    /// <summary>Gets the alternatives; set once while a schema with a cycle is compiled.</summary>
    public GrammarNode[] Alternatives { get; internal set; }
}

/// <summary>
/// Free text (any bytes), in which every occurrence of <see cref="Marker"/> must be followed by <see cref="AfterMarker"/>
/// (a tool call's body), and then free text again: tool calls in <c>ToolMode.Auto</c> with constrained arguments.
/// </summary>
/// <remarks>The marker's first byte must not occur again inside it (true of every call marker), so matching restarts simply.</remarks>
internal sealed class TextWithMarkerNode(byte[] marker, GrammarNode afterMarker) : GrammarNode(GrammarKind.Text)
{
    public byte[] Marker { get; } = marker;

    public GrammarNode AfterMarker { get; } = afterMarker;
}

/// <summary>The JSON types a <see cref="JsonValueNode"/> accepts.</summary>
[Flags]
internal enum JsonTypes
{
    None = 0,
    Null = 1,
    Boolean = 2,
    Integer = 4,
    Number = 8,
    String = 16,
    Array = 32,
    Object = 64,
    Any = Null | Boolean | Integer | Number | String | Array | Object,
}

/// <summary>How the grammar writes JSON whitespace outside strings.</summary>
internal enum JsonWhitespace
{
    /// <summary>None at all: <c>{"a":1,"b":[1,2]}</c>.</summary>
    Compact,

    /// <summary>
    /// One space after every <c>:</c> and <c>,</c>, as Python's <c>json.dumps</c> and the chat templates' <c>tojson</c>
    /// write (<c>{"a": 1, "b": [1, 2]}</c>), so a tool call's arguments re-render to the tokens the model wrote.
    /// </summary>
    Spaced,
}

/// <summary>A JSON value: the accepted types and the constraints of each.</summary>
internal sealed class JsonValueNode() : GrammarNode(GrammarKind.Value)
{
    /// <summary>The most digits a number's integer part gets when no bound limits it (15: exact in a double).</summary>
    public const int MaxIntegerDigits = 15;

    /// <summary>The most digits after a number's decimal point.</summary>
    public const int MaxFractionDigits = 12;

    public JsonTypes Types { get; set; } = JsonTypes.Any;

    public JsonWhitespace Whitespace { get; set; }

    // Strings: lengths in Unicode code points (an escape is one).
    public int MinLength { get; set; }

    public int MaxLength { get; set; } = -1;

    // Numbers: inclusive or exclusive bounds.
    public decimal? Minimum { get; set; }

    public decimal? Maximum { get; set; }

    public bool ExclusiveMinimum { get; set; }

    public bool ExclusiveMaximum { get; set; }

    // Arrays.
    public GrammarNode? Items { get; set; }

    public int MinItems { get; set; }

    public int MaxItems { get; set; } = -1;

    // Objects: the known properties (at most 64), keyed by a trie of their JSON-encoded names plus the closing quote.
    public string[] PropertyNames { get; set; } = [];

    public GrammarNode[] PropertyValues { get; set; } = [];

    public ulong Required { get; set; }

    /// <summary>Gets or sets the keys trie: each name's JSON-escaped bytes then <c>"</c>; the terminal is the property index.</summary>
    public ByteTrie? Keys { get; set; }

    /// <summary>Gets or sets the schema of properties not listed; <see langword="null"/> when they are not allowed.</summary>
    public GrammarNode? AdditionalProperties { get; set; }

    /// <summary>Gets whether the node needs no bound checks on numbers.</summary>
    public bool HasBounds => Minimum is not null || Maximum is not null;
}
