using System.Globalization;
using System.Text;
using System.Text.Json;
using BenchmarkDotNet.Attributes;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat.MicroBenchmarks;

/// <summary>
/// Render + encode per turn of a 4,000-token history on REAL tokenizers and templates (Qwen3, Llama 3.1, Gemma 3, from
/// npm, see tests/Shared/RealTokenizers.cs): a system prompt of about 500 tokens and 20 exchanges of prose, lists, code,
/// JSON and CJK. The baseline is the canonical prompt as GenAI computes it (messages JSON, <c>ApplyChatTemplate</c>,
/// <c>Encode</c> of the whole string); the setup checks that <see cref="PromptRenderer"/> gives the same ids.
/// </summary>
/// <remarks>
/// <c>next turn</c> is what a chat costs per request: the whole history re-sent with a new last user message (one new
/// segment to encode, the rest from the segment cache); <c>cold</c> is a new renderer, every segment encoded.
/// </remarks>
[MemoryDiagnoser]
public class RealTokenizerRenderBenchmarks
{
    private static readonly string[] Pieces =
    [
        "The quick brown fox jumps over the lazy dog.", "Shipping takes 3-5 business days;", "returns are accepted within 30 days.",
        "\n\n", "\n- first item\n- second item\n", "```csharp\nvar total = items.Sum(i => i.Price * i.Count);\n```\n",
        "{\"order\": 1234, \"status\": \"shipped\"}", "Please check your account settings.", "东京的天气很好。", "Merci beaucoup !",
        "Note: prices include VAT (20%).", "  Indented line.", "Use <b>bold</b> for emphasis.", "Why is the sky blue?",
    ];

    private readonly Lock _tokenizerLock = new();
    private Model _model = null!;
    private Tokenizer _baselineTokenizer = null!;
    private Tokenizer _tokenizer = null!;
    private ModelFolder _folder = null!;
    private PromptRenderer _warm = null!;
    private List<ChatMessage> _messages = null!;
    private string _lastUserMessage = null!;
    private long _turn;
    private bool _disposed;

    /// <summary>The tokenizer family.</summary>
    [Params("qwen3", "llama3_1", "gemma3")]
    public string Family { get; set; } = "qwen3";

    [GlobalSetup]
    public void Setup()
    {
        BenchModels.EnsureGenAiHandle();
        var family = RealTokenizers.All.Single(f => f.Name == Family);
        var path = BenchModels.PathOfRealTokenizer(family);
        _folder = ModelFolder.Read(path);
        _model = new Model(path);
        _baselineTokenizer = new Tokenizer(_model);
        _tokenizer = new Tokenizer(_model);
        var random = new Random(5);
        _messages = [new ChatMessage(ChatRole.System, MakeText(random, 500))];
        while (CountTokens(GenAiText()) < 3900)
        {
            _messages.Add(new ChatMessage(ChatRole.User, MakeText(random, 70)));
            _messages.Add(new ChatMessage(ChatRole.Assistant, MakeText(random, 100)));
        }

        _messages.Add(new ChatMessage(ChatRole.User, MakeText(random, 40)));
        _lastUserMessage = _messages[^1].Text;
        _warm = new PromptRenderer(_tokenizer, _tokenizerLock, _folder, templateOverride: null, replyMemoCapacity: 1024);
        var ours = _warm.Render(_messages, null, addGenerationPrompt: true).Tokens;
        var theirs = GenAiTemplateAndEncode();
        if (!ours.AsSpan().SequenceEqual(theirs))
        {
            throw new InvalidOperationException($"{Family}: PromptRenderer's ids differ from the canonical encoding.");
        }

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"// {Family}: {_messages.Count} messages, {ours.Length} tokens, equal to GenAI's template + Encode"));
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _tokenizer?.Dispose();
        _baselineTokenizer?.Dispose();
        _model?.Dispose();
    }

    [Benchmark(Baseline = true, Description = "GenAI: JSON + ApplyChatTemplate + Encode")]
    public int[] GenAiTemplateAndEncode()
    {
        using var sequences = _baselineTokenizer.Encode(GenAiText());
        return sequences[0].ToArray();
    }

    [Benchmark(Description = "PromptRenderer, next turn")]
    public int[] RenderNextTurn()
    {
        var messages = new List<ChatMessage>(_messages);
        messages[^1] = new ChatMessage(ChatRole.User, string.Create(CultureInfo.InvariantCulture, $"{++_turn} {_lastUserMessage}"));
        return _warm.Render(messages, null, addGenerationPrompt: true).Tokens;
    }

    [Benchmark(Description = "PromptRenderer, same history")]
    public int[] RenderWarm() => _warm.Render(_messages, null, addGenerationPrompt: true).Tokens;

    [Benchmark(Description = "PromptRenderer, cold (new renderer)")]
    public int[] RenderCold() =>
        new PromptRenderer(_tokenizer, _tokenizerLock, _folder, templateOverride: null, replyMemoCapacity: 1024)
            .Render(_messages, null, addGenerationPrompt: true).Tokens;

    private string GenAiText()
    {
        var json = JsonSerializer.Serialize(_messages.Select(m => new Dictionary<string, string> { ["role"] = m.Role.Value, ["content"] = m.Text }).ToList());
        return _baselineTokenizer.ApplyChatTemplate(null, json, null, true);
    }

    private string MakeText(Random random, int tokens)
    {
        var builder = new StringBuilder();
        while (CountTokens(builder.ToString()) < tokens)
        {
#pragma warning disable CA5394 // Benchmark text, not a secret.
            builder.Append(Pieces[random.Next(Pieces.Length)]).Append(' ');
#pragma warning restore CA5394
        }

        return builder.ToString().Trim();
    }

    private int CountTokens(string text)
    {
        using var sequences = _baselineTokenizer.Encode(text);
        return sequences[0].Length;
    }
}
