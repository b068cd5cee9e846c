namespace KvChat.ModelKit;

/// <summary>How the kit stores the weights of its linear layers.</summary>
public enum WeightPrecision
{
    /// <summary>float32 <c>MatMul</c> weights (and a float32 GGUF).</summary>
    Fp32,

    /// <summary>
    /// 4-bit weights as GenAI's model builder writes them for CPU (<c>-p int4 -e cpu</c>): <c>com.microsoft:MatMulNBits</c>,
    /// bits 4, block 32, symmetric (no zero points), <c>accuracy_level</c> 4, the LM head included. The GGUF export writes
    /// the same blocks as <c>Q4_0</c>, so both runtimes compute with the same dequantized weights.
    /// </summary>
    Int4,
}

/// <summary>Presets with the dimensions of real small models, the weight precision and the GGUF export.</summary>
public sealed partial record ModelKitOptions
{
    /// <summary>The preset names <see cref="FromPreset"/> accepts.</summary>
    public static IReadOnlyList<string> PresetNames { get; } = ["tiny", "bench", "bench-152k", "bench-262k", "qwen2.5-0.5b", "llama3.2-1b", "vocab262k"];

    /// <summary>
    /// The dimensions of Qwen2.5-0.5B (hidden 896, 24 layers, 14 heads, 2 KV heads, intermediate 4864, vocabulary
    /// 151,936), ChatML, int4, context 4096. The weights are the kit's random ones, not Qwen's.
    /// </summary>
    public static ModelKitOptions Qwen25HalfB { get; } = new()
    {
        HiddenSize = 896,
        NumLayers = 24,
        NumHeads = 14,
        NumKvHeads = 2,
        IntermediateSize = 4864,
        VocabSize = 151_936,
        ContextLength = 4096,
        Precision = WeightPrecision.Int4,
    };

    /// <summary>
    /// The dimensions of Llama-3.2-1B (hidden 2048, 16 layers, 32 heads, 8 KV heads, intermediate 8192, vocabulary
    /// 128,256), the Llama 3 template, int4, context 4096.
    /// </summary>
    public static ModelKitOptions Llama32OneB { get; } = new()
    {
        HiddenSize = 2048,
        NumLayers = 16,
        NumHeads = 32,
        NumKvHeads = 8,
        IntermediateSize = 8192,
        VocabSize = 128_256,
        ContextLength = 4096,
        TemplateFamily = ChatTemplateFamily.Llama3,
        Precision = WeightPrecision.Int4,
    };

    /// <summary>The Qwen2.5-0.5B dimensions with a 262,144-token vocabulary (the size of Gemma 3's), int4.</summary>
    public static ModelKitOptions Vocab262K { get; } = Qwen25HalfB with { VocabSize = 262_144 };

    /// <summary>Gets how the linear layers' weights are stored. <value>The default value is <see cref="WeightPrecision.Fp32"/>.</value></summary>
    public WeightPrecision Precision { get; init; } = WeightPrecision.Fp32;

    /// <summary>
    /// Gets the <c>accuracy_level</c> of the int4 <c>MatMulNBits</c> nodes: 4 (int8 activations on CPU, what the model
    /// builder writes for <c>-p int4 -e cpu</c>), or 0 to 3 (float activations on CPU). Ignored at fp32.
    /// <value>The default value is 4.</value>
    /// </summary>
    public int Int4AccuracyLevel { get; init; } = 4;

    /// <summary>
    /// Gets whether <see cref="ModelKit.Write"/> also writes <c>model.gguf</c>: the same network, weights and tokenizer
    /// for llama.cpp. <value>The default value is <see langword="false"/>.</value>
    /// </summary>
    public bool WriteGguf { get; init; }

    /// <summary>The protobuf limit of one <c>model.onnx</c> (no external data), with room for the graph itself.</summary>
    private const long OnnxByteLimit = (2L << 30) - (64L << 20);

    /// <summary>Gets an estimate of the size of <c>model.onnx</c> in bytes.</summary>
    public long EstimatedModelBytes
    {
        get
        {
            long h = HiddenSize;
            var kv = (long)NumKvHeads * HeadSize;
            var perLayer = (2 * h * h) + (2 * h * kv) + (3 * h * IntermediateSize);
            var linearBytes = Precision == WeightPrecision.Int4 ? (perLayer * NumLayers * 5 / 8) + ((long)VocabSize * h * 5 / 8) : perLayer * NumLayers * 4L;
            return linearBytes + ((long)VocabSize * h * 4) + ((long)ContextLength * HeadSize * 4);
        }
    }

    private static ModelKitOptions RealShapePreset(string name) => name.ToUpperInvariant() switch
    {
        "QWEN2.5-0.5B" => Qwen25HalfB,
        "LLAMA3.2-1B" => Llama32OneB,
        "VOCAB262K" => Vocab262K,
        _ => throw new ArgumentException($"Unknown preset '{name}': use {string.Join(", ", PresetNames)}.", nameof(name)),
    };

    private void ValidatePrecisionAndExport()
    {
        ArgumentOutOfRangeException.ThrowIfNegative(Int4AccuracyLevel);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(Int4AccuracyLevel, 4);
        if (Precision == WeightPrecision.Int4 && (HiddenSize % Int4Blocks.BlockSize != 0 || IntermediateSize % Int4Blocks.BlockSize != 0))
        {
            throw new ArgumentOutOfRangeException(nameof(Precision), Precision,
                $"int4 weights are quantized in blocks of {Int4Blocks.BlockSize} along the input: HiddenSize ({HiddenSize}) and IntermediateSize ({IntermediateSize}) must be multiples of {Int4Blocks.BlockSize}.");
        }

        if (EstimatedModelBytes > OnnxByteLimit)
        {
            throw new ArgumentOutOfRangeException(nameof(Precision), Precision,
                $"model.onnx would be about {EstimatedModelBytes / (double)(1L << 30):F1} GiB, over the 2 GiB a single ONNX protobuf holds; use int4 precision or smaller dimensions.");
        }

        if (WriteGguf && TokenizerFrom is not null)
        {
            throw new ArgumentException("The GGUF export writes the kit's own vocabulary: it cannot be combined with TokenizerFrom.", nameof(WriteGguf));
        }

        if (WriteGguf && IsScripted)
        {
            throw new ArgumentException("A scripted model cannot be exported to GGUF: its script layer has no llama.cpp equivalent.", nameof(WriteGguf));
        }
    }
}
