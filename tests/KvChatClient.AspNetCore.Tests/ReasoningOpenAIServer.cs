using KvChat.Testing;

namespace KvChat.AspNetCore.Tests;

/// <summary>
/// The endpoint over a reasoning model: a kit model over Qwen3's real tokenizer and template that says
/// <c>&lt;think&gt;</c> <see cref="Thought"/> <c>&lt;/think&gt;</c> <see cref="Answer"/> in real Qwen3 tokens, except
/// to a prompt of two messages (the tools block's system message and the question), which it answers with the same
/// reasoning and a call of <c>get_weather</c> for Paris.
/// </summary>
public sealed class ReasoningOpenAIServer() : OpenAIServer(() => ReasoningModel.Value)
{
    /// <summary>What the model reasons before it answers or calls.</summary>
    public const string Thought = "The user greets me, so I greet back.";

    /// <summary>What the model answers after its reasoning.</summary>
    public const string Answer = "Hello! How can I help?";

    private const string Call = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";

    private static readonly Lazy<KvChat.ModelKit.ModelKitOptions> ReasoningModel = new(() =>
    {
        var ids = Qwen3Scripts.Encode($"<think>\n{Thought}\n</think>\n\n{Answer}", $"<think>\n{Thought}\n</think>\n\n{Call}");
        return Qwen3Scripts.Saying(ids[0], new Dictionary<int, IReadOnlyList<int>> { [2] = ids[1] });
    });
}
