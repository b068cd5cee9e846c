using Google.Protobuf;
using Onnx;

namespace KvChat;

/// <summary>
/// Rewrites a decoder graph so that its logits hold only the last positions of the sequence: a <c>Slice</c> of the
/// hidden states before the LM head, so a prefill of n tokens computes the head for those rows instead of n.
/// </summary>
/// <remarks>
/// <para>
/// An export computes the LM head (hidden x vocabulary: a quarter of a Qwen2.5-0.5B's compute per token at a
/// 151,936-token vocabulary) and writes <c>[batch, n, vocab]</c> logits for every position of a prefill, of which the
/// session reads the last row only. The rewrite walks back from the graph output named in <c>genai_config.json</c>
/// through the nodes an export puts after the head (<c>Cast</c>, <c>Add</c>/<c>Sub</c>/<c>Mul</c>/<c>Div</c>,
/// <c>Tanh</c> for soft-capping, <c>Identity</c>, <c>Reshape</c>) to the head itself: a <c>MatMul</c>,
/// <c>com.microsoft:MatMulNBits</c> or <c>Gemm</c> over a constant weight. It slices the head's input (or the input of
/// the <c>Reshape</c> that flattens it) to the last positions of axis 1, slices every other per-position operand of the
/// nodes after the head the same way, and recomputes a <c>Reshape</c>'s shape that was computed from the sequence. A
/// decode step (one position per row) is unchanged.
/// </para>
/// <para>
/// Anything else (another operator between head and output, an intermediate tensor used elsewhere, an opset before
/// 10) is declined with the reason, and the graph is used as exported.
/// </para>
/// </remarks>
internal static class LastPositionLogits
{
    /// <summary>The symbolic name the rewrite gives the logits' position axis.</summary>
    public const string PositionsDimension = "logits_positions";

    private static readonly HashSet<string> AfterHead = new(StringComparer.Ordinal) { "Cast", "Identity", "Add", "Sub", "Mul", "Div", "Tanh", "Reshape" };

    /// <summary>
    /// Rewrites <paramref name="model"/> in place so that <paramref name="logits"/> holds the last
    /// <paramref name="positions"/> positions. Returns null when it did, or why not (then nothing was changed).
    /// </summary>
    /// <param name="model">The decoder.</param>
    /// <param name="logits">The name of the logits output.</param>
    /// <param name="positions">How many last positions to keep (at least 1).</param>
    /// <param name="head">The name of the LM head node the slice feeds.</param>
    public static string? TryApply(ModelProto model, string logits, int positions, out string head)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(positions, 1);
        head = "";
        var graph = model.Graph;
        var opset = model.OpsetImport.Where(o => o.Domain is "" or "ai.onnx").Select(o => o.Version).DefaultIfEmpty(0).Max();
        if (opset < 10)
        {
            return $"the default opset is {opset}; the rewrite writes Slice nodes with inputs (opset 10).";
        }

        var output = graph.Output.FirstOrDefault(o => o.Name == logits);
        if (output is null)
        {
            return $"the graph has no output '{logits}'.";
        }

        var graphOutputs = graph.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        var constants = graph.Initializer.Select(i => i.Name)
            .Concat(graph.Node.Where(n => n.OpType == "Constant" && IsDefault(n)).SelectMany(n => n.Output))
            .ToHashSet(StringComparer.Ordinal);
        var producers = new Dictionary<string, NodeProto>(StringComparer.Ordinal);
        var consumers = new Dictionary<string, List<NodeProto>>(StringComparer.Ordinal);
        foreach (var node in graph.Node)
        {
            foreach (var name in node.Output)
            {
                producers[name] = node;
            }

            foreach (var name in node.Input)
            {
                if (!consumers.TryGetValue(name, out var list))
                {
                    consumers[name] = list = [];
                }

                list.Add(node);
            }
        }

        // From the head towards the output: each node after the head and the input it takes the head's rows through.
        var chain = new List<(NodeProto Node, string Through)>();
        var lmHead = FindHead(logits, depth: 8, producers, constants, chain);
        if (lmHead is null)
        {
            var producer = producers.GetValueOrDefault(logits);
            return producer is null
                ? $"no node produces '{logits}'."
                : $"no MatMul, MatMulNBits or Gemm over a constant weight is found before '{logits}' through {string.Join(", ", AfterHead)} (it is produced by {Describe(producer)}).";
        }

        // Every tensor from the head to the output must feed only the next node: others would see sliced rows.
        var path = new List<NodeProto> { lmHead };
        path.AddRange(chain.Select(c => c.Node));
        for (var i = 0; i < path.Count; i++)
        {
            var name = path[i].Output[0];
            var next = i + 1 < path.Count ? path[i + 1] : null;
            var users = consumers.GetValueOrDefault(name) ?? [];
            if (path[i].Output.Count != 1 || users.Any(u => u != next) || (next is not null && graphOutputs.Contains(name)))
            {
                return $"'{name}' (the output of {Describe(path[i])}, between the LM head and '{logits}') is used elsewhere too.";
            }
        }

        // The rows to slice: the head's input, or the input of the Reshape that flattens it for a Gemm.
        var rewire = lmHead;
        var hidden = lmHead.Input[0];
        if (producers.GetValueOrDefault(hidden) is { OpType: "Reshape" } flatten && IsDefault(flatten) && constants.Contains(flatten.Input[1])
            && consumers.GetValueOrDefault(hidden) is [var only] && only == lmHead && !graphOutputs.Contains(hidden))
        {
            rewire = flatten;
            hidden = flatten.Input[0];
        }
        else if (lmHead.OpType == "Gemm")
        {
            return $"the input of {Describe(lmHead)} is not a flattening Reshape with a constant shape.";
        }

        var names = new UniqueNames(graph);
        var starts = AddInt64(graph, names.Next("kvchat_last_positions_starts"), -positions);
        var ends = AddInt64(graph, names.Next("kvchat_last_positions_ends"), long.MaxValue);
        var axes = AddInt64(graph, names.Next("kvchat_last_positions_axes"), 1);

        string Slice(string input, NodeProto before)
        {
            var sliced = names.Next(input + "_last_positions");
            Insert(graph, before, "Slice", [input, starts, ends, axes], sliced, names);
            return sliced;
        }

        var lastHidden = Slice(hidden, rewire);
        rewire.Input[0] = lastHidden;
        string? shape = null;
        foreach (var (node, through) in chain)
        {
            if (node.OpType == "Reshape")
            {
                if (!constants.Contains(node.Input[1]))
                {
                    // The shape was computed from the sequence: [batch, positions, -1] from the sliced hidden states.
                    shape ??= ShapeOf(graph, lastHidden, node, names);
                    node.Input[1] = shape;
                }

                continue;
            }

            for (var i = 0; i < node.Input.Count; i++)
            {
                var input = node.Input[i];
                if (input != through && input.Length > 0 && !constants.Contains(input))
                {
                    node.Input[i] = Slice(input, node);
                }
            }
        }

        // The output's position axis is no longer the sequence's; intermediate shapes are inferred again.
        if (output.Type?.TensorType?.Shape is { Dim.Count: >= 2 } declared)
        {
            declared.Dim[1] = new TensorShapeProto.Types.Dimension { DimParam = PositionsDimension };
        }

        var changed = path.Select(n => n.Output[0]).ToHashSet(StringComparer.Ordinal);
        for (var i = graph.ValueInfo.Count - 1; i >= 0; i--)
        {
            if (changed.Contains(graph.ValueInfo[i].Name))
            {
                graph.ValueInfo.RemoveAt(i);
            }
        }

        head = lmHead.Name.Length > 0 ? lmHead.Name : lmHead.OpType;
        return null;
    }

    private static NodeProto? FindHead(string name, int depth, Dictionary<string, NodeProto> producers, HashSet<string> constants, List<(NodeProto, string)> chain)
    {
        if (!producers.TryGetValue(name, out var node))
        {
            return null;
        }

        if (IsHead(node, constants))
        {
            return node;
        }

        if (depth == 0 || !IsDefault(node) || !AfterHead.Contains(node.OpType))
        {
            return null;
        }

        IEnumerable<string> through = node.OpType == "Reshape" ? [node.Input[0]] : node.Input.Where(i => i.Length > 0 && !constants.Contains(i));
        foreach (var input in through)
        {
            if (FindHead(input, depth - 1, producers, constants, chain) is { } head)
            {
                chain.Add((node, input));
                return head;
            }
        }

        return null;
    }

    private static bool IsHead(NodeProto node, HashSet<string> constants)
    {
        var op = (IsDefault(node) && node.OpType is "MatMul" or "Gemm")
            || node is { OpType: "MatMulNBits", Domain: "com.microsoft" };
        return op
            && node.Input.Count >= 2
            && constants.Contains(node.Input[1])
            && !constants.Contains(node.Input[0])
            && !node.Attribute.Any(a => a.Name == "transA" && a.I != 0);
    }

    private static bool IsDefault(NodeProto node) => node.Domain is "" or "ai.onnx";

    private static string Describe(NodeProto node)
        => $"{(IsDefault(node) ? "" : node.Domain + ":")}{node.OpType} '{node.Name}'";

    /// <summary>Adds <c>Concat(Shape(x)[0:-1], [-1])</c> before <paramref name="before"/>; returns its output.</summary>
    private static string ShapeOf(GraphProto graph, string x, NodeProto before, UniqueNames names)
    {
        var full = names.Next(x + "_shape");
        Insert(graph, before, "Shape", [x], full, names);
        var leading = names.Next(x + "_leading_dims");
        Insert(graph, before, "Slice", [full, AddInt64(graph, names.Next("kvchat_zero"), 0), AddInt64(graph, names.Next("kvchat_minus_one"), -1)], leading, names);
        var shape = names.Next(x + "_logits_shape");
        var concat = Insert(graph, before, "Concat", [leading, AddInt64(graph, names.Next("kvchat_infer"), -1)], shape, names);
        concat.Attribute.Add(new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = 0 });
        return shape;
    }

    private static NodeProto Insert(GraphProto graph, NodeProto before, string op, string[] inputs, string output, UniqueNames names)
    {
        var node = new NodeProto { OpType = op, Name = names.Next("kvchat_" + output) };
        node.Input.AddRange(inputs);
        node.Output.Add(output);
        graph.Node.Insert(graph.Node.IndexOf(before), node);
        return node;
    }

    private static string AddInt64(GraphProto graph, string name, long value)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Int64 };
        tensor.Dims.Add(1);
        tensor.Int64Data.Add(value);
        graph.Initializer.Add(tensor);
        return name;
    }

    /// <summary>Names not used by any tensor or node of the graph.</summary>
    private sealed class UniqueNames(GraphProto graph)
    {
        private readonly HashSet<string> _used = graph.Node.SelectMany(n => n.Input.Concat(n.Output).Append(n.Name))
            .Concat(graph.Initializer.Select(i => i.Name))
            .Concat(graph.Input.Select(i => i.Name))
            .Concat(graph.Output.Select(o => o.Name))
            .ToHashSet(StringComparer.Ordinal);

        public string Next(string hint)
        {
            var name = hint;
            for (var i = 1; !_used.Add(name); i++)
            {
                name = $"{hint}_{i}";
            }

            return name;
        }
    }

    /// <summary>Serialises the rewritten model (its weights referred to in place, so a few megabytes).</summary>
    public static byte[] ToBytes(ModelProto model) => model.ToByteArray();
}
