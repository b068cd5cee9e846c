namespace KvChat;

/// <summary>Where a <see cref="MatchFrame"/> stands in its node.</summary>
internal enum MatchPhase : byte
{
    /// <summary>The whole grammar is matched: nothing more may follow.</summary>
    Accepted,

    /// <summary>Inside a <see cref="LiteralNode"/>: A is the position.</summary>
    Literal,

    /// <summary>Inside a <see cref="LiteralSetNode"/>: A is the trie node.</summary>
    LiteralSet,

    /// <summary>A <see cref="SequenceNode"/> whose child A runs (never the top of a thread).</summary>
    Sequence,

    /// <summary>A JSON value's first byte comes next.</summary>
    ValueStart,

    /// <summary>Inside a string: A is the code points so far, B the lexer state (<see cref="JsonLexer"/>).</summary>
    String,

    /// <summary>Inside <c>true</c>, <c>false</c> or <c>null</c>: A is the position, B the word.</summary>
    Word,

    /// <summary>After a number's <c>-</c>. Numbers: A integer digits, B fraction digits, Number the digits, Negative.</summary>
    NumberMinus,

    /// <summary>A number whose integer part is <c>0</c>.</summary>
    NumberZero,

    /// <summary>In a number's integer part (after a digit 1-9).</summary>
    NumberInteger,

    /// <summary>After a number's decimal point.</summary>
    NumberDot,

    /// <summary>In a number's fraction.</summary>
    NumberFraction,

    /// <summary>After <c>[</c>: A is the item count (0).</summary>
    ArrayOpen,

    /// <summary>An array whose item A runs (never the top of a thread).</summary>
    ArrayItem,

    /// <summary>After an item: <c>,</c> or <c>]</c>. A is the item count.</summary>
    ArrayAfterItem,

    /// <summary>After <c>,</c> when spaced: the space.</summary>
    ArraySpace,

    /// <summary>After the separator: an item starts.</summary>
    ArrayNext,

    /// <summary>After <c>{</c>: a key or <c>}</c>. Objects: Seen holds the properties written.</summary>
    ObjectOpen,

    /// <summary>Inside a key: A is the keys-trie node (-1 once it left every known name), B the lexer state.</summary>
    ObjectKey,

    /// <summary>After a key: <c>:</c>. A is the property (-1 for an additional one).</summary>
    ObjectColon,

    /// <summary>After <c>:</c> when spaced: the space.</summary>
    ObjectColonSpace,

    /// <summary>The value of property A starts.</summary>
    ObjectValueStart,

    /// <summary>An object whose property A's value runs (never the top of a thread).</summary>
    ObjectValue,

    /// <summary>After a value: <c>,</c> or <c>}</c>.</summary>
    ObjectAfterValue,

    /// <summary>After <c>,</c> when spaced: the space.</summary>
    ObjectCommaSpace,

    /// <summary>After the separator: the next key's <c>"</c>.</summary>
    ObjectKeyStart,

    /// <summary>Free text: A is how much of the marker the text ends with.</summary>
    Text,

    /// <summary>Free text whose marker's constrained part runs (never the top of a thread).</summary>
    TextMarked,
}

/// <summary>
/// One frame of a matcher thread's stack: a node, where the match stands in it, and the frame to resume when it is
/// done. Immutable, so a trie walk can branch from any state without copying or undoing anything; a thread is its top
/// frame.
/// </summary>
internal sealed class MatchFrame(MatchFrame? parent, GrammarNode? node, MatchPhase phase, int a = 0, int b = 0, ulong seen = 0, decimal number = 0, bool negative = false)
{
    /// <summary>The frame matched to the end: the whole grammar is complete.</summary>
    public static readonly MatchFrame Accepted = new(null, null, MatchPhase.Accepted);

    public readonly MatchFrame? Parent = parent;
    public readonly GrammarNode? Node = node;
    public readonly MatchPhase Phase = phase;
    public readonly int A = a;
    public readonly int B = b;
    public readonly ulong Seen = seen;
    public readonly decimal Number = number;
    public readonly bool Negative = negative;
}
