namespace KvChat;

/// <summary>
/// A byte-level pushdown automaton over a <see cref="GrammarNode"/> graph: the state is a set of threads (one per
/// alternative of a choice still alive), each an immutable stack of <see cref="MatchFrame"/>s, so stepping returns new
/// threads and any earlier state stays valid (the token trie walk branches from it freely).
/// </summary>
/// <remarks>
/// A number, or an enum value that a longer one extends, may end without a byte of its own: the byte that does not
/// continue it is handed to the enclosing node. In JSON the bytes that continue such a value (digits, the decimal point)
/// and the bytes that follow a value (<c>, ] }</c>) never overlap, so this never forks.
/// </remarks>
internal static class GrammarMatcher
{
    private const int MaxPushDepth = 64;
    private static readonly byte[][] Words = ["true"u8.ToArray(), "false"u8.ToArray(), "null"u8.ToArray()];

    /// <summary>The threads that start the grammar at <paramref name="root"/>.</summary>
    public static List<MatchFrame> Start(GrammarNode root)
    {
        var threads = new List<MatchFrame>();
        Push(root, null, threads, 0);
        return threads;
    }

    /// <summary>Steps every thread by <paramref name="b"/> into <paramref name="output"/> (cleared first).</summary>
    /// <returns>Whether any thread took the byte.</returns>
    public static bool StepAll(List<MatchFrame> threads, byte b, List<MatchFrame> output)
    {
        output.Clear();
        foreach (var thread in threads)
        {
            Step(thread, b, output);
        }

        return output.Count > 0;
    }

    /// <summary>Whether the grammar may end here (some thread is complete, or may end without another byte).</summary>
    public static bool CanEnd(List<MatchFrame> threads)
    {
        foreach (var thread in threads)
        {
            if (CanEnd(thread))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Whether the thread is complete or may end here.</summary>
    public static bool CanEnd(MatchFrame frame)
    {
        if (frame.Phase == MatchPhase.Accepted)
        {
            return true;
        }

        if (!MayEndHere(frame, out var value))
        {
            return false;
        }

        var resumed = new List<MatchFrame>();
        Complete(frame.Parent, value, resumed, 0);
        return resumed.Exists(f => f.Phase == MatchPhase.Accepted);
    }

    /// <summary>Whether <paramref name="frame"/> waits between a string's characters with no length limit (the fast path).</summary>
    public static bool InUnboundedStringBody(MatchFrame frame)
        => frame.B == 0
            && ((frame.Phase == MatchPhase.String && ((JsonValueNode)frame.Node!).MaxLength < 0)
                || (frame.Phase == MatchPhase.ObjectKey && frame.A < 0));

    private static void Push(GrammarNode node, MatchFrame? parent, List<MatchFrame> output, int depth)
    {
        if (depth > MaxPushDepth)
        {
            throw new NotSupportedException("The JSON schema refers to itself without consuming input (a $ref cycle with no object or array between).");
        }

        switch (node.Kind)
        {
            case GrammarKind.Choice:
                foreach (var alternative in ((ChoiceNode)node).Alternatives)
                {
                    Push(alternative, parent, output, depth + 1);
                }

                break;
            case GrammarKind.Sequence:
                var sequence = (SequenceNode)node;
                if (sequence.Children.Length == 0)
                {
                    Complete(parent, -1, output, depth + 1);
                }
                else
                {
                    Push(sequence.Children[0], new MatchFrame(parent, node, MatchPhase.Sequence), output, depth + 1);
                }

                break;
            case GrammarKind.Literal:
                if (((LiteralNode)node).Bytes.Length == 0)
                {
                    Complete(parent, -1, output, depth + 1);
                }
                else
                {
                    output.Add(new MatchFrame(parent, node, MatchPhase.Literal));
                }

                break;
            case GrammarKind.LiteralSet:
                output.Add(new MatchFrame(parent, node, MatchPhase.LiteralSet));
                break;
            case GrammarKind.Text:
                output.Add(new MatchFrame(parent, node, MatchPhase.Text));
                break;
            default:
                output.Add(new MatchFrame(parent, node, MatchPhase.ValueStart));
                break;
        }
    }

    /// <summary>Resumes <paramref name="parent"/> after its running child completed with <paramref name="value"/>.</summary>
    private static void Complete(MatchFrame? parent, int value, List<MatchFrame> output, int depth)
    {
        if (parent is null)
        {
            output.Add(MatchFrame.Accepted);
            return;
        }

        switch (parent.Phase)
        {
            case MatchPhase.Sequence:
                var sequence = (SequenceNode)parent.Node!;
                var next = parent.A + 1;
                if (next < sequence.Children.Length)
                {
                    Push(sequence.Children[next], new MatchFrame(parent.Parent, sequence, MatchPhase.Sequence, next), output, depth + 1);
                }
                else
                {
                    Complete(parent.Parent, -1, output, depth + 1);
                }

                break;
            case MatchPhase.ArrayItem:
                output.Add(new MatchFrame(parent.Parent, parent.Node, MatchPhase.ArrayAfterItem, parent.A + 1));
                break;
            case MatchPhase.TextMarked:
                output.Add(new MatchFrame(parent.Parent, parent.Node, MatchPhase.Text));
                break;
            case MatchPhase.ObjectValue:
                var seen = parent.A >= 0 ? parent.Seen | (1UL << parent.A) : parent.Seen;
                output.Add(new MatchFrame(parent.Parent, parent.Node, MatchPhase.ObjectAfterValue, seen: seen));
                break;
            default:
                throw new InvalidOperationException($"A {parent.Phase} frame cannot resume a child.");
        }
    }

    /// <summary>Whether the frame's node may end before <paramref name="value"/>'s next byte, and what it ends with.</summary>
    private static bool MayEndHere(MatchFrame frame, out int value)
    {
        value = -1;
        switch (frame.Phase)
        {
            case MatchPhase.NumberZero:
            case MatchPhase.NumberInteger:
            case MatchPhase.NumberFraction:
                return NumberEndsInRange((JsonValueNode)frame.Node!, frame);
            case MatchPhase.LiteralSet:
                value = ((LiteralSetNode)frame.Node!).Set.ValueAt(frame.A);
                return value >= 0;
            case MatchPhase.Text:
                return true; // Text may end anywhere (a partial marker is text).
            default:
                return false;
        }
    }

    private static void EndThenStep(MatchFrame frame, int value, byte b, List<MatchFrame> output)
    {
        var resumed = new List<MatchFrame>(2);
        Complete(frame.Parent, value, resumed, 0);
        foreach (var f in resumed)
        {
            Step(f, b, output);
        }
    }

    private static void PushThenStep(GrammarNode node, MatchFrame parent, byte b, List<MatchFrame> output)
    {
        var started = new List<MatchFrame>(2);
        Push(node, parent, started, 0);
        foreach (var f in started)
        {
            Step(f, b, output);
        }
    }

    /// <summary>Steps one thread by one byte, adding its successors to <paramref name="output"/>.</summary>
    public static void Step(MatchFrame f, byte b, List<MatchFrame> output)
    {
        switch (f.Phase)
        {
            case MatchPhase.Accepted:
                return;
            case MatchPhase.Literal:
            {
                var bytes = ((LiteralNode)f.Node!).Bytes;
                if (bytes[f.A] == b)
                {
                    if (f.A + 1 == bytes.Length)
                    {
                        Complete(f.Parent, -1, output, 0);
                    }
                    else
                    {
                        output.Add(new MatchFrame(f.Parent, f.Node, MatchPhase.Literal, f.A + 1));
                    }
                }

                return;
            }

            case MatchPhase.LiteralSet:
            {
                var set = ((LiteralSetNode)f.Node!).Set;
                var next = set.Next(f.A, b);
                if (next >= 0)
                {
                    var value = set.ValueAt(next);
                    if (value >= 0 && !set.HasChildren(next))
                    {
                        Complete(f.Parent, value, output, 0);
                    }
                    else
                    {
                        output.Add(new MatchFrame(f.Parent, f.Node, MatchPhase.LiteralSet, next));
                    }
                }
                else if (set.ValueAt(f.A) is >= 0 and var ended)
                {
                    EndThenStep(f, ended, b, output);
                }

                return;
            }

            case MatchPhase.Word:
            {
                var word = Words[f.B];
                if (word[f.A] == b)
                {
                    if (f.A + 1 == word.Length)
                    {
                        Complete(f.Parent, -1, output, 0);
                    }
                    else
                    {
                        output.Add(new MatchFrame(f.Parent, f.Node, MatchPhase.Word, f.A + 1, f.B));
                    }
                }

                return;
            }

            case MatchPhase.ValueStart:
                StartValue(f, (JsonValueNode)f.Node!, b, output);
                return;
            case MatchPhase.Text:
            {
                var text = (TextWithMarkerNode)f.Node!;
                var marker = text.Marker;
                if (b == marker[f.A])
                {
                    if (f.A + 1 == marker.Length)
                    {
                        Push(text.AfterMarker, new MatchFrame(f.Parent, text, MatchPhase.TextMarked), output, 0);
                    }
                    else
                    {
                        output.Add(new MatchFrame(f.Parent, text, MatchPhase.Text, f.A + 1));
                    }
                }
                else
                {
                    output.Add(new MatchFrame(f.Parent, text, MatchPhase.Text, b == marker[0] ? 1 : 0));
                }

                return;
            }

            case MatchPhase.String:
            {
                var node = (JsonValueNode)f.Node!;
                if (f.B == 0 && b != '"' && node.MaxLength >= 0 && f.A >= node.MaxLength)
                {
                    return; // A new character would be one too many.
                }

                var state = JsonLexer.Step(f.B, b);
                if (state == JsonLexer.Closed)
                {
                    if (f.A >= node.MinLength)
                    {
                        Complete(f.Parent, -1, output, 0);
                    }
                }
                else if (state >= 0)
                {
                    output.Add(new MatchFrame(f.Parent, node, MatchPhase.String, state == 0 ? f.A + 1 : f.A, state));
                }

                return;
            }

            case MatchPhase.NumberMinus:
            case MatchPhase.NumberZero:
            case MatchPhase.NumberInteger:
            case MatchPhase.NumberDot:
            case MatchPhase.NumberFraction:
                StepNumber(f, (JsonValueNode)f.Node!, b, output);
                return;
            case MatchPhase.ArrayOpen:
            case MatchPhase.ArrayAfterItem:
            case MatchPhase.ArraySpace:
            case MatchPhase.ArrayNext:
                StepArray(f, (JsonValueNode)f.Node!, b, output);
                return;
            default:
                StepObject(f, (JsonValueNode)f.Node!, b, output);
                return;
        }
    }

    private static void StartValue(MatchFrame f, JsonValueNode node, byte b, List<MatchFrame> output)
    {
        var types = node.Types;
        switch (b)
        {
            case (byte)'{' when (types & JsonTypes.Object) != 0:
                output.Add(new MatchFrame(f.Parent, node, MatchPhase.ObjectOpen));
                return;
            case (byte)'[' when (types & JsonTypes.Array) != 0:
                output.Add(new MatchFrame(f.Parent, node, MatchPhase.ArrayOpen));
                return;
            case (byte)'"' when (types & JsonTypes.String) != 0:
                output.Add(new MatchFrame(f.Parent, node, MatchPhase.String));
                return;
            case (byte)'t' when (types & JsonTypes.Boolean) != 0:
                output.Add(new MatchFrame(f.Parent, node, MatchPhase.Word, 1, 0));
                return;
            case (byte)'f' when (types & JsonTypes.Boolean) != 0:
                output.Add(new MatchFrame(f.Parent, node, MatchPhase.Word, 1, 1));
                return;
            case (byte)'n' when (types & JsonTypes.Null) != 0:
                output.Add(new MatchFrame(f.Parent, node, MatchPhase.Word, 1, 2));
                return;
            case (byte)'-' or (>= (byte)'0' and <= (byte)'9') when (types & (JsonTypes.Integer | JsonTypes.Number)) != 0:
                var start = new MatchFrame(f.Parent, node, MatchPhase.NumberMinus, negative: true);
                if (b == '-')
                {
                    if (NumberFeasible(node, start))
                    {
                        output.Add(start);
                    }
                }
                else
                {
                    StepNumber(new MatchFrame(f.Parent, node, MatchPhase.NumberMinus, negative: false), node, b, output);
                }

                return;
            default:
                return;
        }
    }

    private static bool IntegerOnly(JsonValueNode node) => (node.Types & JsonTypes.Number) == 0;

    private static void StepNumber(MatchFrame f, JsonValueNode node, byte b, List<MatchFrame> output)
    {
        MatchFrame? next = null;
        var isDigit = b is >= (byte)'0' and <= (byte)'9';
        var digit = b - '0';
        switch (f.Phase)
        {
            case MatchPhase.NumberMinus when isDigit:
                next = new MatchFrame(f.Parent, node, digit == 0 ? MatchPhase.NumberZero : MatchPhase.NumberInteger, 1, 0, 0, digit, f.Negative);
                break;
            case MatchPhase.NumberInteger when isDigit && f.A < JsonValueNode.MaxIntegerDigits:
                next = new MatchFrame(f.Parent, node, MatchPhase.NumberInteger, f.A + 1, 0, 0, (f.Number * 10) + digit, f.Negative);
                break;
            case MatchPhase.NumberZero or MatchPhase.NumberInteger when b == '.' && !IntegerOnly(node):
                next = new MatchFrame(f.Parent, node, MatchPhase.NumberDot, f.A, 0, 0, f.Number, f.Negative);
                break;
            case MatchPhase.NumberDot or MatchPhase.NumberFraction when isDigit && f.B < JsonValueNode.MaxFractionDigits:
                next = new MatchFrame(f.Parent, node, MatchPhase.NumberFraction, f.A, f.B + 1, 0, (f.Number * 10) + digit, f.Negative);
                break;
        }

        if (next is not null)
        {
            if (!node.HasBounds || NumberFeasible(node, next))
            {
                output.Add(next);
            }

            return;
        }

        if (f.Phase is MatchPhase.NumberZero or MatchPhase.NumberInteger or MatchPhase.NumberFraction && NumberEndsInRange(node, f))
        {
            EndThenStep(f, -1, b, output);
        }
    }

    private static decimal Pow10(int n)
    {
        var p = 1m;
        for (var i = 0; i < n; i++)
        {
            p *= 10;
        }

        return p;
    }

    /// <summary>Whether the number as written so far is a complete value within the node's bounds.</summary>
    private static bool NumberEndsInRange(JsonValueNode node, MatchFrame f)
    {
        if (!node.HasBounds)
        {
            return true;
        }

        var value = f.Number / Pow10(f.B);
        return InBounds(node, f.Negative ? -value : value, value, false, false);
    }

    /// <summary>Whether some completion of the number as written so far lies within the node's bounds.</summary>
    private static bool NumberFeasible(JsonValueNode node, MatchFrame f)
    {
        if (!node.HasBounds)
        {
            return true;
        }

        var integerOnly = IntegerOnly(node);
        switch (f.Phase)
        {
            case MatchPhase.NumberMinus:
                // Any magnitude below 10^15; -0 is 0.
                return Range(node, f.Negative, 0, Pow10(JsonValueNode.MaxIntegerDigits), integerOnly, openTop: true);
            case MatchPhase.NumberZero:
                return integerOnly ? Range(node, f.Negative, 0, 0, true, openTop: false) : Range(node, f.Negative, 0, 1, false, openTop: true);
            case MatchPhase.NumberInteger:
            {
                var scale = 1m;
                for (var extra = 0; f.A + extra <= JsonValueNode.MaxIntegerDigits; extra++)
                {
                    var low = f.Number * scale;
                    if (integerOnly ? Range(node, f.Negative, low, low + scale - 1, true, openTop: false) : Range(node, f.Negative, low, low + scale, false, openTop: true))
                    {
                        return true;
                    }

                    scale *= 10;
                }

                return false;
            }

            default:
            {
                var scale = Pow10(f.B);
                var low = f.Number / scale;
                return f.B == JsonValueNode.MaxFractionDigits
                    ? Range(node, f.Negative, low, low, false, openTop: false)
                    : Range(node, f.Negative, low, (f.Number + 1) / scale, false, openTop: true);
            }
        }
    }

    /// <summary>Whether magnitudes in [low, high] (high open when <paramref name="openTop"/>), signed, meet the bounds.</summary>
    private static bool Range(JsonValueNode node, bool negative, decimal low, decimal high, bool integers, bool openTop)
    {
        _ = integers;
        return negative
            ? InBounds(node, -high, -low, openTop, false)
            : InBounds(node, low, high, false, openTop);
    }

    /// <summary>Whether the interval [lo, hi] (each end open when asked) meets the node's bounds.</summary>
    private static bool InBounds(JsonValueNode node, decimal lo, decimal hi, bool loOpen, bool hiOpen)
    {
        if (node.Minimum is { } min && (hi < min || (hi == min && (hiOpen || node.ExclusiveMinimum))))
        {
            return false;
        }

        return node.Maximum is not { } max || (lo <= max && (lo != max || (!loOpen && !node.ExclusiveMaximum)));
    }

    private static void StepArray(MatchFrame f, JsonValueNode node, byte b, List<MatchFrame> output)
    {
        var items = node.Items!;
        switch (f.Phase)
        {
            case MatchPhase.ArrayOpen:
                if (b == ']')
                {
                    if (node.MinItems == 0)
                    {
                        Complete(f.Parent, -1, output, 0);
                    }
                }
                else if (node.MaxItems != 0)
                {
                    PushThenStep(items, new MatchFrame(f.Parent, node, MatchPhase.ArrayItem, 0), b, output);
                }

                return;
            case MatchPhase.ArrayAfterItem:
                if (b == ']' && f.A >= node.MinItems)
                {
                    Complete(f.Parent, -1, output, 0);
                }
                else if (b == ',' && (node.MaxItems < 0 || f.A < node.MaxItems))
                {
                    output.Add(new MatchFrame(f.Parent, node, node.Whitespace == JsonWhitespace.Spaced ? MatchPhase.ArraySpace : MatchPhase.ArrayNext, f.A));
                }

                return;
            case MatchPhase.ArraySpace:
                if (b == ' ')
                {
                    output.Add(new MatchFrame(f.Parent, node, MatchPhase.ArrayNext, f.A));
                }

                return;
            default:
                PushThenStep(items, new MatchFrame(f.Parent, node, MatchPhase.ArrayItem, f.A), b, output);
                return;
        }
    }

    private static bool MoreKeysPossible(JsonValueNode node, ulong seen)
        => node.AdditionalProperties is not null || (node.Keys is { } keys && (keys.SubtreeMask(0) & ~seen) != 0);

    private static void StepObject(MatchFrame f, JsonValueNode node, byte b, List<MatchFrame> output)
    {
        var spaced = node.Whitespace == JsonWhitespace.Spaced;
        switch (f.Phase)
        {
            case MatchPhase.ObjectOpen:
            case MatchPhase.ObjectKeyStart:
                if (b == '"' && MoreKeysPossible(node, f.Seen))
                {
                    output.Add(new MatchFrame(f.Parent, node, MatchPhase.ObjectKey, node.Keys is null ? -1 : 0, 0, f.Seen));
                }
                else if (b == '}' && f.Phase == MatchPhase.ObjectOpen && (node.Required & ~f.Seen) == 0)
                {
                    Complete(f.Parent, -1, output, 0);
                }

                return;
            case MatchPhase.ObjectKey:
            {
                var state = JsonLexer.Step(f.B, b);
                if (state == JsonLexer.Reject)
                {
                    return;
                }

                var free = node.AdditionalProperties is not null;
                var trieNode = f.A >= 0 ? node.Keys!.Next(f.A, b) : -1;
                if (trieNode >= 0 && !free && (node.Keys!.SubtreeMask(trieNode) & ~f.Seen) == 0)
                {
                    trieNode = -1; // Only names already written lie ahead.
                }

                if (state == JsonLexer.Closed)
                {
                    var property = trieNode >= 0 ? node.Keys!.ValueAt(trieNode) : -1;
                    if (property >= 0 && (f.Seen & (1UL << property)) != 0)
                    {
                        return; // A duplicate key.
                    }

                    if (property >= 0 || free)
                    {
                        output.Add(new MatchFrame(f.Parent, node, MatchPhase.ObjectColon, property, 0, f.Seen));
                    }

                    return;
                }

                if (trieNode >= 0 || free)
                {
                    output.Add(new MatchFrame(f.Parent, node, MatchPhase.ObjectKey, trieNode, state, f.Seen));
                }

                return;
            }

            case MatchPhase.ObjectColon:
                if (b == ':')
                {
                    output.Add(new MatchFrame(f.Parent, node, spaced ? MatchPhase.ObjectColonSpace : MatchPhase.ObjectValueStart, f.A, 0, f.Seen));
                }

                return;
            case MatchPhase.ObjectColonSpace:
                if (b == ' ')
                {
                    output.Add(new MatchFrame(f.Parent, node, MatchPhase.ObjectValueStart, f.A, 0, f.Seen));
                }

                return;
            case MatchPhase.ObjectValueStart:
                PushThenStep(
                    f.A >= 0 ? node.PropertyValues[f.A] : node.AdditionalProperties!,
                    new MatchFrame(f.Parent, node, MatchPhase.ObjectValue, f.A, 0, f.Seen),
                    b,
                    output);
                return;
            case MatchPhase.ObjectAfterValue:
                if (b == '}' && (node.Required & ~f.Seen) == 0)
                {
                    Complete(f.Parent, -1, output, 0);
                }
                else if (b == ',' && MoreKeysPossible(node, f.Seen))
                {
                    output.Add(new MatchFrame(f.Parent, node, spaced ? MatchPhase.ObjectCommaSpace : MatchPhase.ObjectKeyStart, 0, 0, f.Seen));
                }

                return;
            case MatchPhase.ObjectCommaSpace:
                if (b == ' ')
                {
                    output.Add(new MatchFrame(f.Parent, node, MatchPhase.ObjectKeyStart, 0, 0, f.Seen));
                }

                return;
            default:
                throw new InvalidOperationException($"A {f.Phase} frame is never the top of a thread.");
        }
    }
}
