using System.Text.Json;

namespace KvChat;

/// <summary>A tool a constrained reply may call: its name and the JSON schema of its arguments (null: any object).</summary>
internal readonly record struct ToolSignature(string Name, JsonElement? Parameters);

/// <summary>
/// The grammar of tool calls in a model family's format (<see cref="ToolCallFormat"/>), written as the family's chat
/// template renders them (<c>{"name": "...", "arguments": {...}}</c>, spaced like <c>tojson</c>), so the next turn's
/// re-rendered call matches the tokens the model wrote. The name is one of the offered tools and the arguments follow
/// that tool's parameter schema where it is in the supported subset (any object otherwise).
/// </summary>
internal static class ToolCallGrammar
{
    private static readonly SequenceNode Empty = new([]);

    /// <summary>
    /// Builds the grammar of one or more calls (several only when <paramref name="allowMultiple"/>) to
    /// <paramref name="tools"/>, or to <paramref name="requiredName"/> alone.
    /// </summary>
    /// <exception cref="NotSupportedException">The format has no call syntax this grammar can write.</exception>
    public static GrammarNode Build(ToolCallFormat format, IReadOnlyList<ToolSignature> tools, string? requiredName, bool allowMultiple)
    {
        var offered = requiredName is null ? tools : [.. tools.Where(t => t.Name == requiredName)];
        var call = Call(format, offered);
        if (format == ToolCallFormat.Phi)
        {
            // <|tool_call|>[call, call]<|/tool_call|>
            var list = new ChoiceNode([]);
            list.Alternatives = allowMultiple ? [new SequenceNode([call, new ChoiceNode([Empty, new SequenceNode([LiteralNode.Of(", "), list])])])] : [call];
            return new SequenceNode([LiteralNode.Of("<|tool_call|>["), list, LiteralNode.Of("]<|/tool_call|>")]);
        }

        if (format.BareJsonReply)
        {
            return call; // Llama 3: the reply is the call.
        }

        if (format.Markers.Count == 0)
        {
            throw new NotSupportedException($"The {format} tool-call format has no markers to constrain a call with.");
        }

        // Hermes and formats like it: <open>\n call \n<close>, blocks separated by a newline.
        var marker = format.Markers[0];
        var newline = format == ToolCallFormat.Hermes ? "\n" : "";
        var block = new SequenceNode([LiteralNode.Of(marker.Open + newline), call, LiteralNode.Of(newline + marker.Close)]);
        if (!allowMultiple || marker.Close is null)
        {
            return block;
        }

        var blocks = new ChoiceNode([]);
        blocks.Alternatives = [new SequenceNode([block, new ChoiceNode([Empty, new SequenceNode([LiteralNode.Of("\n"), blocks])])])];
        return blocks;
    }

    /// <summary>
    /// Free text in which each call the model opens (the format's marker) follows the grammar of <see cref="Build"/>:
    /// <c>ToolMode.Auto</c> with constrained arguments. Null for a format whose calls have no marker in the text
    /// (Llama 3's bare JSON): its calls stay free.
    /// </summary>
    public static GrammarNode? BuildAuto(ToolCallFormat format, IReadOnlyList<ToolSignature> tools)
    {
        if (format.BareJsonReply || format.Markers.Count == 0)
        {
            return null;
        }

        var call = Call(format, tools);
        var marker = format.Markers[0];
        if (format == ToolCallFormat.Phi)
        {
            var list = new ChoiceNode([]);
            list.Alternatives = [new SequenceNode([call, new ChoiceNode([Empty, new SequenceNode([LiteralNode.Of(", "), list])])])];
            return new TextWithMarkerNode(System.Text.Encoding.UTF8.GetBytes(marker.Open), new SequenceNode([LiteralNode.Of("["), list, LiteralNode.Of("]" + marker.Close)]));
        }

        var newline = format == ToolCallFormat.Hermes ? "\n" : "";
        return new TextWithMarkerNode(
            System.Text.Encoding.UTF8.GetBytes(marker.Open),
            new SequenceNode([LiteralNode.Of(newline), call, LiteralNode.Of(newline + marker.Close)]));
    }

    /// <summary>One call object: <c>{"name": "NAME", "KEY": ARGS}</c> for each offered tool.</summary>
    private static ChoiceNode Call(ToolCallFormat format, IReadOnlyList<ToolSignature> tools)
    {
        var alternatives = new List<GrammarNode>();
        var opening = "{\"name\": \"";
        foreach (var tool in tools)
        {
            var name = JsonSerializer.Serialize(tool.Name)[1..^1];
            alternatives.Add(new SequenceNode(
            [
                LiteralNode.Of($"{opening}{name}\", \"{format.ArgumentsKey}\": "),
                Arguments(tool.Parameters),
                LiteralNode.Of("}"),
            ]));
        }

        return new ChoiceNode([.. alternatives]);
    }

    private static GrammarNode Arguments(JsonElement? parameters)
    {
        var anyObject = new JsonValueNode { Types = JsonTypes.Object, Whitespace = JsonWhitespace.Spaced };
        anyObject.AdditionalProperties = JsonSchemaGrammar.AnyValue(JsonWhitespace.Spaced);
        anyObject.Items = anyObject.AdditionalProperties;
        if (parameters is not { ValueKind: JsonValueKind.Object } schema)
        {
            return anyObject;
        }

        try
        {
            return JsonSchemaGrammar.Compile(schema, JsonWhitespace.Spaced);
        }
        catch (NotSupportedException)
        {
            return anyObject; // A parameter schema outside the subset: the arguments are any object, as without constraint.
        }
    }
}
