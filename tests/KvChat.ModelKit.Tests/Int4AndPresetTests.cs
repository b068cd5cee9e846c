using KvChat.Testing;
using Microsoft.ML.OnnxRuntimeGenAI;
using Xunit;

namespace KvChat.ModelKit.Tests;

public sealed class Int4AndPresetTests
{
    [Fact]
    public void Int4_Graph_HasMatMulNBitsForEveryLinearAndTheLmHead()
    {
        var options = ModelKitOptions.Tiny with { Precision = WeightPrecision.Int4 };
        var kit = TestModels.Get(options);
        var graph = Onnx.ModelProto.Parser.ParseFrom(File.ReadAllBytes(Path.Combine(kit.Directory, "model.onnx"))).Graph;

        var nbits = graph.Node.Where(n => n.OpType == "MatMulNBits").ToList();
        Assert.Equal((7 * options.NumLayers) + 1, nbits.Count);
        Assert.DoesNotContain(graph.Node, n => n.OpType is "MatMul" or "Gemm");
        Assert.All(nbits, n =>
        {
            Assert.Equal("com.microsoft", n.Domain);
            Assert.Equal(4, n.Attribute.Single(a => a.Name == "bits").I);
            Assert.Equal(32, n.Attribute.Single(a => a.Name == "block_size").I);
            Assert.Equal(4, n.Attribute.Single(a => a.Name == "accuracy_level").I);
            Assert.Equal(3, n.Input.Count); // no zero points: symmetric around 8
        });

        var head = nbits.Single(n => n.Input[1] == "lm_head.weight_Q4");
        Assert.Equal(options.VocabSize, head.Attribute.Single(a => a.Name == "N").I);
        var packed = graph.Initializer.Single(t => t.Name == "lm_head.weight_Q4");
        Assert.Equal(new long[] { options.VocabSize, options.HiddenSize / 32, 16 }, packed.Dims.ToArray());
        Assert.Equal((int)Onnx.TensorProto.Types.DataType.Uint8, packed.DataType);
    }

    [Fact]
    public void Int4_Model_LoadsInGenAiAndStaysCloseToFp32()
    {
        using var fp32 = new Model(TestModels.PathOf(ModelKitOptions.Tiny));
        using var int4 = new Model(TestModels.PathOf(ModelKitOptions.Tiny with { Precision = WeightPrecision.Int4 }));
        using var tokenizer = new Tokenizer(fp32);
        using var prompt = tokenizer.Encode("<|im_start|>user\nTell me something.<|im_end|>\n<|im_start|>assistant\n");

        using var a = RawGeneration.NewGenerator(fp32);
        using var b = RawGeneration.NewGenerator(int4);
        a.AppendTokens(prompt[0]);
        b.AppendTokens(prompt[0]);
        var expected = RawGeneration.LastLogits(a);
        var actual = RawGeneration.LastLogits(b);

        Assert.All(actual, v => Assert.True(float.IsFinite(v)));
        var spread = expected.Max() - expected.Min();
        var difference = RawGeneration.MaxAbsDifference(expected, actual);
        Assert.InRange(difference, 1e-6f, spread * 0.25f); // int4 changes the logits, but not beyond recognition
        Assert.NotEmpty(RawGeneration.FreshGreedy(int4, prompt[0], 8));
    }

    [Fact]
    public void Int4Blocks_QuantizeWithinHalfAScale_AndBothPackingsHoldTheSameCodes()
    {
        var random = new Random(3);
        const int rows = 5;
        const int columns = 64;
        var weights = Enumerable.Range(0, rows * columns).Select(_ => (float)((random.NextDouble() * 2) - 1)).ToArray();
        var blocks = Int4Blocks.FromRows(weights, rows, columns);

        for (var r = 0; r < rows; r++)
        {
            for (var c = 0; c < columns; c++)
            {
                var scale = blocks.Scales[(r * 2) + (c / 32)];
                Assert.Equal(scale, (float)(Half)scale);
                Assert.True(MathF.Abs(blocks.Dequantized(r, c) - weights[(r * columns) + c]) <= (scale / 2) + 1e-7f);
            }
        }

        var nbits = blocks.ToMatMulNBits();
        var q40 = blocks.ToQ40();
        Assert.Equal(rows * columns / 2, nbits.Length);
        Assert.Equal(rows * 2 * 18, q40.Length);
        for (var r = 0; r < rows; r++)
        {
            for (var b = 0; b < 2; b++)
            {
                var block = q40.AsSpan(((r * 2) + b) * 18, 18);
                Assert.Equal((Half)blocks.Scales[(r * 2) + b], BitConverter.ToHalf(block[..2]));
                for (var j = 0; j < 32; j++)
                {
                    var k = (r * columns) + (b * 32) + j;
                    var fromNBits = (nbits[k / 2] >> (k % 2 == 0 ? 0 : 4)) & 0xF;
                    var fromQ40 = (block[2 + (j % 16)] >> (j < 16 ? 0 : 4)) & 0xF;
                    Assert.Equal(fromNBits, fromQ40);
                }
            }
        }
    }

    [Fact]
    public void Presets_HaveTheDimensionsOfRealModels()
    {
        var qwen = ModelKitOptions.FromPreset("qwen2.5-0.5b");
        Assert.Equal((896, 24, 14, 2, 4864, 151_936), (qwen.HiddenSize, qwen.NumLayers, qwen.NumHeads, qwen.NumKvHeads, qwen.IntermediateSize, qwen.VocabSize));
        Assert.Equal(WeightPrecision.Int4, qwen.Precision);
        var llama = ModelKitOptions.FromPreset("llama3.2-1b");
        Assert.Equal((2048, 16, 32, 8, 8192, 128_256), (llama.HiddenSize, llama.NumLayers, llama.NumHeads, llama.NumKvHeads, llama.IntermediateSize, llama.VocabSize));
        Assert.Equal(ChatTemplateFamily.Llama3, llama.TemplateFamily);
        Assert.Equal(262_144, ModelKitOptions.FromPreset("vocab262k").VocabSize);
        foreach (var name in ModelKitOptions.PresetNames)
        {
            ModelKitOptions.FromPreset(name).Validate();
        }
    }

    [Fact]
    public void Validate_Fp32OverTheOnnxLimit_AsksForInt4()
    {
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => (ModelKitOptions.Llama32OneB with { Precision = WeightPrecision.Fp32 }).Validate());
        Assert.Contains("int4", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Validate_Int4WithAnInputNotInBlocksOf32_IsRefused()
    {
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => (ModelKitOptions.Tiny with { Precision = WeightPrecision.Int4, IntermediateSize = 100 }).Validate());
        Assert.Contains("multiples of 32", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void CommandLine_PrecisionAndGguf_Parse()
    {
        var (options, _) = ModelKitCommandLine.Parse(["--preset", "qwen2.5-0.5b", "--precision", "fp32", "--gguf", "--layers", "2", "--out", "x"]);
        Assert.Equal(WeightPrecision.Fp32, options.Precision);
        Assert.True(options.WriteGguf);
        Assert.Equal(896, options.HiddenSize);

        using var output = new StringWriter();
        using var error = new StringWriter();
        Assert.Equal(2, ModelKitCommandLine.Run(["--precision", "int3", "--out", "x"], output, error));
        Assert.Contains("int3", error.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void CommandLine_Gguf_WritesModelGguf()
    {
        var directory = Path.Combine(TestModels.RunDirectory, "cli-gguf");
        using var output = new StringWriter();
        using var error = new StringWriter();

        Assert.Equal(0, ModelKitCommandLine.Run(["--preset", "tiny", "--precision", "int4", "--gguf", "--out", directory], output, error));
        var bytes = File.ReadAllBytes(Path.Combine(directory, ModelKit.GgufFileName));
        Assert.Equal("GGUF"u8.ToArray(), bytes[..4]);
        Assert.Equal(3u, BitConverter.ToUInt32(bytes, 4));
    }
}
