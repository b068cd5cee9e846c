using LLama;
using LLama.Abstractions;
using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat.Benchmarks;

/// <summary>
/// One short reply through each engine's clients before anything is timed, so the first measured way does not pay for
/// JIT compilation and first-use setup that the ways after it skip.
/// </summary>
internal static class Warmup
{
    public static async Task RunAsync(Model model, string modelPath, LlamaPeer? peer)
    {
        List<ChatMessage> messages = [new(ChatRole.User, "Hello there")];
        using (var genai = new OnnxRuntimeGenAIChatClient(model, ownsModel: false))
        {
            await genai.GetResponseAsync(messages, new ChatOptions { MaxOutputTokens = 2 }).ConfigureAwait(false);
        }

        using (var kv = new KvChatClient(model, modelPath, new KvChatClientOptions()))
        {
            await kv.GetResponseAsync(messages, new ChatOptions { MaxOutputTokens = 2 }).ConfigureAwait(false);
        }

        if (peer is null)
        {
            return;
        }

        await new StatelessExecutor(peer.Weights, peer.Parameters).AsChatClient().GetResponseAsync(messages, LlamaChatClientWay.Greedy(2)).ConfigureAwait(false);
        using var context = peer.NewContext();
        await new InteractiveExecutor(context).AsChatClient().GetResponseAsync(messages, LlamaChatClientWay.Greedy(2)).ConfigureAwait(false);
    }
}
