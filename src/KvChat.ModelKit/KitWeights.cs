namespace KvChat.ModelKit;

/// <summary>
/// The kit's weights by tensor name, shared by the ONNX graph and the GGUF export so both files hold the same network:
/// deterministic uniform values (one stream per name and seed), ones for the norms, and the LM head's logit bias.
/// </summary>
internal sealed class KitWeights(ModelKitOptions options)
{
    public const string Embedding = "model.embed_tokens.weight";

    /// <summary>Weights twice the usual 1/sqrt(fan-in) scale make random models context-sensitive rather than repetitive.</summary>
    private const float WeightScale = 2f;

    public ModelKitOptions Options { get; } = options;

    /// <summary>The token embedding, row-major <c>[vocab, hidden]</c> as little-endian float32 bytes; also the tied LM head.</summary>
    public byte[] EmbeddingBytes()
        => WeightRandom.Uniform(Options.Seed, Embedding, (long)Options.VocabSize * Options.HiddenSize, EmbeddingLimit);

    /// <summary>The same embedding as floats.</summary>
    public float[] EmbeddingFloats()
        => WeightRandom.UniformFloats(Options.Seed, Embedding, (long)Options.VocabSize * Options.HiddenSize, EmbeddingLimit);

    private float EmbeddingLimit => MathF.Sqrt(3f) * 2.5f / MathF.Sqrt(Options.HiddenSize);

    /// <summary>A <c>MatMul</c> weight, row-major <c>[fanIn, fanOut]</c> (x times W), as little-endian float32 bytes.</summary>
    public byte[] LinearBytes(string name, int fanIn, int fanOut)
        => WeightRandom.Uniform(Options.Seed, name, (long)fanIn * fanOut, LinearLimit(fanIn));

    /// <summary>The same weight as floats.</summary>
    public float[] LinearFloats(string name, int fanIn, int fanOut)
        => WeightRandom.UniformFloats(Options.Seed, name, (long)fanIn * fanOut, LinearLimit(fanIn));

    private static float LinearLimit(int fanIn) => WeightScale * MathF.Sqrt(3f / fanIn);

    /// <summary>The int4 blocks of a <c>MatMul</c> weight (rows = output units).</summary>
    public Int4Blocks LinearInt4(string name, int fanIn, int fanOut)
        => Int4Blocks.FromMatMulWeight(LinearFloats(name, fanIn, fanOut), fanIn, fanOut);

    /// <summary>The int4 blocks of the embedding (rows = tokens), used for the int4 LM head and its dequantized lookup table.</summary>
    public Int4Blocks EmbeddingInt4() => Int4Blocks.FromRows(EmbeddingFloats(), Options.VocabSize, Options.HiddenSize);

    /// <summary>The linear layers of one decoder layer: name, fan-in, fan-out.</summary>
    public IEnumerable<(string Name, int FanIn, int FanOut)> LayerLinears(int layer)
    {
        var h = Options.HiddenSize;
        var kv = Options.NumKvHeads * Options.HeadSize;
        var i = Options.IntermediateSize;
        var a = $"model.layers.{layer}.self_attn";
        var m = $"model.layers.{layer}.mlp";
        yield return ($"{a}.q_proj.weight", h, h);
        yield return ($"{a}.k_proj.weight", h, kv);
        yield return ($"{a}.v_proj.weight", h, kv);
        yield return ($"{a}.o_proj.weight", h, h);
        yield return ($"{m}.gate_proj.weight", h, i);
        yield return ($"{m}.up_proj.weight", h, i);
        yield return ($"{m}.down_proj.weight", i, h);
    }
}
