using KvChat.ModelKit;
using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat.Testing;

/// <summary>
/// Kit models over Qwen3's real tokenizer and chat template (a reasoning family) that say a scripted reply in real
/// Qwen3 tokens. The kit has no encoder for a real tokenizer, so the reply's text is encoded here by GenAI's tokenizer
/// over a plain kit model of the same tokenizer, and the ids go to <see cref="TokenScript"/>.
/// </summary>
internal static class Qwen3Scripts
{
    /// <summary>The token that starts every message of Qwen3's template; the script counts them.</summary>
    public const string MessageStart = "<|im_start|>";

    /// <summary>What Qwen3's template writes as the generation prompt (with reasoning left to the model).</summary>
    public const string GenerationPrompt = MessageStart + "assistant\n";

    private static readonly Lazy<int> GenerationPromptTokens = new(() => Encode(GenerationPrompt)[0].Length);

    /// <summary>Gets the number of tokens of <see cref="GenerationPrompt"/>.</summary>
    public static int GenerationPromptLength => GenerationPromptTokens.Value;

    /// <summary>Kit options for a small random model over Qwen3's tokenizer and template.</summary>
    public static ModelKitOptions Plain(int contextLength = 2048) => RealTokenizers.Tiny(RealTokenizers.Qwen3, contextLength);

    /// <summary>Encodes each text with Qwen3's tokenizer (one model load for all of them).</summary>
    public static int[][] Encode(params string[] texts)
    {
        using var model = new Model(TestModels.PathOf(Plain()));
        using var tokenizer = new Tokenizer(model);
        return [.. texts.Select(text =>
        {
            using var sequences = tokenizer.Encode(text);
            return sequences[0].ToArray();
        })];
    }

    /// <summary>
    /// Kit options for a model over Qwen3's tokenizer that says <paramref name="reply"/> (real Qwen3 ids), or the reply
    /// <paramref name="byMessageCount"/> names for the number of messages before the generation prompt.
    /// </summary>
    public static ModelKitOptions Saying(
        IReadOnlyList<int> reply, IReadOnlyDictionary<int, IReadOnlyList<int>>? byMessageCount = null, int contextLength = 2048) =>
        Plain(contextLength) with
        {
            TokenScript = new TokenScript(MessageStart, GenerationPromptLength, reply) { ByMessageCount = byMessageCount },
        };
}
