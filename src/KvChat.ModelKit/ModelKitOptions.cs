namespace KvChat.ModelKit;

/// <summary>The attention graph a generated model uses.</summary>
public enum ModelVariant
{
    /// <summary>
    /// <c>com.microsoft:GroupQueryAttention</c> with rotary embedding fused in and shared past/present buffers
    /// (<c>past_present_share_buffer: true</c>): the shape of the CPU models GenAI's model builder exports.
    /// </summary>
    GroupQueryAttention,

    /// <summary>Plain ONNX operators with <c>Concat</c> KV growth (<c>past_present_share_buffer: false</c>).</summary>
    Concat,
}

/// <summary>The special tokens, end-of-sequence ids and chat-template shape a generated model imitates.</summary>
public enum ChatTemplateFamily
{
    /// <summary>ChatML (<c>&lt;|im_start|&gt;role ... &lt;|im_end|&gt;</c>) with Qwen2.5/Hermes-style <c>&lt;tool_call&gt;{json}&lt;/tool_call&gt;</c>.</summary>
    ChatML,

    /// <summary>The Phi-4-mini shape (<c>&lt;|user|&gt; ... &lt;|end|&gt;&lt;|assistant|&gt;</c>) with <c>&lt;|tool_call|&gt;[json]&lt;|/tool_call|&gt;</c>.</summary>
    Phi,

    /// <summary>The Llama 3 shape (<c>&lt;|start_header_id|&gt;role&lt;|end_header_id|&gt;</c>, <c>&lt;|eot_id|&gt;</c>) with JSON tool calls and an <c>ipython</c> role.</summary>
    Llama3,
}

/// <summary>
/// What the model kit writes: dimensions, graph variant, template family and an optional script.
/// Use <see cref="Tiny"/> or <see cref="Bench"/> and change what you need with <c>with</c>.
/// </summary>
public sealed partial record ModelKitOptions
{
    /// <summary>The preset for tests: hidden 64, 2 layers, 4 heads, 2 KV heads, vocabulary 384, context 2048.</summary>
    public static ModelKitOptions Tiny { get; } = new();

    /// <summary>
    /// The preset for benchmarks: hidden 768, 12 layers, 12 heads, 4 KV heads, intermediate 3072,
    /// vocabulary 32000, context 4096 (about 128M parameters, fp32).
    /// </summary>
    public static ModelKitOptions Bench { get; } = new()
    {
        HiddenSize = 768,
        NumLayers = 12,
        NumHeads = 12,
        NumKvHeads = 4,
        IntermediateSize = 3072,
        VocabSize = 32000,
        ContextLength = 4096,
    };

    /// <summary>The bench preset with Qwen2.5's vocabulary of 151,936 tokens (fp32): sampling and logits at a real vocabulary.</summary>
    public static ModelKitOptions Bench152K { get; } = Bench with { VocabSize = 151_936 };

    /// <summary>The bench preset with Gemma 3's vocabulary of 262,144 tokens (fp32).</summary>
    public static ModelKitOptions Bench262K { get; } = Bench with { VocabSize = 262_144 };

    /// <summary>Gets the preset with the given name (one of <see cref="PresetNames"/>).</summary>
    /// <param name="name">The preset name, case-insensitive.</param>
    /// <returns>The preset.</returns>
    /// <exception cref="ArgumentException">The name is not a preset.</exception>
    public static ModelKitOptions FromPreset(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return name.ToUpperInvariant() switch
        {
            "TINY" => Tiny,
            "BENCH" => Bench,
            "BENCH-152K" => Bench152K,
            "BENCH-262K" => Bench262K,
            _ => RealShapePreset(name),
        };
    }

    /// <summary>Gets the hidden size. <value>The default value is 64.</value></summary>
    public int HiddenSize { get; init; } = 64;

    /// <summary>Gets the number of decoder layers. <value>The default value is 2.</value></summary>
    public int NumLayers { get; init; } = 2;

    /// <summary>Gets the number of query heads. <value>The default value is 4.</value></summary>
    public int NumHeads { get; init; } = 4;

    /// <summary>Gets the number of key/value heads (grouped-query attention). <value>The default value is 2.</value></summary>
    public int NumKvHeads { get; init; } = 2;

    /// <summary>Gets the gated MLP's intermediate size. <value>The default value is 128.</value></summary>
    public int IntermediateSize { get; init; } = 128;

    /// <summary>Gets the vocabulary size, special tokens included. <value>The default value is 384.</value></summary>
    public int VocabSize { get; init; } = 384;

    /// <summary>Gets the context length (<c>context_length</c> and the default <c>max_length</c>). <value>The default value is 2048.</value></summary>
    public int ContextLength { get; init; } = 2048;

    /// <summary>Gets the seed of the random weights: the same seed and options give byte-identical files. <value>The default value is 42.</value></summary>
    public ulong Seed { get; init; } = 42;

    /// <summary>Gets the attention graph variant. <value>The default value is <see cref="ModelVariant.GroupQueryAttention"/>.</value></summary>
    public ModelVariant Variant { get; init; } = ModelVariant.GroupQueryAttention;

    /// <summary>Gets the template family. <value>The default value is <see cref="ChatTemplateFamily.ChatML"/>.</value></summary>
    public ChatTemplateFamily TemplateFamily { get; init; } = ChatTemplateFamily.ChatML;

    /// <summary>
    /// Gets the logit bias added to printable ASCII tokens so that random weights say readable characters.
    /// <value>The default value is 4.</value>
    /// </summary>
    public float PrintableBias { get; init; } = 4f;

    /// <summary>
    /// Gets the logit bias of the end-of-turn token, so that random-weight replies sometimes end on their own.
    /// <value>The default value is 7.</value>
    /// </summary>
    public float EndOfTurnBias { get; init; } = 7f;

    /// <summary>
    /// Gets the text every reply says under greedy decoding, followed by the end-of-sequence token; <see langword="null"/>
    /// for a random-weight model. A scripted model's tokenizer has no merges (one token per byte, added tokens matched
    /// as the runtime matches them), so the kit knows the exact token ids it will say.
    /// </summary>
    public string? Script { get; init; }

    /// <summary>
    /// Gets replies keyed by the number of messages the prompt renders before the generation prompt (a system message
    /// counts); a reply for a count that is not listed falls back to <see cref="Script"/>. Lets one model drive a
    /// multi-step agent loop.
    /// </summary>
    public IReadOnlyDictionary<int, string>? ScriptByMessageCount { get; init; }

    /// <summary>
    /// Gets a folder holding a real model family's <c>tokenizer.json</c> and <c>tokenizer_config.json</c>, or
    /// <see langword="null"/> for the kit's own byte-level tokenizer of <see cref="TemplateFamily"/>. With a folder, both
    /// files are copied unchanged (the chat template with them), the vocabulary covers every id of the tokenizer (added
    /// tokens included, <see cref="VocabSize"/> is ignored), bos, eos and pad come from the files, the model type is the
    /// one GenAI loads for the family (unless <see cref="ModelType"/> says otherwise), and
    /// <see cref="PrintableBias"/> goes to plain word tokens (a space marker and lowercase letters), so that random
    /// replies read as words. A model over a real tokenizer cannot be scripted.
    /// <value>The default value is <see langword="null"/>.</value>
    /// </summary>
    public string? TokenizerFrom { get; init; }

    /// <summary>
    /// Gets the GenAI model type written to <c>genai_config.json</c> (GenAI 0.18 loads <c>qwen3</c>, <c>qwen2</c>,
    /// <c>llama</c>, <c>gemma3_text</c>, <c>phi3</c>, ...), or <see langword="null"/> for the family's own.
    /// <value>The default value is <see langword="null"/>.</value>
    /// </summary>
    public string? ModelType { get; init; }

    /// <summary>
    /// Gets, for a model over a real tokenizer (<see cref="TokenizerFrom"/>), the token ids every reply says under greedy
    /// decoding (then the end-of-sequence token), so that a reply of exactly those real tokens can be generated; or
    /// <see langword="null"/>. The kit has no encoder for a real tokenizer: the caller encodes the text.
    /// <value>The default value is <see langword="null"/>.</value>
    /// </summary>
    public TokenScript? TokenScript { get; init; }

    /// <summary>Gets the size of one attention head.</summary>
    public int HeadSize => HiddenSize / NumHeads;

    /// <summary>Gets whether the model says scripted text.</summary>
    public bool IsScripted => Script is not null || ScriptByMessageCount is { Count: > 0 } || TokenScript is not null;

    /// <summary>Checks that the dimensions fit together.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A dimension is out of range or they do not fit together.</exception>
    public void Validate()
    {
        ValidatePrecisionAndExport();
        ArgumentOutOfRangeException.ThrowIfLessThan(HiddenSize, 8, nameof(HiddenSize));
        ArgumentOutOfRangeException.ThrowIfLessThan(NumLayers, 1, nameof(NumLayers));
        ArgumentOutOfRangeException.ThrowIfLessThan(NumHeads, 2, nameof(NumHeads));
        ArgumentOutOfRangeException.ThrowIfLessThan(NumKvHeads, 1, nameof(NumKvHeads));
        ArgumentOutOfRangeException.ThrowIfLessThan(IntermediateSize, 1, nameof(IntermediateSize));
        ArgumentOutOfRangeException.ThrowIfLessThan(ContextLength, 16, nameof(ContextLength));
        ArgumentOutOfRangeException.ThrowIfLessThan(VocabSize, 300, nameof(VocabSize));
        if (HiddenSize % NumHeads != 0 || HeadSize % 2 != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(HiddenSize), HiddenSize, $"HiddenSize must be a multiple of NumHeads ({NumHeads}) with an even head size.");
        }

        if (Variant == ModelVariant.GroupQueryAttention && HeadSize % 8 != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(HiddenSize), HiddenSize, $"GroupQueryAttention needs a head size that is a multiple of 8; HiddenSize / NumHeads is {HeadSize}.");
        }

        if (TokenizerFrom is not null && (Script is not null || ScriptByMessageCount is { Count: > 0 }))
        {
            throw new ArgumentException("A model over a real tokenizer (TokenizerFrom) cannot be scripted by text: the kit encodes only its own tokenizer (give TokenScript ids).", nameof(TokenizerFrom));
        }

        if (TokenScript is not null && TokenizerFrom is null)
        {
            throw new ArgumentException("TokenScript scripts a model over a real tokenizer: set TokenizerFrom (or use Script).", nameof(TokenScript));
        }

        if (TokenScript is { } ts && (ts.Reply.Count == 0 || ts.GenerationPromptLength < 1 || string.IsNullOrEmpty(ts.MessageStart)))
        {
            throw new ArgumentException("TokenScript needs a message-start token, a generation prompt of at least one token and a non-empty reply.", nameof(TokenScript));
        }

        if (ModelType is { Length: 0 })
        {
            throw new ArgumentException("ModelType must be null or a GenAI model type such as 'qwen3' or 'llama'.", nameof(ModelType));
        }

        if (NumHeads % NumKvHeads != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(NumKvHeads), NumKvHeads, $"NumHeads ({NumHeads}) must be a multiple of NumKvHeads.");
        }
    }
}

/// <summary>What a scripted model over a real tokenizer says, and how it finds where a reply starts.</summary>
/// <param name="MessageStart">The added token that starts every message and the generation prompt (<c>&lt;|im_start|&gt;</c>).</param>
/// <param name="GenerationPromptLength">The tokens of the generation prompt, its message-start token included (3 for Qwen3's <c>&lt;|im_start|&gt;assistant\n</c>).</param>
/// <param name="Reply">The reply's token ids, end-of-sequence not included.</param>
public sealed record TokenScript(string MessageStart, int GenerationPromptLength, IReadOnlyList<int> Reply)
{
    /// <summary>
    /// Gets replies keyed by the number of message-start tokens before the generation prompt; other counts fall back
    /// to <see cref="Reply"/>. <value>The default value is <see langword="null"/>.</value>
    /// </summary>
    public IReadOnlyDictionary<int, IReadOnlyList<int>>? ByMessageCount { get; init; }

    /// <inheritdoc/>
    public override string ToString()
        => $"TokenScript({MessageStart}, {GenerationPromptLength}, [{string.Join(",", Reply)}]"
            + string.Concat((ByMessageCount ?? new Dictionary<int, IReadOnlyList<int>>()).OrderBy(p => p.Key).Select(p => $", {p.Key}: [{string.Join(",", p.Value)}]")) + ")";
}
