using System.Globalization;
using System.Text;
using System.Text.Json;
using BenchmarkDotNet.Attributes;
using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat.MicroBenchmarks;

/// <summary>
/// Rendering and tokenizing one turn's prompt: a system prompt of about 500 tokens and 10 user messages with the 9
/// replies between them (about 1,250 tokens), on the bench model's tokenizer (byte-level BPE, vocabulary 32000, ChatML
/// template). The baseline is what GenAI's own chat client does: the messages as JSON, <c>ApplyChatTemplate</c> and
/// <c>Encode</c> of the whole text.
/// </summary>
/// <remarks>
/// <see cref="PromptRenderer"/> renders the template over placeholders and encodes each message on its own, caching
/// segments: <c>warm</c> renders a conversation whose segments are all cached (the history re-sent every turn),
/// <c>next turn</c> the same with a new last user message each time (one message encoded), <c>cold</c> builds a new
/// renderer and encodes every segment.
/// </remarks>
[MemoryDiagnoser]
public class RenderBenchmarks
{
    private static readonly string[] Words =
    [
        "the", "assistant", "answers", "questions", "about", "orders", "shipping", "returns", "and", "billing", "with",
        "care", "never", "invent", "policy", "details", "customers", "may", "ask", "for", "refunds", "within", "thirty",
        "days", "of", "delivery", "items", "must", "be", "unused", "keep", "replies", "short", "polite", "clear", "when",
        "unsure", "say", "so", "escalate", "to", "a", "human", "agent", "account", "numbers", "are", "private",
    ];

    private readonly Lock _tokenizerLock = new();
    private Model _model = null!;
    private bool _disposed;
    private Tokenizer _baselineTokenizer = null!;
    private Tokenizer _tokenizer = null!;
    private ModelFolder _folder = null!;
    private PromptRenderer _warm = null!;
    private List<ChatMessage> _messages = null!;
    private string _lastUserMessage = null!;
    private long _turn;

    [GlobalSetup]
    public void Setup()
    {
        BenchModels.EnsureGenAiHandle();
        var path = BenchModels.PathOf(BenchModels.Bench);
        _folder = ModelFolder.Read(path);
        _model = new Model(path);
        _baselineTokenizer = new Tokenizer(_model);
        _tokenizer = new Tokenizer(_model);
        var random = new Random(11);
        _messages = [new ChatMessage(ChatRole.System, MakeText(random, 500))];
        for (var turn = 0; turn < 10; turn++)
        {
            if (turn > 0)
            {
                _messages.Add(new ChatMessage(ChatRole.Assistant, MakeText(random, 32)));
            }

            _messages.Add(new ChatMessage(ChatRole.User, MakeText(random, 40)));
        }

        _lastUserMessage = _messages[^1].Text;
        _warm = new PromptRenderer(_tokenizer, _tokenizerLock, _folder, templateOverride: null, replyMemoCapacity: 1024);
        var ours = _warm.Render(_messages, null, addGenerationPrompt: true).Tokens.Length;
        var theirs = GenAiTemplateAndEncode().Length;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"// {_messages.Count} messages: KvChatClient renders {ours} tokens, GenAI's template + Encode {theirs}; system prompt {CountTokens(_messages[0].Text)} tokens"));
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
        var json = JsonSerializer.Serialize(_messages.Select(m => new Dictionary<string, string> { ["role"] = m.Role.Value, ["content"] = m.Text }).ToList());
        var text = _baselineTokenizer.ApplyChatTemplate(null, json, null, true);
        using var sequences = _baselineTokenizer.Encode(text);
        return sequences[0].ToArray();
    }

    [Benchmark(Description = "PromptRenderer.Render, warm")]
    public int[] RenderWarm() => _warm.Render(_messages, null, addGenerationPrompt: true).Tokens;

    [Benchmark(Description = "PromptRenderer.Render, warm, new last message")]
    public int[] RenderNextTurn()
    {
        var messages = new List<ChatMessage>(_messages.Count);
        for (var i = 0; i < _messages.Count - 1; i++)
        {
            messages.Add(_messages[i]);
        }

        messages.Add(new ChatMessage(ChatRole.User, string.Create(CultureInfo.InvariantCulture, $"{++_turn} {_lastUserMessage}")));
        return _warm.Render(messages, null, addGenerationPrompt: true).Tokens;
    }

    [Benchmark(Description = "PromptRenderer.Render, cold (new renderer)")]
    public int[] RenderCold() =>
        new PromptRenderer(_tokenizer, _tokenizerLock, _folder, templateOverride: null, replyMemoCapacity: 1024)
            .Render(_messages, null, addGenerationPrompt: true).Tokens;

    private string MakeText(Random random, int tokens)
    {
        var builder = new StringBuilder();
        var step = Math.Max(1, tokens / 8);
        while (true)
        {
            for (var i = 0; i < step; i++)
            {
#pragma warning disable CA5394 // Benchmark text, not a secret.
                builder.Append(Words[random.Next(Words.Length)]).Append(i % 12 == 11 ? ". " : " ");
#pragma warning restore CA5394
            }

            if (CountTokens(builder.ToString()) >= tokens)
            {
                return builder.ToString().TrimEnd();
            }

            step = Math.Max(1, step / 2);
        }
    }

    private int CountTokens(string text)
    {
        using var sequences = _baselineTokenizer.Encode(text);
        return sequences[0].Length;
    }
}
