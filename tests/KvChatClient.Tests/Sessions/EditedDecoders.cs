using Google.Protobuf;
using KvChat.Testing;
using Onnx;

namespace KvChat.Tests.Sessions;

/// <summary>Kit model folders with an edited <c>model.onnx</c>: other graph shapes, or the weights as external data.</summary>
internal static class EditedDecoders
{
    private static readonly Lock Gate = new();

    /// <summary>A copy of <paramref name="source"/> whose graph <paramref name="edit"/> changed (written once per run).</summary>
    public static string WithGraph(string source, string name, Action<GraphProto> edit)
        => Copy(source, name, model =>
        {
            edit(model.Graph);
            File.WriteAllBytes(Path.Combine(Path.Combine(TestModels.RunDirectory, name), "model.onnx"), model.ToByteArray());
        });

    /// <summary>
    /// A copy of <paramref name="source"/> whose initializers of 1 KiB or more are in <c>model.onnx.data</c> (each at an
    /// offset aligned to 4 KiB, as ONNX's exporter writes large models), the rest inline.
    /// </summary>
    public static string WithExternalData(string source, string name)
        => Copy(source, name, model =>
        {
            var folder = Path.Combine(TestModels.RunDirectory, name);
            using (var data = File.Create(Path.Combine(folder, "model.onnx.data")))
            {
                foreach (var tensor in model.Graph.Initializer.Where(t => t.RawData.Length >= 1024))
                {
                    data.SetLength((data.Length + 4095) / 4096 * 4096);
                    data.Position = data.Length;
                    var offset = data.Position;
                    tensor.RawData.WriteTo(data);
                    tensor.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = "model.onnx.data" });
                    tensor.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = $"{offset}" });
                    tensor.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = $"{tensor.RawData.Length}" });
                    tensor.DataLocation = TensorProto.Types.DataLocation.External;
                    tensor.RawData = ByteString.Empty;
                }
            }

            File.WriteAllBytes(Path.Combine(folder, "model.onnx"), model.ToByteArray());
        });

    /// <summary>The node producing <paramref name="output"/>.</summary>
    public static NodeProto Producer(GraphProto graph, string output) => graph.Node.Single(n => n.Output.Contains(output));

    /// <summary>Renames what produces <paramref name="output"/> to <paramref name="renamed"/> and returns the node.</summary>
    public static NodeProto Rename(GraphProto graph, string output, string renamed)
    {
        var node = Producer(graph, output);
        node.Output[node.Output.IndexOf(output)] = renamed;
        return node;
    }

    /// <summary>Appends a node with one output.</summary>
    public static void Add(GraphProto graph, string op, string[] inputs, string output, params AttributeProto[] attributes)
    {
        var node = new NodeProto { OpType = op, Name = output + "_node" };
        node.Input.AddRange(inputs);
        node.Output.Add(output);
        node.Attribute.AddRange(attributes);
        graph.Node.Add(node);
    }

    private static string Copy(string source, string name, Action<ModelProto> write)
    {
        var folder = Path.Combine(TestModels.RunDirectory, name);
        lock (Gate)
        {
            if (!File.Exists(Path.Combine(folder, "genai_config.json")))
            {
                Directory.CreateDirectory(folder);
                var model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(Path.Combine(source, "model.onnx")));
                write(model);
                foreach (var file in Directory.GetFiles(source).Where(f => !f.EndsWith(".onnx", StringComparison.Ordinal)))
                {
                    File.Copy(file, Path.Combine(folder, Path.GetFileName(file)), overwrite: true);
                }
            }
        }

        return folder;
    }
}
