using System.Runtime.InteropServices;
using Google.Protobuf;
using Onnx;

namespace KvChat.ModelKit;

/// <summary>A small helper that appends nodes, initializers and value infos to an ONNX graph with unique names.</summary>
internal sealed class GraphBuilder
{
    private int _next;

    public GraphBuilder(string name) => Graph = new GraphProto { Name = name };

    public GraphProto Graph { get; }

    public string Fresh(string hint) => $"{hint}_{_next++}";

    /// <summary>Adds a node with one output and returns the output name.</summary>
    public string Node(string op, string[] inputs, string? output = null, string domain = "", params AttributeProto[] attributes)
        => Nodes(op, inputs, [output ?? Fresh(op)], domain, attributes)[0];

    /// <summary>Adds a node with several outputs and returns their names.</summary>
    public string[] Nodes(string op, string[] inputs, string[] outputs, string domain = "", params AttributeProto[] attributes)
    {
        var node = new NodeProto { OpType = op, Name = Fresh(op + "_node"), Domain = domain };
        node.Input.AddRange(inputs);
        node.Output.AddRange(outputs);
        node.Attribute.AddRange(attributes);
        Graph.Node.Add(node);
        return outputs;
    }

    public string Float(string name, float[] data, params long[] dims)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Float };
        tensor.Dims.AddRange(dims);
        tensor.RawData = UnsafeByteOperations.UnsafeWrap(MemoryMarshal.AsBytes(data.AsSpan()).ToArray());
        Graph.Initializer.Add(tensor);
        return name;
    }

    /// <summary>Adds a float initializer whose bytes are already laid out (little-endian float32).</summary>
    public string FloatBytes(string name, byte[] bytes, params long[] dims)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Float };
        tensor.Dims.AddRange(dims);
        tensor.RawData = UnsafeByteOperations.UnsafeWrap(bytes);
        Graph.Initializer.Add(tensor);
        return name;
    }

    /// <summary>Adds an initializer of any element type from its raw little-endian bytes.</summary>
    public string Bytes(string name, TensorProto.Types.DataType type, byte[] bytes, params long[] dims)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)type };
        tensor.Dims.AddRange(dims);
        tensor.RawData = UnsafeByteOperations.UnsafeWrap(bytes);
        Graph.Initializer.Add(tensor);
        return name;
    }

    public string Int64(string name, long[] data, params long[] dims)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Int64 };
        tensor.Dims.AddRange(dims);
        tensor.Int64Data.AddRange(data);
        Graph.Initializer.Add(tensor);
        return name;
    }

    public string Int64s(params long[] data) => Int64(Fresh("const_i64"), data, data.Length);

    public string Int64Scalar(long value) => Int64(Fresh("const_i64s"), [value]);

    public string FloatScalar(float value) => Float(Fresh("const_f32s"), [value]);

    public void Input(string name, TensorProto.Types.DataType type, params object[] dims)
        => Graph.Input.Add(ValueInfo(name, type, dims));

    public void Output(string name, TensorProto.Types.DataType type, params object[] dims)
        => Graph.Output.Add(ValueInfo(name, type, dims));

    private static ValueInfoProto ValueInfo(string name, TensorProto.Types.DataType type, object[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var dim in dims)
        {
            shape.Dim.Add(dim switch
            {
                string symbol => new TensorShapeProto.Types.Dimension { DimParam = symbol },
                int value => new TensorShapeProto.Types.Dimension { DimValue = value },
                long value => new TensorShapeProto.Types.Dimension { DimValue = value },
                _ => throw new ArgumentException($"Unsupported dimension {dim}.", nameof(dims)),
            });
        }

        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } },
        };
    }

    public static AttributeProto Attr(string name, long value)
        => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

    public static AttributeProto Attr(string name, float value)
        => new() { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value };

    public static AttributeProto Attr(string name, long[] values)
    {
        var attribute = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        attribute.Ints.AddRange(values);
        return attribute;
    }
}
