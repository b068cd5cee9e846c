using System.Diagnostics;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using Google.Protobuf;

namespace KvChat.ModelKit;

/// <summary>What <see cref="ModelKit.Write"/> wrote.</summary>
public sealed record ModelKitResult
{
    /// <summary>Gets the model folder.</summary>
    public required string Directory { get; init; }

    /// <summary>Gets the number of weights in the graph's initializers.</summary>
    public required long ParameterCount { get; init; }

    /// <summary>Gets the size of <c>model.onnx</c> in bytes.</summary>
    public required long ModelBytes { get; init; }

    /// <summary>Gets how long writing took.</summary>
    public required TimeSpan Elapsed { get; init; }

    /// <summary>Gets the end-of-sequence token ids, the end-of-turn token first.</summary>
    public required IReadOnlyList<int> EosTokenIds { get; init; }

    /// <summary>Gets the added tokens (special and not) by text.</summary>
    public required IReadOnlyDictionary<string, int> AddedTokenIds { get; init; }

    /// <summary>Gets the texts of the added tokens the runtime treats as control tokens.</summary>
    public required IReadOnlyList<string> SpecialTokens { get; init; }

    /// <summary>Gets the model's chat template (also in <c>tokenizer_config.json</c>).</summary>
    public required string ChatTemplate { get; init; }

    /// <summary>
    /// Gets, for a scripted model, the token ids the model says (end-of-sequence not included) when the prompt renders
    /// the given number of messages before the generation prompt; empty for a random-weight model.
    /// </summary>
    public required Func<int, IReadOnlyList<int>> ScriptTokens { get; init; }
}

/// <summary>Writes complete GenAI model folders: <c>model.onnx</c>, <c>genai_config.json</c>, <c>tokenizer.json</c>, <c>tokenizer_config.json</c>.</summary>
public static partial class ModelKit
{
    /// <summary>The files a model folder holds.</summary>
    public static IReadOnlyList<string> FileNames { get; } = ["model.onnx", "genai_config.json", "tokenizer.json", "tokenizer_config.json"];

    /// <summary>Writes a model folder; existing files of the same names are replaced.</summary>
    /// <param name="options">What to write.</param>
    /// <param name="directory">The folder, created if missing.</param>
    /// <returns>What was written.</returns>
    public static ModelKitResult Write(ModelKitOptions options, string directory)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        options.Validate();
        return options.TokenizerFrom is null ? WriteSynthetic(options, directory) : WriteOverRealTokenizer(options, directory);
    }

    private static ModelKitResult WriteSynthetic(ModelKitOptions options, string directory)
    {
        var stopwatch = Stopwatch.StartNew();
        System.IO.Directory.CreateDirectory(directory);

        var family = TemplateFamilySpec.For(options.TemplateFamily);
        var vocab = Vocabulary.Build(options.VocabSize, family, withMerges: !options.IsScripted);
        var script = options.IsScripted ? new ScriptPlan(options, vocab) : null;

        var modelPath = Path.Combine(directory, "model.onnx");
        var model = DecoderGraph.Build(options, vocab.LogitBias(options.PrintableBias, options.EndOfTurnBias), script, out var parameters);
        WriteAtomically(modelPath, stream => model.WriteTo(stream));
        model = null;

        var eos = family.EosTokens.Select(vocab.IdOf).ToArray();
        var bos = family.BosToken is null ? eos[0] : vocab.IdOf(family.BosToken);
        var header = new ConfigHeader(options.ModelType ?? family.ModelType, bos, eos, vocab.IdOf(family.PadToken), options.VocabSize);
        WriteAtomically(Path.Combine(directory, "genai_config.json"), s => WriteGenAiConfig(s, options, header));
        WriteAtomically(Path.Combine(directory, "tokenizer.json"), s => WriteTokenizer(s, vocab));
        WriteAtomically(Path.Combine(directory, "tokenizer_config.json"), s => WriteTokenizerConfig(s, options, vocab));
        if (options.WriteGguf)
        {
            GgufExport.Write(options, vocab, eos, Path.Combine(directory, GgufFileName));
        }

        return new ModelKitResult
        {
            Directory = Path.GetFullPath(directory),
            ParameterCount = parameters,
            ModelBytes = new FileInfo(modelPath).Length,
            Elapsed = stopwatch.Elapsed,
            EosTokenIds = eos,
            AddedTokenIds = family.AddedTokens.ToDictionary(t => t.Content, t => vocab.IdOf(t.Content)),
            SpecialTokens = [.. family.AddedTokens.Where(t => t.Special).Select(t => t.Content)],
            ChatTemplate = family.ChatTemplate,
            ScriptTokens = count => script?.TokensFor(count) ?? [],
        };
    }

    /// <summary>
    /// A random-weight model over a real tokenizer folder: the vocabulary covers every id (added tokens included), the
    /// output leans towards plain word tokens, and <c>tokenizer.json</c> and <c>tokenizer_config.json</c> (with the
    /// family's chat template) are copied byte for byte.
    /// </summary>
    private static ModelKitResult WriteOverRealTokenizer(ModelKitOptions requested, string directory)
    {
        var stopwatch = Stopwatch.StartNew();
        var tokenizer = RealTokenizer.Read(requested.TokenizerFrom!);
        var options = requested with { VocabSize = tokenizer.VocabSize };
        System.IO.Directory.CreateDirectory(directory);

        var modelPath = Path.Combine(directory, "model.onnx");
        var model = DecoderGraph.Build(options, tokenizer.LogitBias(options.PrintableBias, options.EndOfTurnBias), script: null, out var parameters);
        WriteAtomically(modelPath, stream => model.WriteTo(stream));
        model = null;

        var eos = tokenizer.EosIds.ToArray();
        var header = new ConfigHeader(options.ModelType ?? tokenizer.ModelType, tokenizer.BosId ?? eos[0], eos, tokenizer.PadId, tokenizer.VocabSize);
        WriteAtomically(Path.Combine(directory, "genai_config.json"), s => WriteGenAiConfig(s, options, header));
        WriteAtomically(Path.Combine(directory, "tokenizer.json"), s => { using var source = File.OpenRead(tokenizer.TokenizerJsonPath); source.CopyTo(s); });
        WriteAtomically(Path.Combine(directory, "tokenizer_config.json"), s => { using var source = File.OpenRead(tokenizer.TokenizerConfigPath); source.CopyTo(s); });

        var addedIds = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (id, content, _) in tokenizer.AddedTokens)
        {
            addedIds.TryAdd(content, id);
        }

        return new ModelKitResult
        {
            Directory = Path.GetFullPath(directory),
            ParameterCount = parameters,
            ModelBytes = new FileInfo(modelPath).Length,
            Elapsed = stopwatch.Elapsed,
            EosTokenIds = eos,
            AddedTokenIds = addedIds,
            SpecialTokens = [.. tokenizer.AddedTokens.Where(t => t.Special).Select(t => t.Content)],
            ChatTemplate = tokenizer.ChatTemplate,
            ScriptTokens = _ => [],
        };
    }

    /// <summary>The model identity part of <c>genai_config.json</c>.</summary>
    private readonly record struct ConfigHeader(string ModelType, int Bos, int[] Eos, int Pad, int VocabSize);

    private static void WriteAtomically(string path, Action<Stream> write)
    {
        var temp = path + ".tmp";
        using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
        {
            write(stream);
        }

        File.Move(temp, path, overwrite: true);
    }

    private static Utf8JsonWriter Json(Stream stream) => new(stream, new JsonWriterOptions
    {
        Indented = true,
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    });

    private static void WriteGenAiConfig(Stream stream, ModelKitOptions o, ConfigHeader header)
    {
        using var w = Json(stream);
        var shareBuffer = o.Variant == ModelVariant.GroupQueryAttention;
        w.WriteStartObject();
        w.WriteStartObject("model");
        w.WriteString("type", header.ModelType);
        w.WriteNumber("bos_token_id", header.Bos);
        w.WriteStartArray("eos_token_id");
        foreach (var id in header.Eos)
        {
            w.WriteNumberValue(id);
        }

        w.WriteEndArray();
        w.WriteNumber("pad_token_id", header.Pad);
        w.WriteNumber("vocab_size", header.VocabSize);
        w.WriteNumber("context_length", o.ContextLength);
        w.WriteStartObject("decoder");
        w.WriteStartObject("session_options");
        w.WriteString("log_id", "onnxruntime-genai");
        w.WriteStartArray("provider_options");
        w.WriteEndArray();
        w.WriteEndObject();
        w.WriteString("filename", "model.onnx");
        w.WriteNumber("head_size", o.HeadSize);
        w.WriteNumber("hidden_size", o.HiddenSize);
        w.WriteNumber("num_attention_heads", o.NumHeads);
        w.WriteNumber("num_key_value_heads", o.NumKvHeads);
        w.WriteNumber("num_hidden_layers", DecoderGraph.LayerCount(o));
        w.WriteStartObject("inputs");
        w.WriteString("input_ids", "input_ids");
        w.WriteString("attention_mask", "attention_mask");
        if (!shareBuffer)
        {
            w.WriteString("position_ids", "position_ids");
        }

        w.WriteString("past_key_names", "past_key_values.%d.key");
        w.WriteString("past_value_names", "past_key_values.%d.value");
        w.WriteEndObject();
        w.WriteStartObject("outputs");
        w.WriteString("logits", "logits");
        w.WriteString("present_key_names", "present.%d.key");
        w.WriteString("present_value_names", "present.%d.value");
        w.WriteEndObject();
        w.WriteEndObject();
        w.WriteEndObject();
        w.WriteStartObject("search");
        w.WriteBoolean("do_sample", false);
        w.WriteNumber("max_length", o.ContextLength);
        w.WriteBoolean("past_present_share_buffer", shareBuffer);
        w.WriteNumber("num_beams", 1);
        w.WriteNumber("num_return_sequences", 1);
        w.WriteNumber("top_k", 1);
        w.WriteNumber("top_p", 1.0);
        w.WriteNumber("temperature", 1.0);
        w.WriteNumber("repetition_penalty", 1.0);
        w.WriteNumber("min_length", 0);
        w.WriteEndObject();
        w.WriteEndObject();
    }

    private static void WriteTokenizer(Stream stream, Vocabulary vocab)
    {
        using var w = Json(stream);
        w.WriteStartObject();
        w.WriteString("version", "1.0");
        w.WriteNull("truncation");
        w.WriteNull("padding");
        w.WriteStartArray("added_tokens");
        foreach (var token in vocab.Family.AddedTokens)
        {
            w.WriteStartObject();
            w.WriteNumber("id", vocab.IdOf(token.Content));
            w.WriteString("content", token.Content);
            w.WriteBoolean("single_word", false);
            w.WriteBoolean("lstrip", false);
            w.WriteBoolean("rstrip", false);
            w.WriteBoolean("normalized", false);
            w.WriteBoolean("special", token.Special);
            w.WriteEndObject();
        }

        w.WriteEndArray();
        w.WriteNull("normalizer");
        WriteByteLevel(w, "pre_tokenizer", addPrefixSpace: false);
        WriteByteLevel(w, "post_processor", addPrefixSpace: false);
        WriteByteLevel(w, "decoder", addPrefixSpace: false);
        w.WriteStartObject("model");
        w.WriteString("type", "BPE");
        w.WriteNull("dropout");
        w.WriteNull("unk_token");
        w.WriteString("continuing_subword_prefix", string.Empty);
        w.WriteString("end_of_word_suffix", string.Empty);
        w.WriteBoolean("fuse_unk", false);
        w.WriteBoolean("byte_fallback", false);
        w.WriteStartObject("vocab");
        for (var id = 0; id < vocab.FirstAddedId; id++)
        {
            w.WriteNumber(vocab.Tokens[id], id);
        }

        w.WriteEndObject();
        w.WriteStartArray("merges");
        foreach (var (left, right) in vocab.Merges)
        {
            w.WriteStringValue(left + " " + right);
        }

        w.WriteEndArray();
        w.WriteEndObject();
        w.WriteEndObject();
    }

    private static void WriteByteLevel(Utf8JsonWriter w, string name, bool addPrefixSpace)
    {
        w.WriteStartObject(name);
        w.WriteString("type", "ByteLevel");
        w.WriteBoolean("add_prefix_space", addPrefixSpace);
        w.WriteBoolean("trim_offsets", false);
        w.WriteBoolean("use_regex", true);
        w.WriteEndObject();
    }

    private static void WriteTokenizerConfig(Stream stream, ModelKitOptions o, Vocabulary vocab)
    {
        using var w = Json(stream);
        var family = vocab.Family;
        w.WriteStartObject();
        w.WriteBoolean("add_bos_token", false);
        w.WriteBoolean("add_eos_token", false);
        w.WriteBoolean("add_prefix_space", false);
        w.WriteStartObject("added_tokens_decoder");
        foreach (var token in family.AddedTokens)
        {
            w.WriteStartObject(vocab.IdOf(token.Content).ToString(System.Globalization.CultureInfo.InvariantCulture));
            w.WriteString("content", token.Content);
            w.WriteBoolean("lstrip", false);
            w.WriteBoolean("normalized", false);
            w.WriteBoolean("rstrip", false);
            w.WriteBoolean("single_word", false);
            w.WriteBoolean("special", token.Special);
            w.WriteEndObject();
        }

        w.WriteEndObject();
        if (family.BosToken is null)
        {
            w.WriteNull("bos_token");
        }
        else
        {
            w.WriteString("bos_token", family.BosToken);
        }

        w.WriteString("eos_token", family.EosTokens[0]);
        w.WriteString("pad_token", family.PadToken);
        w.WriteNull("unk_token");
        w.WriteString("chat_template", family.ChatTemplate);
        w.WriteBoolean("clean_up_tokenization_spaces", false);
        w.WriteString("errors", "replace");
        w.WriteNumber("model_max_length", o.ContextLength);
        w.WriteString("tokenizer_class", "GPT2Tokenizer");
        w.WriteEndObject();
    }

    internal static string ToJsonString(Action<Utf8JsonWriter> write)
    {
        using var buffer = new MemoryStream();
        using (var w = Json(buffer))
        {
            write(w);
        }

        return Encoding.UTF8.GetString(buffer.ToArray());
    }
}
