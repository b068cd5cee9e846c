using System.Text.Json;

namespace KvChat;

/// <summary>An added token of the model's tokenizer.</summary>
internal readonly record struct TokenizerAddedToken(int Id, string Content, bool Special);

/// <summary>
/// What the client reads from a GenAI model folder itself: shapes for KV sizing, search defaults, the added tokens
/// (to keep user text from forging them) and the chat template. Every problem names the file.
/// </summary>
internal sealed class ModelFolder
{
    private ModelFolder(string path) => Path = path;

    public string Path { get; }

    public int ContextLength { get; private set; }

    public int Layers { get; private set; }

    public int KvHeads { get; private set; }

    public int HeadSize { get; private set; }

    public bool SharedBuffer { get; private set; }

    public bool DoSample { get; private set; }

    public float Temperature { get; private set; } = 1f;

    public float TopP { get; private set; } = 1f;

    public int TopK { get; private set; }

    public int[] EosTokenIds { get; private set; } = [];

    public int VocabSize { get; private set; }

    public IReadOnlyList<TokenizerAddedToken> AddedTokens { get; private set; } = [];

    public string? ChatTemplate { get; private set; }

    /// <summary>The names and file of the decoder, from <c>model.decoder</c> (what an owned-KV session binds).</summary>
    public DecoderNames Decoder { get; private set; } = new();

    /// <summary>KV bytes per token of context: layers x (K and V) x KV heads x head size x 4 bytes (fp32).</summary>
    public long KvBytesPerToken => (long)Layers * 2 * KvHeads * HeadSize * sizeof(float);

    public static ModelFolder Read(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        var full = System.IO.Path.GetFullPath(path);
        if (!Directory.Exists(full))
        {
            throw new DirectoryNotFoundException($"The model folder '{full}' does not exist.");
        }

        var folder = new ModelFolder(full);
        folder.ReadGenAiConfig(Require(full, "genai_config.json"));
        folder.ReadTokenizer(Require(full, "tokenizer.json"));
        var tokenizerConfig = System.IO.Path.Combine(full, "tokenizer_config.json");
        if (File.Exists(tokenizerConfig))
        {
            folder.ReadTokenizerConfig(tokenizerConfig);
        }

        return folder;
    }

    private static string Require(string folder, string file)
    {
        var path = System.IO.Path.Combine(folder, file);
        return File.Exists(path) ? path : throw new FileNotFoundException($"The model folder '{folder}' has no {file}.", path);
    }

    private static JsonDocument Parse(string file)
    {
        try
        {
            using var stream = File.OpenRead(file);
            return JsonDocument.Parse(stream, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{file}' is not valid JSON: {e.Message}", e);
        }
    }

    private static InvalidDataException Missing(string file, string property)
        => new($"'{file}' has no valid '{property}'.");

    private void ReadGenAiConfig(string file)
    {
        using var document = Parse(file);
        var root = document.RootElement;
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
        {
            throw Missing(file, "model");
        }

        if (!model.TryGetProperty("decoder", out var decoder) || decoder.ValueKind != JsonValueKind.Object)
        {
            throw Missing(file, "model.decoder");
        }

        ContextLength = Int(model, "context_length", file, "model.context_length");
        VocabSize = Int(model, "vocab_size", file, "model.vocab_size");
        Layers = Int(decoder, "num_hidden_layers", file, "model.decoder.num_hidden_layers");
        HeadSize = Int(decoder, "head_size", file, "model.decoder.head_size");
        KvHeads = decoder.TryGetProperty("num_key_value_heads", out _)
            ? Int(decoder, "num_key_value_heads", file, "model.decoder.num_key_value_heads")
            : Int(decoder, "num_attention_heads", file, "model.decoder.num_attention_heads");
        Decoder = DecoderNames.Read(decoder);
        EosTokenIds = model.TryGetProperty("eos_token_id", out var eos)
            ? eos.ValueKind switch
            {
                JsonValueKind.Number => [eos.GetInt32()],
                JsonValueKind.Array => [.. eos.EnumerateArray().Select(e => e.GetInt32())],
                _ => throw Missing(file, "model.eos_token_id"),
            }
            : throw Missing(file, "model.eos_token_id");

        if (root.TryGetProperty("search", out var search) && search.ValueKind == JsonValueKind.Object)
        {
            SharedBuffer = search.TryGetProperty("past_present_share_buffer", out var share) && share.ValueKind == JsonValueKind.True;
            DoSample = search.TryGetProperty("do_sample", out var sample) && sample.ValueKind == JsonValueKind.True;
            if (search.TryGetProperty("temperature", out var temperature) && temperature.ValueKind == JsonValueKind.Number)
            {
                Temperature = temperature.GetSingle();
            }

            if (search.TryGetProperty("top_p", out var topP) && topP.ValueKind == JsonValueKind.Number)
            {
                TopP = topP.GetSingle();
            }

            if (search.TryGetProperty("top_k", out var topK) && topK.ValueKind == JsonValueKind.Number)
            {
                TopK = (int)topK.GetDouble();
            }
        }
    }

    private static int Int(JsonElement element, string name, string file, string path)
        => element.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.Number && value.TryGetInt32(out var result) && result > 0
            ? result
            : throw Missing(file, path);

    private void ReadTokenizer(string file)
    {
        using var document = Parse(file);
        var tokens = new List<TokenizerAddedToken>();
        if (document.RootElement.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
        {
            foreach (var token in added.EnumerateArray())
            {
                if (token.TryGetProperty("content", out var content) && content.GetString() is { Length: > 0 } text
                    && token.TryGetProperty("id", out var id) && id.TryGetInt32(out var number))
                {
                    var special = token.TryGetProperty("special", out var s) && s.ValueKind == JsonValueKind.True;
                    tokens.Add(new TokenizerAddedToken(number, text, special));
                }
            }
        }

        AddedTokens = tokens;
    }

    private void ReadTokenizerConfig(string file)
    {
        using var document = Parse(file);
        if (document.RootElement.TryGetProperty("chat_template", out var template))
        {
            ChatTemplate = template.ValueKind switch
            {
                JsonValueKind.String => template.GetString(),

                // Some models list named templates; the default one is the chat template.
                JsonValueKind.Array => template.EnumerateArray()
                    .Where(t => t.TryGetProperty("name", out var n) && n.GetString() == "default")
                    .Select(t => t.GetProperty("template").GetString())
                    .FirstOrDefault(),
                _ => null,
            };
        }
    }
}
