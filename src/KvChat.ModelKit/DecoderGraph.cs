using System.Runtime.InteropServices;
using Onnx;
using static KvChat.ModelKit.GraphBuilder;
using DataType = Onnx.TensorProto.Types.DataType;

namespace KvChat.ModelKit;

/// <summary>
/// Builds the decoder-only ONNX graph GenAI runs: token embedding, RMSNorm, attention with rotary embedding, a gated
/// (SiLU) MLP, a final norm and a tied LM head. A scripted model adds one attention-only layer whose KV cache carries
/// where the last message started, so its greedy output is the script, through the same KV machinery as the rest.
/// </summary>
internal sealed class DecoderGraph
{
    internal const float RopeTheta = 10000f;
    internal const float NormEpsilon = 1e-5f;
    private const float ScriptLogit = 100f;
    private const float MarkerSharpness = 30f;

    private readonly ModelKitOptions _o;
    private readonly float[] _logitBias;
    private readonly ScriptPlan? _script;
    private readonly GraphBuilder _g = new("kvchat_decoder");
    private readonly KitWeights _weights;

    /// <summary>Stored initializers that are not parameters of their own (int4 scales, the tied int4 LM head).</summary>
    private readonly HashSet<string> _notParameters = [];
    private readonly int _d;
    private readonly int _kvWidth;

    private DecoderGraph(ModelKitOptions options, float[] logitBias, ScriptPlan? script)
    {
        _o = options;
        _logitBias = logitBias;
        _script = script;
        _d = options.HeadSize;
        _kvWidth = options.NumKvHeads * _d;
        _weights = new KitWeights(options);
    }

    /// <summary>Total decoder layers GenAI sees (the script layer included).</summary>
    public static int LayerCount(ModelKitOptions options) => options.NumLayers + (options.IsScripted ? 1 : 0);

    /// <summary>Builds the graph; <paramref name="logitBias"/> is the LM head's bias, one value per token.</summary>
    public static ModelProto Build(ModelKitOptions options, float[] logitBias, ScriptPlan? script, out long parameterCount)
    {
        var graph = new DecoderGraph(options, logitBias, script);
        graph.BuildGraph();
        parameterCount = graph._g.Graph.Initializer
            .Where(t => !graph._notParameters.Contains(t.Name))
            .Sum(t => t.Dims.Aggregate(1L, (a, b) => a * b) * (t.DataType == (int)DataType.Uint8 ? 2 : 1));
        var model = new ModelProto
        {
            IrVersion = 8,
            ProducerName = "KvChat.ModelKit",
            ProducerVersion = "1",
            Graph = graph._g.Graph,
        };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "com.microsoft", Version = 1 });
        return model;
    }

    private bool Gqa => _o.Variant == ModelVariant.GroupQueryAttention;

    private void BuildGraph()
    {
        var layers = LayerCount(_o);
        _g.Input("input_ids", DataType.Int64, "batch_size", "sequence_length");
        _g.Input("attention_mask", DataType.Int64, "batch_size", "total_sequence_length");
        if (!Gqa)
        {
            _g.Input("position_ids", DataType.Int64, "batch_size", "sequence_length");
        }

        for (var i = 0; i < layers; i++)
        {
            _g.Input($"past_key_values.{i}.key", DataType.Float, "batch_size", _o.NumKvHeads, "past_sequence_length", _d);
            _g.Input($"past_key_values.{i}.value", DataType.Float, "batch_size", _o.NumKvHeads, "past_sequence_length", _d);
        }

        _g.Output("logits", DataType.Float, "batch_size", "sequence_length", _o.VocabSize);
        for (var i = 0; i < layers; i++)
        {
            _g.Output($"present.{i}.key", DataType.Float, "batch_size", _o.NumKvHeads, "total_sequence_length", _d);
            _g.Output($"present.{i}.value", DataType.Float, "batch_size", _o.NumKvHeads, "total_sequence_length", _d);
        }

        var h = _o.HiddenSize;
        var int4Embedding = _o.Precision == WeightPrecision.Int4 ? _weights.EmbeddingInt4() : null;
        var embed = int4Embedding is null
            ? _g.FloatBytes(KitWeights.Embedding, _weights.EmbeddingBytes(), _o.VocabSize, h)
            : _g.Float(KitWeights.Embedding, int4Embedding.DequantizeRows(), _o.VocabSize, h);
        var (cos, sin) = RotaryCaches();

        var attentionMaskContext = Gqa ? GqaMaskInputs() : default;
        var positions = Gqa ? null : "position_ids";

        var residual = _g.Node("Gather", [embed, "input_ids"], "embeddings");
        var normed = _g.Node("SimplifiedLayerNormalization", [residual, Ones("model.layers.0.input_layernorm.weight", h)], "layer0_norm", "",
            Attr("axis", -1L), Attr("epsilon", NormEpsilon), Attr("stash_type", 1L));
        string? pendingSkip = null;

        for (var layer = 0; layer < _o.NumLayers; layer++)
        {
            var p = $"model.layers.{layer}";
            if (pendingSkip is not null)
            {
                (normed, residual) = SkipNorm(pendingSkip, residual, Ones($"{p}.input_layernorm.weight", h));
            }

            var attention = Gqa
                ? GqaAttention(layer, normed, attentionMaskContext, cos, sin)
                : ConcatAttention(layer, normed, positions!, cos, sin);
            (normed, residual) = SkipNorm(attention, residual, Ones($"{p}.post_attention_layernorm.weight", h));
            pendingSkip = Mlp(layer, normed);
        }

        var (finalNorm, _) = SkipNorm(pendingSkip!, residual, Ones("model.norm.weight", h));
        var bias = _g.Float("lm_head.bias", _logitBias, _o.VocabSize);
        string logits;
        if (int4Embedding is not null)
        {
            // The tied LM head as the model builder's int4 CPU export writes it: MatMulNBits over the embedding's blocks.
            var head = MatMulNBits(finalNorm, "lm_head.weight", int4Embedding);
            _notParameters.Add("lm_head.weight_Q4");
            logits = _g.Node("Add", [head, bias], _script is null ? "logits" : null);
        }
        else
        {
            var flat = _g.Node("Reshape", [finalNorm, _g.Int64s(-1, h)]);
            var logits2d = _g.Node("Gemm", [flat, embed, bias], null, "", Attr("transB", 1L));
            var outShape = _g.Node("Concat", [_g.Node("Shape", ["input_ids"]), _g.Int64s(_o.VocabSize)], null, "", Attr("axis", 0L));
            logits = _g.Node("Reshape", [logits2d, outShape], _script is null ? "logits" : null);
        }

        if (_script is null)
        {
            return;
        }

        var scriptLogits = ScriptLayer(_o.NumLayers, attentionMaskContext, positions);
        _g.Node("Add", [logits, scriptLogits], "logits");
    }

    private (string Normed, string Sum) SkipNorm(string input, string skip, string gamma)
    {
        var outputs = _g.Nodes("SkipSimplifiedLayerNormalization", [input, skip, gamma],
            [_g.Fresh("skipnorm_out"), _g.Fresh("skipnorm_mean"), _g.Fresh("skipnorm_invstd"), _g.Fresh("skipnorm_sum")],
            "com.microsoft", Attr("epsilon", NormEpsilon));
        return (outputs[0], outputs[3]);
    }

    private string Mlp(int layer, string x)
    {
        var p = $"model.layers.{layer}.mlp";
        var h = _o.HiddenSize;
        var i = _o.IntermediateSize;
        var gate = Project(x, $"{p}.gate_proj.weight", h, i);
        var up = Project(x, $"{p}.up_proj.weight", h, i);
        var silu = _g.Node("Mul", [gate, _g.Node("Sigmoid", [gate])]);
        return Project(_g.Node("Mul", [silu, up]), $"{p}.down_proj.weight", i, h);
    }

    private readonly record struct GqaMask(string SeqLensK, string TotalSequenceLength);

    private GqaMask GqaMaskInputs()
    {
        var maskI32 = _g.Node("Cast", ["attention_mask"], null, "", Attr("to", (long)DataType.Int32));
        var sum = _g.Node("ReduceSum", [maskI32, _g.Int64s(1)], null, "", Attr("keepdims", 0L));
        var seqLensK = _g.Node("Sub", [sum, _g.Node("Constant", [], null, "", IntScalarAttr(1))], "seqlens_k");
        var total64 = _g.Node("Gather", [_g.Node("Shape", ["attention_mask"]), _g.Int64Scalar(1)]);
        var total = _g.Node("Cast", [total64], "total_seq_len", "", Attr("to", (long)DataType.Int32));
        return new GqaMask(seqLensK, total);
    }

    private static AttributeProto IntScalarAttr(int value)
    {
        var tensor = new TensorProto { Name = "one_i32", DataType = (int)DataType.Int32 };
        tensor.Int32Data.Add(value);
        return new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = tensor };
    }

    private string GqaAttention(int layer, string x, GqaMask mask, string cos, string sin)
    {
        var p = $"model.layers.{layer}.self_attn";
        var h = _o.HiddenSize;
        var q = Project(x, $"{p}.q_proj.weight", h, h);
        var k = Project(x, $"{p}.k_proj.weight", h, _kvWidth);
        var v = Project(x, $"{p}.v_proj.weight", h, _kvWidth);
        var outputs = _g.Nodes("GroupQueryAttention",
            [q, k, v, $"past_key_values.{layer}.key", $"past_key_values.{layer}.value", mask.SeqLensK, mask.TotalSequenceLength, cos, sin],
            [_g.Fresh("attn_out"), $"present.{layer}.key", $"present.{layer}.value"],
            "com.microsoft",
            Attr("num_heads", (long)_o.NumHeads), Attr("kv_num_heads", (long)_o.NumKvHeads),
            Attr("do_rotary", 1L), Attr("rotary_interleaved", 0L));
        return Project(outputs[0], $"{p}.o_proj.weight", h, h);
    }

    private string ConcatAttention(int layer, string x, string positions, string cos, string sin)
    {
        var p = $"model.layers.{layer}.self_attn";
        var h = _o.HiddenSize;
        var q = Heads(Project(x, $"{p}.q_proj.weight", h, h), _o.NumHeads);
        var k = Heads(Project(x, $"{p}.k_proj.weight", h, _kvWidth), _o.NumKvHeads);
        var v = Heads(Project(x, $"{p}.v_proj.weight", h, _kvWidth), _o.NumKvHeads);

        // Rotary embedding (non-interleaved halves) at the absolute positions.
        var cosAt = _g.Node("Unsqueeze", [_g.Node("Gather", [cos, positions]), _g.Int64s(1)]);
        var sinAt = _g.Node("Unsqueeze", [_g.Node("Gather", [sin, positions]), _g.Int64s(1)]);
        q = Rotate(q, cosAt, sinAt);
        k = Rotate(k, cosAt, sinAt);
        var output = PlainAttention(layer, q, k, v, positions, 1f / MathF.Sqrt(_d));
        return Project(output, $"{p}.o_proj.weight", h, h);
    }

    /// <summary>Attention over past + new keys with Concat growth, causal and padding masks, and grouped KV heads.</summary>
    private string PlainAttention(int layer, string q, string k, string v, string positions, float scale)
    {
        var presentK = _g.Node("Concat", [$"past_key_values.{layer}.key", k], $"present.{layer}.key", "", Attr("axis", 2L));
        var presentV = _g.Node("Concat", [$"past_key_values.{layer}.value", v], $"present.{layer}.value", "", Attr("axis", 2L));
        var groups = _o.NumHeads / _o.NumKvHeads;
        var kAll = ExpandKv(presentK, groups);
        var vAll = ExpandKv(presentV, groups);

        var scores = _g.Node("MatMul", [q, _g.Node("Transpose", [kAll], null, "", Attr("perm", new long[] { 0, 1, 3, 2 }))]);
        scores = _g.Node("Mul", [scores, _g.FloatScalar(scale)]);

        // Key j is visible to a query at absolute position p when j <= p and attention_mask[j] == 1.
        var total = _g.Node("Gather", [_g.Node("Shape", ["attention_mask"]), _g.Int64Scalar(1)]);
        var keyIndex = _g.Node("Range", [_g.Int64Scalar(0), total, _g.Int64Scalar(1)]);
        var causal = _g.Node("LessOrEqual", [keyIndex, _g.Node("Unsqueeze", [positions, _g.Int64s(2)])]);
        var padding = _g.Node("Unsqueeze", [_g.Node("Equal", ["attention_mask", _g.Int64Scalar(1)]), _g.Int64s(1)]);
        var visible = _g.Node("Unsqueeze", [_g.Node("And", [causal, padding]), _g.Int64s(1)]);
        scores = _g.Node("Where", [visible, scores, _g.FloatScalar(-1e9f)]);
        var probabilities = _g.Node("Softmax", [scores], null, "", Attr("axis", -1L));
        var context = _g.Node("MatMul", [probabilities, vAll]);
        var merged = _g.Node("Transpose", [context], null, "", Attr("perm", new long[] { 0, 2, 1, 3 }));
        return _g.Node("Reshape", [merged, _g.Int64s(0, 0, (long)_o.NumHeads * _d)]);
    }

    private string Heads(string x, int heads)
    {
        var split = _g.Node("Reshape", [x, _g.Int64s(0, 0, heads, _d)]);
        return _g.Node("Transpose", [split], null, "", Attr("perm", new long[] { 0, 2, 1, 3 }));
    }

    private string ExpandKv(string kv, int groups)
    {
        if (groups == 1)
        {
            return kv;
        }

        var unsqueezed = _g.Node("Unsqueeze", [kv, _g.Int64s(2)]);
        var expanded = _g.Node("Expand", [unsqueezed, _g.Int64s(1, 1, groups, 1, 1)]);
        return _g.Node("Reshape", [expanded, _g.Int64s(0, (long)_o.NumHeads, -1, _d)]);
    }

    private string Rotate(string x, string cos, string sin)
    {
        var halves = _g.Nodes("Split", [x, _g.Int64s(_d / 2, _d / 2)], [_g.Fresh("rope_x1"), _g.Fresh("rope_x2")], "", Attr("axis", -1L));
        var first = _g.Node("Sub", [_g.Node("Mul", [halves[0], cos]), _g.Node("Mul", [halves[1], sin])]);
        var second = _g.Node("Add", [_g.Node("Mul", [halves[1], cos]), _g.Node("Mul", [halves[0], sin])]);
        return _g.Node("Concat", [first, second], null, "", Attr("axis", -1L));
    }

    /// <summary>
    /// The script layer. Key = is-message-start x (position + 1), value = (position, is-message-start). Query head 0
    /// attends sharply to the latest message start (its position); query head 1 attends uniformly, so its mean of
    /// is-message-start times (position + 1) counts the message starts so far. Their difference to the current position
    /// indexes a table of one-hot logits: the script token, then the end-of-sequence token.
    /// </summary>
    private string ScriptLayer(int layer, GqaMask gqaMask, string? positions)
    {
        var plan = _script!;
        var markerTable = new float[_o.VocabSize];
        foreach (var id in plan.MessageStartIds)
        {
            markerTable[id] = 1f;
        }

        var isMarker = _g.Node("Gather", [_g.Float("script.message_start", markerTable, _o.VocabSize), "input_ids"]);
        string positionF;
        if (positions is null)
        {
            var total = _g.Node("Gather", [_g.Node("Shape", ["attention_mask"]), _g.Int64Scalar(1)]);
            var length = _g.Node("Gather", [_g.Node("Shape", ["input_ids"]), _g.Int64Scalar(1)]);
            var range = _g.Node("Range", [_g.Node("Sub", [total, length]), total, _g.Int64Scalar(1)]);
            positionF = _g.Node("Cast", [_g.Node("Unsqueeze", [range, _g.Int64s(0)])], null, "", Attr("to", (long)DataType.Float));
        }
        else
        {
            positionF = _g.Node("Cast", [positions], null, "", Attr("to", (long)DataType.Float));
        }

        // Broadcast the position to [batch, sequence].
        var position = _g.Node("Add", [_g.Node("Mul", [isMarker, _g.FloatScalar(0f)]), positionF]);
        var positionPlusOne = _g.Node("Add", [position, _g.FloatScalar(1f)]);

        var keySelect = new float[_kvWidth];
        var valueSelect = new float[2 * _kvWidth];
        for (var kv = 0; kv < _o.NumKvHeads; kv++)
        {
            keySelect[kv * _d] = 1f;
            valueSelect[kv * _d] = 1f;
            valueSelect[_kvWidth + (kv * _d) + 1] = 1f;
        }

        var keyFeature = _g.Node("Unsqueeze", [_g.Node("Mul", [isMarker, positionPlusOne]), _g.Int64s(-1)]);
        var k = _g.Node("MatMul", [keyFeature, _g.Float("script.key_select", keySelect, 1, _kvWidth)]);
        var valueFeatures = _g.Node("Concat",
            [_g.Node("Unsqueeze", [position, _g.Int64s(-1)]), _g.Node("Unsqueeze", [isMarker, _g.Int64s(-1)])], null, "", Attr("axis", -1L));
        var v = _g.Node("MatMul", [valueFeatures, _g.Float("script.value_select", valueSelect, 2, _kvWidth)]);
        var queryConst = new float[_o.NumHeads * _d];
        queryConst[0] = MarkerSharpness;
        var qShape = _g.Node("Concat", [_g.Node("Shape", ["input_ids"]), _g.Int64s((long)_o.NumHeads * _d)], null, "", Attr("axis", 0L));
        var q = _g.Node("Expand", [_g.Float("script.query", queryConst, _o.NumHeads * _d), qShape]);

        string attention;
        if (Gqa)
        {
            attention = _g.Nodes("GroupQueryAttention",
                [q, k, v, $"past_key_values.{layer}.key", $"past_key_values.{layer}.value", gqaMask.SeqLensK, gqaMask.TotalSequenceLength],
                [_g.Fresh("script_attn"), $"present.{layer}.key", $"present.{layer}.value"],
                "com.microsoft",
                Attr("num_heads", (long)_o.NumHeads), Attr("kv_num_heads", (long)_o.NumKvHeads), Attr("scale", 1f))[0];
        }
        else
        {
            attention = PlainAttention(layer, Heads(q, _o.NumHeads), Heads(k, _o.NumKvHeads), Heads(v, _o.NumKvHeads), positions!, 1f);
        }

        var lastStart = _g.Node("Gather", [attention, _g.Int64Scalar(0)], null, "", Attr("axis", 2L));
        var startFraction = _g.Node("Gather", [attention, _g.Int64Scalar(_d + 1)], null, "", Attr("axis", 2L));
        var messagesBefore = _g.Node("Sub", [_g.Node("Round", [_g.Node("Mul", [startFraction, positionPlusOne])]), _g.FloatScalar(1f)]);
        var offset = _g.Node("Sub", [_g.Node("Round", [_g.Node("Sub", [position, lastStart])]), _g.FloatScalar(plan.GenerationPromptOffset)]);

        var row = _g.Node("Clip", [messagesBefore, _g.FloatScalar(0f), _g.FloatScalar(plan.Rows - 1)]);
        var column = _g.Node("Clip", [offset, _g.FloatScalar(-1f), _g.FloatScalar(plan.MaxLength)]);
        var flat = _g.Node("Add", [_g.Node("Mul", [row, _g.FloatScalar(plan.Columns)]), _g.Node("Add", [column, _g.FloatScalar(1f)])]);
        var index = _g.Node("Cast", [flat], null, "", Attr("to", (long)DataType.Int64));
        if (plan.Sparse)
        {
            // A real vocabulary is too large for a dense table: the table holds ids, expanded to one-hot logits.
            var ids = _g.Node("Gather", [_g.Int64s(plan.BuildIdTable(_o.VocabSize)), index]);
            return _g.Node("OneHot", [ids, _g.Int64s(_o.VocabSize), _g.Float(_g.Fresh("script.on_off"), [0f, ScriptLogit], 2)], null, "", Attr("axis", -1L));
        }

        return _g.Node("Gather", [_g.Float("script.logits", plan.BuildTable(_o.VocabSize, ScriptLogit), plan.Rows * plan.Columns, _o.VocabSize), index]);
    }

    private (string Cos, string Sin) RotaryCaches()
    {
        var half = _d / 2;
        var cos = new float[(long)_o.ContextLength * half];
        var sin = new float[cos.Length];
        for (var pos = 0; pos < _o.ContextLength; pos++)
        {
            for (var i = 0; i < half; i++)
            {
                var angle = pos * Math.Pow(RopeTheta, -2.0 * i / _d);
                cos[(pos * half) + i] = (float)Math.Cos(angle);
                sin[(pos * half) + i] = (float)Math.Sin(angle);
            }
        }

        return (_g.Float("cos_cache", cos, _o.ContextLength, half), _g.Float("sin_cache", sin, _o.ContextLength, half));
    }

    /// <summary>x times a linear layer's weight: a float <c>MatMul</c>, or <c>MatMulNBits</c> at int4 precision.</summary>
    private string Project(string x, string name, int fanIn, int fanOut)
        => _o.Precision == WeightPrecision.Int4
            ? MatMulNBits(x, name, _weights.LinearInt4(name, fanIn, fanOut))
            : _g.Node("MatMul", [x, _g.FloatBytes(name, _weights.LinearBytes(name, fanIn, fanOut), fanIn, fanOut)]);

    /// <summary>
    /// <c>com.microsoft:MatMulNBits</c> as GenAI's model builder writes it for CPU int4: bits 4, block 32, no zero points
    /// (symmetric around 8), <c>accuracy_level</c> 4 (int8 activations on CPU) unless the options ask for another.
    /// </summary>
    private string MatMulNBits(string x, string name, Int4Blocks blocks)
    {
        var weight = _g.Bytes(name + "_Q4", DataType.Uint8, blocks.ToMatMulNBits(), blocks.Rows, blocks.BlocksPerRow, Int4Blocks.BlockSize / 2);
        var scales = _g.Float(name + "_scales", blocks.Scales, blocks.Rows, blocks.BlocksPerRow);
        _notParameters.Add(scales);
        return _g.Node("MatMulNBits", [x, weight, scales], null, "com.microsoft",
            Attr("K", (long)blocks.Columns), Attr("N", (long)blocks.Rows), Attr("bits", 4L),
            Attr("block_size", (long)Int4Blocks.BlockSize), Attr("accuracy_level", (long)_o.Int4AccuracyLevel));
    }

    private string Ones(string name, int size) => _g.FloatBytes(name, WeightRandom.Constant(size, 1f), size);
}

/// <summary>What a scripted model says: token ids per message count, and where the reply starts after a message start.</summary>
internal sealed class ScriptPlan
{
    private readonly int[]?[] _byRow;
    private readonly int _eos;

    private ScriptPlan(int[] messageStartIds, int generationPromptOffset, int eos, int[]?[] byRow)
    {
        MessageStartIds = messageStartIds;
        GenerationPromptOffset = generationPromptOffset;
        _eos = eos;
        Rows = byRow.Length;
        _byRow = byRow;
        MaxLength = byRow.Max(ids => ids?.Length ?? 0);
        Columns = MaxLength + 2;
        Sparse = true;
    }

    /// <summary>Gets whether the graph holds the script as ids expanded by <c>OneHot</c> (real vocabularies), not as dense logits.</summary>
    public bool Sparse { get; }

    /// <summary>Row r, column c + 1: the id said for reply token c when r messages precede; the vocabulary size (no logits) elsewhere.</summary>
    public long[] BuildIdTable(int vocabSize)
    {
        var table = new long[Rows * Columns];
        Array.Fill(table, vocabSize);
        for (var row = 0; row < Rows; row++)
        {
            if (_byRow[row] is not { } ids)
            {
                continue;
            }

            for (var column = 0; column <= MaxLength; column++)
            {
                table[(row * Columns) + column + 1] = column < ids.Length ? ids[column] : _eos;
            }
        }

        return table;
    }

    public ScriptPlan(ModelKitOptions options, Vocabulary vocab)
    {
        var family = vocab.Family;
        MessageStartIds = [.. family.MessageStartTokens.Select(vocab.IdOf)];
        GenerationPromptOffset = family.GenerationPrompt.Sum(piece => vocab.EncodeWithoutMerges(piece).Length) - 1;
        _eos = vocab.IdOf(family.EosTokens[0]);

        var byCount = options.ScriptByMessageCount ?? new Dictionary<int, string>();
        if (byCount.Keys.Any(k => k < 0 || k > 4096))
        {
            throw new ArgumentOutOfRangeException(nameof(options), "ScriptByMessageCount keys must be message counts from 0 to 4096.");
        }

        var maxCount = byCount.Count == 0 ? 0 : byCount.Keys.Max();
        Rows = maxCount + 2;
        _byRow = new int[]?[Rows];
        var fallback = options.Script is null ? null : vocab.EncodeWithoutMerges(options.Script);
        for (var row = 0; row < Rows; row++)
        {
            _byRow[row] = byCount.TryGetValue(row, out var text) ? vocab.EncodeWithoutMerges(text) : fallback;
        }

        MaxLength = _byRow.Max(ids => ids?.Length ?? 0);
        Columns = MaxLength + 2;
    }

    public int[] MessageStartIds { get; }

    /// <summary>A plan for a model over a real tokenizer: the same reply ids after every generation prompt.</summary>
    public static ScriptPlan ForTokens(TokenScript script, IReadOnlyList<(int Id, string Content, bool Special)> addedTokens, int eos, int vocabSize)
    {
        var start = addedTokens.Where(t => t.Content == script.MessageStart).Select(t => t.Id).DefaultIfEmpty(-1).First();
        if (start < 0)
        {
            throw new ArgumentException($"The tokenizer has no added token '{script.MessageStart}' to start messages with.", nameof(script));
        }

        var byCount = script.ByMessageCount ?? new Dictionary<int, IReadOnlyList<int>>();
        if (byCount.Keys.Any(k => k < 0 || k > 4096))
        {
            throw new ArgumentOutOfRangeException(nameof(script), "TokenScript.ByMessageCount keys must be message counts from 0 to 4096.");
        }

        if (script.Reply.Concat(byCount.Values.SelectMany(v => v)).Any(id => (uint)id >= (uint)vocabSize))
        {
            throw new ArgumentException($"TokenScript holds an id outside the vocabulary (0..{vocabSize - 1}).", nameof(script));
        }

        var rows = new int[]?[(byCount.Count == 0 ? 0 : byCount.Keys.Max()) + 2];
        for (var row = 0; row < rows.Length; row++)
        {
            rows[row] = byCount.TryGetValue(row, out var ids) ? [.. ids] : [.. script.Reply];
        }

        return new ScriptPlan([start], script.GenerationPromptLength - 1, eos, rows);
    }

    /// <summary>Tokens from the generation prompt's message start to its last token.</summary>
    public int GenerationPromptOffset { get; }

    public int Rows { get; }

    public int MaxLength { get; }

    public int Columns { get; }

    public IReadOnlyList<int> TokensFor(int messagesBefore) => _byRow[Math.Clamp(messagesBefore, 0, Rows - 1)] ?? [];

    /// <summary>Row r, column c + 1: logits for reply token c when r messages precede (column 0: no script).</summary>
    public float[] BuildTable(int vocabSize, float logit)
    {
        var table = new float[(long)Rows * Columns * vocabSize];
        for (var row = 0; row < Rows; row++)
        {
            var ids = _byRow[row];
            if (ids is null)
            {
                continue;
            }

            for (var column = 0; column <= MaxLength; column++)
            {
                var token = column < ids.Length ? ids[column] : _eos;
                table[((((long)row * Columns) + column + 1) * vocabSize) + token] = logit;
            }
        }

        return table;
    }
}
