using System.Runtime.InteropServices;

namespace KvChat.ModelKit;

/// <summary>
/// Writes the kit's network as a llama.cpp GGUF: the same weights (the same int4 blocks at int4 precision), the same
/// token ids, merges and chat template, so llama.cpp-based runtimes run the network GenAI runs.
/// </summary>
/// <remarks>
/// The architecture is llama.cpp's <c>qwen2</c> for every template family, because it is exactly the kit's network:
/// RMSNorm (epsilon 1e-5), rotary embedding in the NEOX style (pairs <c>i</c> and <c>i + d/2</c>, the non-interleaved
/// layout of the kit's <c>GroupQueryAttention</c>, so Q and K need no row permutation; llama.cpp's <c>llama</c>
/// architecture rotates interleaved pairs and would need the permutation Hugging Face conversions apply), grouped KV
/// heads, a SwiGLU MLP, a tied LM head (no <c>output.weight</c>) and an optional <c>output.bias</c> (the kit's logit
/// bias, which the <c>llama</c> architecture has no tensor for). Q/K/V biases are written as zeros.
/// </remarks>
internal static class GgufExport
{
    public const string FileName = "model.gguf";
    private const string Arch = "qwen2";

    public static void Write(ModelKitOptions o, Vocabulary vocab, IReadOnlyList<int> eos, string path)
    {
        var weights = new KitWeights(o);
        var int4 = o.Precision == WeightPrecision.Int4;
        var gguf = new GgufWriter();
        var family = vocab.Family;
        gguf.Add("general.architecture", Arch);
        gguf.Add("general.name", $"kvchat-kit-{o.HiddenSize}x{o.NumLayers}-v{o.VocabSize}-{(int4 ? "q4_0" : "f32")}");
        gguf.Add("general.file_type", int4 ? 2u : 0u); // LLAMA_FTYPE_MOSTLY_Q4_0 : LLAMA_FTYPE_ALL_F32
        gguf.Add($"{Arch}.context_length", (uint)o.ContextLength);
        gguf.Add($"{Arch}.embedding_length", (uint)o.HiddenSize);
        gguf.Add($"{Arch}.block_count", (uint)o.NumLayers);
        gguf.Add($"{Arch}.feed_forward_length", (uint)o.IntermediateSize);
        gguf.Add($"{Arch}.attention.head_count", (uint)o.NumHeads);
        gguf.Add($"{Arch}.attention.head_count_kv", (uint)o.NumKvHeads);
        gguf.Add($"{Arch}.attention.layer_norm_rms_epsilon", DecoderGraph.NormEpsilon);
        gguf.Add($"{Arch}.rope.freq_base", DecoderGraph.RopeTheta);
        gguf.Add($"{Arch}.rope.dimension_count", (uint)o.HeadSize);

        // Tokenizer: byte-level BPE with GPT-2's pre-tokenizer regex (the kit's tokenizer.json ByteLevel use_regex).
        gguf.Add("tokenizer.ggml.model", "gpt2");
        gguf.Add("tokenizer.ggml.pre", "gpt-2");
        gguf.Add("tokenizer.ggml.tokens", vocab.Tokens);
        gguf.Add("tokenizer.ggml.token_type", TokenTypes(vocab));
        gguf.Add("tokenizer.ggml.merges", vocab.Merges.Select(m => m.Left + " " + m.Right).ToArray());
        gguf.Add("tokenizer.ggml.bos_token_id", (uint)(family.BosToken is null ? eos[0] : vocab.IdOf(family.BosToken)));
        gguf.Add("tokenizer.ggml.eos_token_id", (uint)eos[0]);
        gguf.Add("tokenizer.ggml.eot_token_id", (uint)eos[0]);
        gguf.Add("tokenizer.ggml.padding_token_id", (uint)vocab.IdOf(family.PadToken));
        gguf.Add("tokenizer.ggml.add_bos_token", false);
        gguf.Add("tokenizer.ggml.add_eos_token", false);
        gguf.Add("tokenizer.chat_template", family.ChatTemplate);

        long h = o.HiddenSize;
        var kv = o.NumKvHeads * o.HeadSize;
        var weightType = int4 ? GgufTensorType.Q4_0 : GgufTensorType.F32;
        gguf.AddTensor("token_embd.weight", weightType, [h, o.VocabSize],
            () => int4 ? weights.EmbeddingInt4().ToQ40() : weights.EmbeddingBytes());
        gguf.AddTensor("output_norm.weight", GgufTensorType.F32, [h], () => Ones(h));
        gguf.AddTensor("output.bias", GgufTensorType.F32, [o.VocabSize], () => Bytes(vocab.LogitBias(o.PrintableBias, o.EndOfTurnBias)));

        var names = new Dictionary<string, string>
        {
            ["self_attn.q_proj"] = "attn_q",
            ["self_attn.k_proj"] = "attn_k",
            ["self_attn.v_proj"] = "attn_v",
            ["self_attn.o_proj"] = "attn_output",
            ["mlp.gate_proj"] = "ffn_gate",
            ["mlp.up_proj"] = "ffn_up",
            ["mlp.down_proj"] = "ffn_down",
        };
        for (var layer = 0; layer < o.NumLayers; layer++)
        {
            var blk = $"blk.{layer}";
            gguf.AddTensor($"{blk}.attn_norm.weight", GgufTensorType.F32, [h], () => Ones(h));
            gguf.AddTensor($"{blk}.ffn_norm.weight", GgufTensorType.F32, [h], () => Ones(h));
            foreach (var (name, fanIn, fanOut) in weights.LayerLinears(layer))
            {
                var key = name[$"model.layers.{layer}.".Length..^".weight".Length];
                gguf.AddTensor($"{blk}.{names[key]}.weight", weightType, [fanIn, fanOut],
                    () => int4 ? weights.LinearInt4(name, fanIn, fanOut).ToQ40() : Transposed(weights.LinearFloats(name, fanIn, fanOut), fanIn, fanOut));
            }

            gguf.AddTensor($"{blk}.attn_q.bias", GgufTensorType.F32, [h], () => new byte[h * 4]);
            gguf.AddTensor($"{blk}.attn_k.bias", GgufTensorType.F32, [kv], () => new byte[kv * 4]);
            gguf.AddTensor($"{blk}.attn_v.bias", GgufTensorType.F32, [kv], () => new byte[kv * 4]);
        }

        var temp = path + ".tmp";
        using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
        {
            gguf.Write(stream);
        }

        File.Move(temp, path, overwrite: true);
    }

    /// <summary>llama.cpp token types: 1 normal, 3 control (special added tokens), 4 user-defined (other added tokens).</summary>
    private static int[] TokenTypes(Vocabulary vocab)
    {
        var types = new int[vocab.Size];
        for (var id = 0; id < vocab.Size; id++)
        {
            types[id] = id < vocab.FirstAddedId ? 1 : vocab.Family.AddedTokens[id - vocab.FirstAddedId].Special ? 3 : 4;
        }

        return types;
    }

    /// <summary>A <c>[fanIn, fanOut]</c> MatMul weight as ggml's <c>{fanIn, fanOut}</c> tensor: one row of fanIn per output.</summary>
    private static byte[] Transposed(float[] weight, int fanIn, int fanOut)
    {
        var transposed = new float[weight.Length];
        for (var k = 0; k < fanIn; k++)
        {
            for (var n = 0; n < fanOut; n++)
            {
                transposed[((long)n * fanIn) + k] = weight[((long)k * fanOut) + n];
            }
        }

        return Bytes(transposed);
    }

    private static byte[] Ones(long count) => WeightRandom.Constant(count, 1f);

    private static byte[] Bytes(float[] values) => MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
}
