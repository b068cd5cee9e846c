using System.Globalization;
using Onnx;

namespace KvChat;

/// <summary>
/// Reads <c>model.onnx</c> as an <see cref="ModelProto"/> whose large initializers stay in the file: each one's
/// <c>raw_data</c> is left on disk and the tensor refers to it as ONNX external data (location: the file itself, its
/// offset and length), so a session created from the rewritten bytes reads the weights from the original file, as a
/// session over the file would.
/// </summary>
/// <remarks>
/// <para>
/// Why not the protobuf library alone: <see cref="Google.Protobuf.MessageParser{T}"/> materialises every field, so the
/// weights (855 MB for a Qwen2.5-0.5B shape at int4, gigabytes for larger models) would be read into managed memory,
/// serialised again into another buffer, and parsed a third time by ONNX Runtime. This reader walks the protobuf wire
/// format of <c>ModelProto</c> (field 7, <c>graph</c>), and of <c>GraphProto.initializer</c> (field 5) down to
/// <c>TensorProto.raw_data</c> (field 9), seeking over the raw bytes of large tensors; everything else (nodes, inputs,
/// outputs, small tensors, tensors already external) is copied byte for byte and parsed by the protobuf library
/// (<c>OnnxSharp</c>'s ONNX classes over <c>Google.Protobuf</c>).
/// </para>
/// <para>
/// Tensors that already refer to external data (<c>model.onnx.data</c>, as real exports write) keep their locations,
/// which are relative to the model's folder: the session is given that folder
/// (<c>session.model_external_initializers_file_folder_path</c>).
/// </para>
/// </remarks>
internal static class DecoderProtoReader
{
    /// <summary>Tensors with fewer raw bytes than this stay inline (norm weights, shapes, small constants).</summary>
    public const int InlineBytes = 4096;

    private const int ModelGraphField = 7;
    private const int GraphInitializerField = 5;
    private const int TensorRawDataField = 9;
    private const int LengthDelimited = 2;

    /// <summary>Reads the model with its large initializers referred to in place.</summary>
    /// <param name="path">The <c>model.onnx</c> file.</param>
    /// <param name="referenced">The number of initializers left in the file.</param>
    /// <exception cref="InvalidDataException">The file is not a well-formed ONNX protobuf.</exception>
    public static ModelProto Read(string path, out int referenced)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        var reader = new DecoderGraphScan.Reader(stream);
        var location = Path.GetFileName(path);
        using var top = new MemoryStream();
        GraphProto? graph = null;
        referenced = 0;
        while (stream.Position < stream.Length)
        {
            var start = stream.Position;
            var (field, wire) = reader.Tag();
            if (field == ModelGraphField && wire == LengthDelimited)
            {
                var part = ReadGraph(stream, reader, reader.LengthEnd(), location, ref referenced);
                if (graph is null)
                {
                    graph = part;
                }
                else
                {
                    // A message field written twice is merged (protobuf semantics).
                    graph.MergeFrom(part);
                }
            }
            else
            {
                reader.Skip(wire);
                CopyField(stream, start, top);
            }
        }

        var model = Parse(ModelProto.Parser, top);
        model.Graph = graph ?? throw new InvalidDataException($"{location} has no graph.");
        return model;
    }

    private static GraphProto ReadGraph(FileStream stream, DecoderGraphScan.Reader reader, long end, string location, ref int referenced)
    {
        using var kept = new MemoryStream();
        var inPlace = new List<TensorProto>();
        while (stream.Position < end)
        {
            var start = stream.Position;
            var (field, wire) = reader.Tag();
            if (field == GraphInitializerField && wire == LengthDelimited)
            {
                var tensorEnd = reader.LengthEnd();
                if (ReadTensorInPlace(stream, reader, tensorEnd, location) is { } tensor)
                {
                    inPlace.Add(tensor);
                    continue;
                }

                stream.Position = tensorEnd;
            }
            else
            {
                reader.Skip(wire);
            }

            CopyField(stream, start, kept);
        }

        if (stream.Position != end)
        {
            throw new InvalidDataException("A graph field runs past the end of the graph.");
        }

        var graph = Parse(GraphProto.Parser, kept);
        graph.Initializer.AddRange(inPlace);
        referenced += inPlace.Count;
        return graph;
    }

    /// <summary>
    /// Reads one initializer; when it holds at least <see cref="InlineBytes"/> of <c>raw_data</c> (once), returns it
    /// without them, referring to them where they are in the file. Otherwise returns null (the caller copies it whole).
    /// </summary>
    private static TensorProto? ReadTensorInPlace(FileStream stream, DecoderGraphScan.Reader reader, long end, string location)
    {
        var tensorStart = stream.Position;
        long rawOffset = -1;
        long rawLength = 0;
        var rawFields = 0;
        while (stream.Position < end)
        {
            var (field, wire) = reader.Tag();
            if (field == TensorRawDataField && wire == LengthDelimited)
            {
                var rawEnd = reader.LengthEnd();
                rawOffset = stream.Position;
                rawLength = rawEnd - rawOffset;
                rawFields++;
                stream.Position = rawEnd;
            }
            else
            {
                reader.Skip(wire);
            }
        }

        if (stream.Position != end)
        {
            throw new InvalidDataException("A tensor field runs past the end of the tensor.");
        }

        if (rawFields != 1 || rawLength < InlineBytes)
        {
            return null;
        }

        // Everything but raw_data, byte for byte.
        using var kept = new MemoryStream();
        stream.Position = tensorStart;
        while (stream.Position < end)
        {
            var start = stream.Position;
            var (field, wire) = reader.Tag();
            reader.Skip(wire);
            if (field != TensorRawDataField)
            {
                CopyField(stream, start, kept);
            }
        }

        var tensor = Parse(TensorProto.Parser, kept);
        tensor.DataLocation = TensorProto.Types.DataLocation.External;
        tensor.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
        tensor.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = rawOffset.ToString(CultureInfo.InvariantCulture) });
        tensor.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = rawLength.ToString(CultureInfo.InvariantCulture) });
        return tensor;
    }

    /// <summary>Copies the bytes from <paramref name="start"/> to the stream's position (one whole field) to <paramref name="target"/>.</summary>
    private static void CopyField(FileStream stream, long start, MemoryStream target)
    {
        var end = stream.Position;
        var length = checked((int)(end - start));
        var offset = (int)target.Length;
        target.SetLength(offset + length);
        stream.Position = start;
        stream.ReadExactly(target.GetBuffer().AsSpan(offset, length));
        target.Position = target.Length;
    }

    private static T Parse<T>(Google.Protobuf.MessageParser<T> parser, MemoryStream bytes)
        where T : Google.Protobuf.IMessage<T>
    {
        try
        {
            return parser.ParseFrom(bytes.GetBuffer().AsSpan(0, (int)bytes.Length));
        }
        catch (Google.Protobuf.InvalidProtocolBufferException e)
        {
            throw new InvalidDataException($"A protobuf message of the model does not parse: {e.Message}", e);
        }
    }
}
