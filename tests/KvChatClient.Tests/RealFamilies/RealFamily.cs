using System.Collections.Concurrent;
using System.Text.Json;
using KvChat.Testing;
using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat.Tests.RealFamilies;

/// <summary>
/// A kit model over a real tokenizer folder, with a tokenizer and a renderer on it, and the canonical encoding to hold
/// the renderer to: GenAI's <c>Encode(ApplyChatTemplate(messages with the real text))</c>.
/// </summary>
internal sealed class RealFamily
{
    private static readonly ConcurrentDictionary<string, Lazy<RealFamily>> Loaded = new();
    private readonly Lock _lock = new();

    private RealFamily(RealTokenizerFamily family)
    {
        Family = family;
        Path = TestModels.PathOf(RealTokenizers.Tiny(family));
        Folder = ModelFolder.Read(Path);
        Model = new Model(Path);
        Tokenizer = new Tokenizer(Model);
        Renderer = NewRenderer();
    }

    public static IEnumerable<string> Names => RealTokenizers.All.Select(f => f.Name);

    public RealTokenizerFamily Family { get; }

    public string Path { get; }

    public ModelFolder Folder { get; }

    public Model Model { get; }

    public Tokenizer Tokenizer { get; }

    public PromptRenderer Renderer { get; }

    public static RealFamily Get(string name)
        => Loaded.GetOrAdd(name, n => new Lazy<RealFamily>(() => new RealFamily(RealTokenizers.All.Single(f => f.Name == n)))).Value;

    public PromptRenderer NewRenderer(string? template = null, int replyMemoCapacity = 0)
        => new(Tokenizer, _lock, Folder, template, replyMemoCapacity);

    /// <summary>GenAI's template over the JSON as given, then GenAI's encoding of the whole string.</summary>
    public int[] Canonical(string messagesJson, string? toolsJson = null, bool addGenerationPrompt = true)
    {
        lock (_lock)
        {
            var text = Tokenizer.ApplyChatTemplate(null, messagesJson, toolsJson, addGenerationPrompt);
            using var sequences = Tokenizer.Encode(text);
            return sequences[0].ToArray();
        }
    }

    public string Render(string messagesJson, string? toolsJson = null, bool addGenerationPrompt = true)
    {
        lock (_lock)
        {
            return Tokenizer.ApplyChatTemplate(null, messagesJson, toolsJson, addGenerationPrompt);
        }
    }

    public int[] Encode(string text)
    {
        lock (_lock)
        {
            using var sequences = Tokenizer.Encode(text);
            return sequences[0].ToArray();
        }
    }

    public string Decode(IEnumerable<int> ids)
    {
        lock (_lock)
        {
            return Tokenizer.Decode(ids.ToArray());
        }
    }

    /// <summary>The id of an added token.</summary>
    public int IdOf(string content) => Folder.AddedTokens.First(t => t.Content == content).Id;

    public static string Json(IEnumerable<(string Role, string Content)> messages)
        => JsonSerializer.Serialize(messages.Select(m => new Dictionary<string, string> { ["role"] = m.Role, ["content"] = m.Content }).ToList());
}
