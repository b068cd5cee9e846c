using System.Text.Json;

namespace KvChat.ModelKit;

/// <summary>
/// A real model family's tokenizer folder (<c>tokenizer.json</c> + <c>tokenizer_config.json</c>, as Hugging Face
/// publishes them): the vocabulary size covering every id, the added tokens, bos/eos/pad, the chat template, the GenAI
/// model type that loads for the family, and which tokens are plain words (for the logit bias). The kit copies both
/// files unchanged into the model folder, so GenAI tokenizes and templates exactly as the family does.
/// </summary>
internal sealed class RealTokenizer
{
    /// <summary>Added tokens that end a sequence in the families the kit knows, after the configured <c>eos_token</c>.</summary>
    private static readonly string[] EndTokens = ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<|eom_id|>", "<end_of_turn>", "<eos>", "<|end|>"];

    private RealTokenizer(string tokenizerJson, string tokenizerConfigJson)
    {
        TokenizerJsonPath = tokenizerJson;
        TokenizerConfigPath = tokenizerConfigJson;
    }

    public string TokenizerJsonPath { get; }

    public string TokenizerConfigPath { get; }

    /// <summary>One more than the largest id of the vocabulary and the added tokens.</summary>
    public int VocabSize { get; private set; }

    public IReadOnlyList<(int Id, string Content, bool Special)> AddedTokens { get; private set; } = [];

    public int? BosId { get; private set; }

    /// <summary>End-of-sequence ids, the configured <c>eos_token</c> (the end-of-turn token replies end with) first.</summary>
    public IReadOnlyList<int> EosIds { get; private set; } = [];

    public int PadId { get; private set; }

    public string ChatTemplate { get; private set; } = string.Empty;

    /// <summary>The GenAI model type for the family (<c>qwen3</c>, <c>qwen2</c>, <c>llama</c>, <c>gemma3_text</c>, <c>phi3</c>).</summary>
    public string ModelType { get; private set; } = "llama";

    /// <summary>Ids of tokens that are a space marker followed by lowercase letters (<c>Ġword</c>, <c>▁word</c>).</summary>
    public IReadOnlyList<int> WordIds { get; private set; } = [];

    /// <summary>Reads a folder that holds <c>tokenizer.json</c> and <c>tokenizer_config.json</c>.</summary>
    /// <exception cref="ArgumentException">The folder or a file is missing, or a file lacks what the kit needs.</exception>
    public static RealTokenizer Read(string directory)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        var tokenizerJson = Path.Combine(directory, "tokenizer.json");
        var configJson = Path.Combine(directory, "tokenizer_config.json");
        foreach (var file in new[] { tokenizerJson, configJson })
        {
            if (!File.Exists(file))
            {
                throw new ArgumentException($"The tokenizer folder '{directory}' has no {Path.GetFileName(file)}.", nameof(directory));
            }
        }

        var result = new RealTokenizer(Path.GetFullPath(tokenizerJson), Path.GetFullPath(configJson));
        result.ReadTokenizer(tokenizerJson);
        result.ReadConfig(configJson);
        return result;
    }

    private void ReadTokenizer(string file)
    {
        using var stream = File.OpenRead(file);
        using var document = JsonDocument.Parse(stream);
        var root = document.RootElement;
        var maxId = -1;
        var words = new List<int>();
        if (root.TryGetProperty("model", out var model) && model.TryGetProperty("vocab", out var vocab))
        {
            // BPE and WordPiece list the vocabulary as an object (token -> id); Unigram as an array of [token, score].
            if (vocab.ValueKind == JsonValueKind.Object)
            {
                foreach (var entry in vocab.EnumerateObject())
                {
                    var id = entry.Value.GetInt32();
                    maxId = Math.Max(maxId, id);
                    if (IsWord(entry.Name))
                    {
                        words.Add(id);
                    }
                }
            }
            else if (vocab.ValueKind == JsonValueKind.Array)
            {
                var id = 0;
                foreach (var entry in vocab.EnumerateArray())
                {
                    if (IsWord(entry[0].GetString() ?? string.Empty))
                    {
                        words.Add(id);
                    }

                    maxId = Math.Max(maxId, id++);
                }
            }
        }

        var added = new List<(int, string, bool)>();
        if (root.TryGetProperty("added_tokens", out var tokens) && tokens.ValueKind == JsonValueKind.Array)
        {
            foreach (var token in tokens.EnumerateArray())
            {
                var id = token.GetProperty("id").GetInt32();
                var content = token.GetProperty("content").GetString() ?? string.Empty;
                added.Add((id, content, token.TryGetProperty("special", out var s) && s.ValueKind == JsonValueKind.True));
                maxId = Math.Max(maxId, id);
            }
        }

        if (maxId < 0)
        {
            throw new ArgumentException($"'{file}' lists no vocabulary.", nameof(file));
        }

        var addedIds = added.Select(a => a.Item1).ToHashSet();
        VocabSize = maxId + 1;
        AddedTokens = added;
        WordIds = [.. words.Where(id => !addedIds.Contains(id))];
    }

    /// <summary>A space marker (byte-level <c>Ġ</c> or SentencePiece <c>▁</c>) and two or more lowercase ASCII letters.</summary>
    private static bool IsWord(string token)
        => token.Length >= 3 && (token[0] == '\u0120' || token[0] == '\u2581') && !token.AsSpan(1).ContainsAnyExceptInRange('a', 'z');

    private void ReadConfig(string file)
    {
        using var stream = File.OpenRead(file);
        using var document = JsonDocument.Parse(stream);
        var root = document.RootElement;
        ChatTemplate = root.TryGetProperty("chat_template", out var template) && template.ValueKind == JsonValueKind.String
            ? template.GetString()!
            : throw new ArgumentException($"'{file}' has no chat_template string.", nameof(file));

        var byContent = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (id, content, _) in AddedTokens)
        {
            byContent.TryAdd(content, id);
        }

        int? IdOf(string name)
        {
            if (!root.TryGetProperty(name, out var value))
            {
                return null;
            }

            var text = value.ValueKind switch
            {
                JsonValueKind.String => value.GetString(),
                JsonValueKind.Object when value.TryGetProperty("content", out var c) => c.GetString(),
                _ => null,
            };
            return text is not null && byContent.TryGetValue(text, out var id) ? id : null;
        }

        var eos = IdOf("eos_token") ?? throw new ArgumentException($"'{file}' names no eos_token among the added tokens.", nameof(file));
        var eosIds = new List<int> { eos };
        foreach (var name in EndTokens)
        {
            if (byContent.TryGetValue(name, out var id) && !eosIds.Contains(id))
            {
                eosIds.Add(id);
            }
        }

        EosIds = eosIds;
        BosId = IdOf("bos_token");
        PadId = IdOf("pad_token") ?? eos;

        var tokenizerClass = root.TryGetProperty("tokenizer_class", out var c) ? c.GetString() ?? string.Empty : string.Empty;
        ModelType = tokenizerClass.StartsWith("Gemma", StringComparison.Ordinal) || byContent.ContainsKey("<start_of_turn>") ? "gemma3_text"
            : byContent.ContainsKey("<|im_start|>") ? (byContent.ContainsKey("<think>") ? "qwen3" : "qwen2")
            : byContent.ContainsKey("<|user|>") && byContent.ContainsKey("<|end|>") ? "phi3"
            : "llama";
    }

    /// <summary>The logit bias: plain words get <paramref name="wordBias"/>, the end-of-turn token <paramref name="endOfTurnBias"/>.</summary>
    public float[] LogitBias(float wordBias, float endOfTurnBias)
    {
        var bias = new float[VocabSize];
        foreach (var id in WordIds)
        {
            bias[id] = wordBias;
        }

        bias[EosIds[0]] = endOfTurnBias;
        return bias;
    }
}
