using System.Globalization;
using System.Text.Json;
using BenchmarkDotNet.Attributes;
using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat.MicroBenchmarks;

/// <summary>
/// The one setup of the render benchmarks: a model's tokenizer twice (one for the baseline, one for
/// <see cref="PromptRenderer"/>), a conversation the derived benchmark writes, a warm renderer, and the four ways to
/// render it. The baseline is what GenAI's own chat client does: the messages as JSON, <c>ApplyChatTemplate</c> and
/// <c>Encode</c> of the whole text (the canonical prompt); the setup checks that the renderer gives the same ids.
/// </summary>
/// <remarks>
/// <c>same history</c> renders a conversation whose segments are all cached (the history re-sent every turn),
/// <c>next turn</c> the same with a new last user message each time (one message encoded: what a chat costs per
/// request), <c>cold</c> builds a new renderer and encodes every segment.
/// </remarks>
public abstract class RenderBenchmarkBase
{
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

    /// <summary>
    /// Opens the model at <paramref name="path"/>, has <paramref name="conversation"/> write the messages (it may count
    /// tokens and render the baseline meanwhile), and checks and prints what the renderer gives.
    /// </summary>
    protected void Open(string name, string path, Func<List<ChatMessage>> conversation)
    {
        BenchModels.EnsureGenAiHandle();
        _folder = ModelFolder.Read(path);
        _model = new Model(path);
        _baselineTokenizer = new Tokenizer(_model);
        _tokenizer = new Tokenizer(_model);
        _messages = conversation();
        _lastUserMessage = _messages[^1].Text;
        _warm = new PromptRenderer(_tokenizer, _tokenizerLock, _folder, templateOverride: null, replyMemoCapacity: 1024);
        var ours = _warm.Render(_messages, null, addGenerationPrompt: true).Tokens;
        if (!ours.AsSpan().SequenceEqual(GenAiTemplateAndEncode()))
        {
            throw new InvalidOperationException($"{name}: PromptRenderer's ids differ from the canonical encoding.");
        }

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"// {name}: {_messages.Count} messages, {ours.Length} tokens (system prompt {CountTokens(_messages[0].Text)}), equal to GenAI's template + Encode"));
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
        using var sequences = _baselineTokenizer.Encode(GenAiText(_messages));
        return sequences[0].ToArray();
    }

    [Benchmark(Description = "PromptRenderer, same history")]
    public int[] RenderWarm() => _warm.Render(_messages, null, addGenerationPrompt: true).Tokens;

    [Benchmark(Description = "PromptRenderer, next turn")]
    public int[] RenderNextTurn()
    {
        var messages = new List<ChatMessage>(_messages);
        messages[^1] = new ChatMessage(ChatRole.User, string.Create(CultureInfo.InvariantCulture, $"{++_turn} {_lastUserMessage}"));
        return _warm.Render(messages, null, addGenerationPrompt: true).Tokens;
    }

    [Benchmark(Description = "PromptRenderer, cold (new renderer)")]
    public int[] RenderCold() =>
        new PromptRenderer(_tokenizer, _tokenizerLock, _folder, templateOverride: null, replyMemoCapacity: 1024)
            .Render(_messages, null, addGenerationPrompt: true).Tokens;

    /// <summary>The prompt text GenAI's template renders for <paramref name="messages"/>, with the generation prompt.</summary>
    protected string GenAiText(List<ChatMessage> messages)
    {
        var json = JsonSerializer.Serialize(messages.Select(m => new Dictionary<string, string> { ["role"] = m.Role.Value, ["content"] = m.Text }).ToList());
        return _baselineTokenizer.ApplyChatTemplate(null, json, null, true);
    }

    /// <summary>The number of tokens of <paramref name="text"/> on its own.</summary>
    protected int CountTokens(string text)
    {
        using var sequences = _baselineTokenizer.Encode(text);
        return sequences[0].Length;
    }
}
