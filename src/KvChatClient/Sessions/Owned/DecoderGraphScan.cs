namespace KvChat;

/// <summary>
/// The operator types of an ONNX model's main graph, read straight from the protobuf wire format of <c>model.onnx</c>.
/// </summary>
/// <remarks>
/// ONNX Runtime's managed API shows a session's inputs and outputs but not its nodes, and what the owned-KV backend must
/// know (is attention a <c>GroupQueryAttention</c>? are weights int4 <c>MatMulNBits</c>? is there an <c>If</c>, as
/// LongRoPE exports have?) is in the nodes. A protobuf library would parse the whole file, weights included (gigabytes
/// for real models); this reader visits only <c>ModelProto.graph</c> (field 7) and its <c>node</c> entries (field 1),
/// reading each node's <c>op_type</c> (field 4) and seeking over everything else, initializers included.
/// </remarks>
internal static class DecoderGraphScan
{
    /// <summary>Returns the distinct operator types of the main graph's nodes (domain-qualified when not the default domain).</summary>
    /// <exception cref="InvalidDataException">The file is not a well-formed ONNX protobuf.</exception>
    public static HashSet<string> OperatorTypes(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        var reader = new Reader(stream);
        var types = new HashSet<string>(StringComparer.Ordinal);
        var end = stream.Length;
        while (stream.Position < end)
        {
            var (field, wire) = reader.Tag();
            if (field == 7 && wire == 2)
            {
                var graphEnd = reader.LengthEnd();
                while (stream.Position < graphEnd)
                {
                    var (graphField, graphWire) = reader.Tag();
                    if (graphField == 1 && graphWire == 2)
                    {
                        types.Add(ReadNode(reader, reader.LengthEnd()));
                    }
                    else
                    {
                        reader.Skip(graphWire);
                    }
                }
            }
            else
            {
                reader.Skip(wire);
            }
        }

        return types;
    }

    private static string ReadNode(Reader reader, long end)
    {
        string opType = "";
        string domain = "";
        while (reader.Position < end)
        {
            var (field, wire) = reader.Tag();
            if (wire == 2 && (field == 4 || field == 7))
            {
                var text = reader.String();
                if (field == 4)
                {
                    opType = text;
                }
                else
                {
                    domain = text;
                }
            }
            else
            {
                reader.Skip(wire);
            }
        }

        return domain is "" or "ai.onnx" ? opType : domain + ":" + opType;
    }

    /// <summary>Reads protobuf tags, lengths and varints from a seekable stream, seeking over what it skips.</summary>
    internal sealed class Reader(Stream stream)
    {
        public long Position => stream.Position;

        public (int Field, int Wire) Tag()
        {
            var tag = Varint();
            return ((int)(tag >> 3), (int)(tag & 7));
        }

        public long LengthEnd()
        {
            var length = (long)Varint();
            var end = stream.Position + length;
            if (length < 0 || end > stream.Length)
            {
                throw new InvalidDataException("A length-delimited field runs past the end of the file.");
            }

            return end;
        }

        public string String()
        {
            var end = LengthEnd();
            var bytes = new byte[end - stream.Position];
            stream.ReadExactly(bytes);
            return System.Text.Encoding.UTF8.GetString(bytes);
        }

        public void Skip(int wire)
        {
            switch (wire)
            {
                case 0:
                    Varint();
                    break;
                case 1:
                    stream.Seek(8, SeekOrigin.Current);
                    break;
                case 2:
                    stream.Seek(LengthEnd(), SeekOrigin.Begin);
                    break;
                case 5:
                    stream.Seek(4, SeekOrigin.Current);
                    break;
                default:
                    throw new InvalidDataException($"Protobuf wire type {wire} is not one ONNX uses.");
            }
        }

        private ulong Varint()
        {
            ulong value = 0;
            for (var shift = 0; shift < 64; shift += 7)
            {
                var b = stream.ReadByte();
                if (b < 0)
                {
                    throw new InvalidDataException("The file ends inside a protobuf varint.");
                }

                value |= (ulong)(b & 0x7F) << shift;
                if ((b & 0x80) == 0)
                {
                    return value;
                }
            }

            throw new InvalidDataException("A protobuf varint is longer than 10 bytes.");
        }
    }
}
