using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;
using Microsoft.ML.OnnxRuntimeGenAI;
using Onnx;
using Xunit;

namespace KvChat.Tests.Sessions;

/// <summary>
/// The owned backend's decoder rewritten so that a prefill computes the LM head for its last positions only: where it
/// applies, what it declines, external data, and that the logits stay those of the graph as exported.
/// </summary>
public sealed class LastPositionLogitsTests
{
    private const string Script = "a scripted reply";

    public static TheoryData<string> KitModels => new("fp32", "int4", "fp32 scripted", "int4 scripted");

    [Theory]
    [MemberData(nameof(KitModels))]
    public void Rewrite_AppliesOnTheKitsGqaModels_LogitsBitIdenticalToTheGraphAsExported(string kind)
    {
        var path = KitPath(kind);
        using var sliced = Create(path, lastPositionLogits: true);
        using var full = Create(path, lastPositionLogits: false);
        Assert.Equal(OwnedBackend.LastLogitPositions, sliced.LogitPositions);
        Assert.Contains("last position", sliced.LogitsNote, StringComparison.Ordinal);
        Assert.Equal(0, full.LogitPositions);
        AssertSameLogits(full, sliced, seed: kind.Length);
    }

    [Fact]
    public void Rewrite_KeepsTheLastPositions_OfEveryPrefillChunk_AndDecodeStepsUnchanged()
    {
        // Against GenAI itself on a prompt of three chunks, and a step after it.
        var path = KitPath("fp32");
        using var backend = Create(path, lastPositionLogits: true, context: 512);
        using var model = new Model(path);
        using var generator = RawGeneration.NewGenerator(model, 512);
        using var session = backend.CreateSession();
        var prompt = Prompt((OwnedBackend.PrefillChunk * 2) + 37, 11, ModelKitOptions.Tiny.VocabSize);
        session.Extend(0, prompt);
        generator.AppendTokens(prompt);
        Assert.True(RawGeneration.MaxAbsDifference(RawGeneration.LastLogits(generator), Logits(session)) < 1e-4f);
        session.Append(9);
        generator.AppendTokens([9]);
        Assert.Equal(RawGeneration.LastLogits(generator), Logits(session));
    }

    [Theory]
    [InlineData("fp32")]
    [InlineData("int4")]
    public async Task Oracle_PassesWithTheRewrite_AndTheLoadSaysSo(string kind)
    {
        var logs = new CapturingLoggerProvider();
        using var factory = LoggerFactory.Create(b => b.AddProvider(logs).SetMinimumLevel(LogLevel.Information));
        using var harness = new OracleHarness(KitPath(kind), new KvChatClientOptions { LoggerFactory = factory, SessionBackend = KvSessionBackend.Owned });
        Assert.Contains(logs.Entries, e => e.EventId.Id == 21 && e.Message.Contains("last position", StringComparison.Ordinal));

        // A long first turn (more than one prefill chunk), then turns that prefill only what is new.
        var history = new List<ChatMessage> { new(ChatRole.System, string.Join(' ', Enumerable.Repeat("system words", 90))), new(ChatRole.User, "first question") };
        for (var turn = 0; turn < 3; turn++)
        {
            var reply = await harness.AskAsync(history, new ChatOptions { MaxOutputTokens = 12 }, TestContext.Current.CancellationToken);
            history.AddRange(reply.Messages);
            history.Add(new ChatMessage(ChatRole.User, $"question {turn}"));
        }

        Assert.Equal(3, harness.Checked);
    }

    [Fact]
    public void UnrecognisedGraph_IsKeptAsExported_WithTheReason_AndStillMatchesGenAi()
    {
        // logits = Transpose(Transpose(head)): the same values through an operator the rewrite does not walk through.
        var path = EditedDecoders.WithGraph(KitPath("fp32"), "logits-transposed", graph =>
        {
            EditedDecoders.Rename(graph, "logits", "logits_raw");
            var perm = new AttributeProto { Name = "perm", Type = AttributeProto.Types.AttributeType.Ints };
            perm.Ints.AddRange([0, 2, 1]);
            EditedDecoders.Add(graph, "Transpose", ["logits_raw"], "logits_t", perm);
            EditedDecoders.Add(graph, "Transpose", ["logits_t"], "logits", perm);
        });

        using var backend = Create(path, lastPositionLogits: true);
        Assert.Equal(0, backend.LogitPositions);
        Assert.Contains("every position", backend.LogitsNote, StringComparison.Ordinal);
        Assert.Contains("Transpose", backend.LogitsNote, StringComparison.Ordinal);
        AssertMatchesGenAi(backend, path);
    }

    [Fact]
    public void RewriteThatDoesNotLoad_FallsBackToTheGraphAsExported_WithTheReason()
    {
        // logits = head + Identity(zeros[vocab]): the rewrite slices the non-constant operand on axis 1, which a
        // rank-1 tensor does not have, so ONNX Runtime refuses the rewritten graph.
        var path = EditedDecoders.WithGraph(KitPath("fp32"), "logits-plus-rank1", graph =>
        {
            EditedDecoders.Rename(graph, "logits", "logits_raw");
            var zeros = new TensorProto { Name = "zeros", DataType = (int)TensorProto.Types.DataType.Float };
            zeros.Dims.Add(ModelKitOptions.Tiny.VocabSize);
            zeros.FloatData.AddRange(new float[ModelKitOptions.Tiny.VocabSize]);
            graph.Initializer.Add(zeros);
            EditedDecoders.Add(graph, "Identity", ["zeros"], "zeros_copy");
            EditedDecoders.Add(graph, "Add", ["logits_raw", "zeros_copy"], "logits");
        });

        using var backend = Create(path, lastPositionLogits: true);
        Assert.Equal(0, backend.LogitPositions);
        Assert.Contains("failed to load or run", backend.LogitsNote, StringComparison.Ordinal);
        AssertMatchesGenAi(backend, path);
    }

    [Theory]
    [InlineData("fp32")]
    [InlineData("int4")]
    public async Task ExternalDataModel_LoadsItsWeightsFromItsFolder_RewrittenOrNot(string kind)
    {
        var path = EditedDecoders.WithExternalData(KitPath(kind), $"external-{kind.Replace(' ', '-')}");
        Assert.True(new FileInfo(Path.Combine(path, "model.onnx")).Length < 64 * 1024);

        using var inline = Create(KitPath(kind), lastPositionLogits: false);
        using (var sliced = Create(path, lastPositionLogits: true))
        {
            Assert.Equal(OwnedBackend.LastLogitPositions, sliced.LogitPositions);
            AssertSameLogits(inline, sliced, seed: 3);
        }

        using (var full = Create(path, lastPositionLogits: false))
        {
            AssertSameLogits(inline, full, seed: 4);
        }

        using var harness = new OracleHarness(path, new KvChatClientOptions { SessionBackend = KvSessionBackend.Owned });
        await harness.AskAsync([new(ChatRole.User, "hello there")], new ChatOptions { MaxOutputTokens = 8 }, TestContext.Current.CancellationToken);
    }

    [Fact]
    public void Reader_LeavesLargeTensorsInTheFile_ReferringToTheirBytes_AndKeepsTheRestInline()
    {
        var file = Path.Combine(KitPath("int4"), "model.onnx");
        var original = ModelProto.Parser.ParseFrom(File.ReadAllBytes(file)).Graph.Initializer.ToDictionary(t => t.Name);
        var read = DecoderProtoReader.Read(file, out var referenced);
        Assert.Equal(original.Count, read.Graph.Initializer.Count);
        Assert.Equal(original.Values.Count(t => t.RawData.Length >= DecoderProtoReader.InlineBytes), referenced);
        Assert.True(referenced > 0);

        using var stream = File.OpenRead(file);
        foreach (var tensor in read.Graph.Initializer)
        {
            var expected = original[tensor.Name];
            Assert.Equal(expected.Dims, tensor.Dims);
            Assert.Equal(expected.DataType, tensor.DataType);
            if (tensor.DataLocation != TensorProto.Types.DataLocation.External)
            {
                Assert.Equal(expected, tensor);
                continue;
            }

            var entries = tensor.ExternalData.ToDictionary(e => e.Key, e => e.Value);
            Assert.Equal("model.onnx", entries["location"]);
            var bytes = new byte[long.Parse(entries["length"], System.Globalization.CultureInfo.InvariantCulture)];
            stream.Position = long.Parse(entries["offset"], System.Globalization.CultureInfo.InvariantCulture);
            stream.ReadExactly(bytes);
            Assert.True(expected.RawData.Span.SequenceEqual(bytes), tensor.Name);
        }
    }

    [Fact]
    public void TryApply_DeclinesAGraphWithoutTheLogitsOutput_AndChangesNothing()
    {
        var model = DecoderProtoReader.Read(Path.Combine(KitPath("fp32"), "model.onnx"), out _);
        var before = model.Clone();
        Assert.Contains("no output 'scores'", LastPositionLogits.TryApply(model, "scores", 1, out _), StringComparison.Ordinal);
        Assert.Equal(before, model);
        Assert.Null(LastPositionLogits.TryApply(model, "logits", 1, out var head));
        Assert.Equal("Gemm", Producer(model.Graph, head).OpType);
        Assert.Equal(LastPositionLogits.PositionsDimension, model.Graph.Output.Single(o => o.Name == "logits").Type.TensorType.Shape.Dim[1].DimParam);
    }

    private static NodeProto Producer(GraphProto graph, string name) => graph.Node.Single(n => n.Name == name);

    private static string KitPath(string kind) => TestModels.PathOf(ModelKitOptions.Tiny with
    {
        Precision = kind.StartsWith("int4", StringComparison.Ordinal) ? WeightPrecision.Int4 : WeightPrecision.Fp32,
        Script = kind.EndsWith("scripted", StringComparison.Ordinal) ? Script : null,
    });

    private static OwnedBackend Create(string path, bool lastPositionLogits, int context = 512)
        => OwnedBackend.TryCreate(ModelFolder.Read(path), context, 2, 1, out var reason, lastPositionLogits) ?? throw new InvalidOperationException(reason);

    /// <summary>Prefills of 1, 2, 5, 40, one chunk and three chunks, then three decode steps: the same bits in both.</summary>
    private static void AssertSameLogits(OwnedBackend expected, OwnedBackend actual, int seed)
    {
        foreach (var length in new[] { 1, 2, 5, 40, OwnedBackend.PrefillChunk, (OwnedBackend.PrefillChunk * 2) + 37 })
        {
            using var a = expected.CreateSession();
            using var b = actual.CreateSession();
            var prompt = Prompt(length, seed + length, expected.Vocab);
            a.Extend(0, prompt);
            b.Extend(0, prompt);
            AssertBits(Logits(a), Logits(b), $"prefill of {length}");
            foreach (var token in new[] { 7, 30, 12 })
            {
                a.Append(token);
                b.Append(token);
                AssertBits(Logits(a), Logits(b), $"step after a prefill of {length}");
            }
        }
    }

    private static void AssertMatchesGenAi(OwnedBackend backend, string path)
    {
        using var model = new Model(path);
        using var generator = RawGeneration.NewGenerator(model, 512);
        using var session = backend.CreateSession();
        var prompt = Prompt(40, 5, backend.Vocab);
        session.Extend(0, prompt);
        generator.AppendTokens(prompt);
        Assert.Equal(RawGeneration.LastLogits(generator), Logits(session));
    }

    private static void AssertBits(float[] expected, float[] actual, string what)
    {
        for (var i = 0; i < expected.Length; i++)
        {
            Assert.True(BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i]), $"{what}: logit {i} is {actual[i]:R}, not {expected[i]:R}");
        }
    }

    private static int[] Prompt(int length, int seed, int vocab)
    {
        var random = new Random(seed);
        return [.. Enumerable.Range(0, length).Select(_ => random.Next(3, vocab))];
    }

    private static float[] Logits(IKvSession session)
    {
        var logits = new float[ModelKitOptions.Tiny.VocabSize];
        session.ReadLastLogits(logits);
        return logits;
    }
}
