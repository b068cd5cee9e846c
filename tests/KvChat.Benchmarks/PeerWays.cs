using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using LLama;
using LLama.Abstractions;
using LLama.Common;
using LLama.Native;
using LLama.Sampling;
using Microsoft.Extensions.AI;

namespace KvChat.Benchmarks;

/// <summary>
/// The .NET peer: llama.cpp through LLamaSharp on the kit's GGUF of the same network. One loaded model shared by every
/// LLamaSharp way; every context has an f32 KV cache (as GenAI's CPU cache) and the benchmark's thread count.
/// </summary>
internal sealed class LlamaPeer : IDisposable
{
    static LlamaPeer()
    {
        // llama.cpp logs every load and context creation; keep only its errors.
        NativeLibraryConfig.All.WithLogCallback((level, message) =>
        {
            if (level == LLamaLogLevel.Error)
            {
                Console.Error.Write(message);
            }
        });
    }

    public LlamaPeer(string ggufPath, int threads, uint contextSize)
    {
        Parameters = new ModelParams(ggufPath)
        {
            ContextSize = contextSize,
            GpuLayerCount = 0,
            Threads = threads,
            BatchThreads = threads,
            BatchSize = 512,
            UBatchSize = 512,
            TypeK = GGMLType.GGML_TYPE_F32,
            TypeV = GGMLType.GGML_TYPE_F32,
        };
        Weights = LLamaWeights.LoadFromFile(Parameters);
    }

    public ModelParams Parameters { get; }

    public LLamaWeights Weights { get; }

    public static string Version => typeof(LLamaWeights).Assembly.GetName().Version?.ToString(3) ?? "unknown";

    public LLamaContext NewContext() => Weights.CreateContext(Parameters);

    /// <summary>The history rendered with the model's chat template (llama.cpp's <c>llama_chat_apply_template</c>).</summary>
    public string Render(IEnumerable<(string Role, string Content)> messages, bool addAssistant)
    {
        var template = new LLamaTemplate(Weights, strict: false) { AddAssistant = addAssistant };
        foreach (var (role, content) in messages)
        {
            template.Add(role, content);
        }

        return Encoding.UTF8.GetString(template.Apply());
    }

    /// <summary>The history as the peer's ideal sees it: tool calls as the template family's text, tool results as tool messages.</summary>
    public string Render(IReadOnlyList<ChatMessage> history) => Render(history.Select(ToText), addAssistant: true);

    public static int[] Tokenize(LLamaContext context, string text)
        => [.. context.Tokenize(text, addBos: false, special: true).Select(t => (int)t)];

    public void Dispose() => Weights.Dispose();

    private static (string Role, string Content) ToText(ChatMessage message)
    {
        var calls = message.Contents.OfType<FunctionCallContent>().ToList();
        if (calls.Count > 0)
        {
            var text = new StringBuilder(message.Text);
            foreach (var call in calls)
            {
                var json = JsonSerializer.Serialize(new { name = call.Name, arguments = call.Arguments });
                text.Append("<tool_call>\n").Append(json).Append("\n</tool_call>");
            }

            return ("assistant", text.ToString());
        }

        var results = message.Contents.OfType<FunctionResultContent>().ToList();
        return results.Count > 0
            ? ("tool", string.Concat(results.Select(r => r.Result?.ToString())))
            : (message.Role.Value, message.Text);
    }
}

/// <summary>LLamaSharp's <c>AsChatClient()</c> over a StatelessExecutor or an InteractiveExecutor, the model's template applied.</summary>
internal sealed class LlamaChatClientWay(LlamaPeer peer, bool interactive) : IWay
{
    public string Name => interactive ? "llama-interactive" : "llama-stateless";

    public IConversation Start(string systemPrompt) => new Conversation(peer, interactive, systemPrompt);

    public void Dispose()
    {
    }

    /// <summary>Greedy, no penalties: the reply a fresh greedy prefill gives.</summary>
    public static ChatOptions Greedy(int maxOutputTokens) => new()
    {
        MaxOutputTokens = maxOutputTokens,
        Temperature = 0,
        TopK = 1,
        TopP = 1,
        Seed = 1,
        RawRepresentationFactory = _ => new InferenceParams
        {
            SamplingPipeline = new DefaultSamplingPipeline { RepeatPenalty = 1, FrequencyPenalty = 0, PresencePenalty = 0, PenalizeNewline = false },
        },
    };

    private sealed class Conversation : IConversation
    {
        private readonly LlamaPeer _peer;
        private readonly LLamaContext? _context;
        private readonly TemplateTransform _transform;
        private readonly IChatClient _client;

        public Conversation(LlamaPeer peer, bool interactive, string systemPrompt)
        {
            _peer = peer;
            _transform = new TemplateTransform(peer);
            ILLamaExecutor executor;
            if (interactive)
            {
                _context = peer.NewContext();
                executor = new InteractiveExecutor(_context);
            }
            else
            {
                executor = new StatelessExecutor(peer.Weights, peer.Parameters);
            }

            _client = executor.AsChatClient(_transform);
            History = [new(ChatRole.System, systemPrompt)];
        }

        public List<ChatMessage> History { get; }

        public void HistoryRewritten()
        {
        }

        public async Task<TurnResult> ReplyAsync(int maxOutputTokens)
        {
            var stopwatch = Stopwatch.StartNew();
            double first = -1;
            var updates = 0;
            var text = new StringBuilder();
            await foreach (var update in _client.GetStreamingResponseAsync(History, Greedy(maxOutputTokens)).ConfigureAwait(false))
            {
                var now = stopwatch.Elapsed.TotalMilliseconds;
                if (first < 0)
                {
                    first = now;
                }

                updates++;
                text.Append(update.Text);
            }

            var wall = stopwatch.Elapsed.TotalMilliseconds;
            using var context = _peer.NewContext();
            var prompt = LlamaPeer.Tokenize(context, _peer.Render(History));
            var sent = LlamaPeer.Tokenize(context, _transform.LastRendered ?? string.Empty).Length;
            History.Add(new ChatMessage(ChatRole.Assistant, text.ToString()));
            return new TurnResult(
                prompt.Length, sent, updates, first < 0 ? wall : first,
                updates > 1 && wall > first && first >= 0 ? (updates - 1) / ((wall - first) / 1000) : 0,
                wall, text.ToString(), prompt, null);
        }

        public void Dispose() => _context?.Dispose();
    }

    /// <summary>Renders what LLamaSharp's chat client passes with the model's template, and remembers the last prompt text.</summary>
    private sealed class TemplateTransform(LlamaPeer peer) : IHistoryTransform
    {
        public string? LastRendered { get; private set; }

        public string HistoryToText(ChatHistory history)
        {
            LastRendered = peer.Render(history.Messages.Select(m => (m.AuthorRole.ToString().ToLowerInvariant(), m.Content)), addAssistant: true);
            return LastRendered;
        }

        public ChatHistory TextToHistory(AuthorRole role, string text) => new([new ChatHistory.Message(role, text)]);

        public IHistoryTransform Clone() => new TemplateTransform(peer);
    }
}

/// <summary>
/// llama.cpp's ideal: one raw <c>LLamaContext</c> per conversation that keeps its KV cache, drops what no longer
/// matches the prompt and decodes only the new tokens, with greedy argmax over the raw logits.
/// </summary>
internal sealed class LlamaIdealWay(LlamaPeer peer) : IWay
{
    public string Name => "llama-ideal";

    public IConversation Start(string systemPrompt) => new Conversation(peer, systemPrompt);

    public void Dispose()
    {
    }

    private sealed class Conversation(LlamaPeer peer, string systemPrompt) : IConversation
    {
        private readonly LLamaContext _context = peer.NewContext();
        private readonly List<int> _cached = [];
        private readonly LLamaBatch _batch = new();

        public List<ChatMessage> History { get; } = [new(ChatRole.System, systemPrompt)];

        public void HistoryRewritten()
        {
        }

        public Task<TurnResult> ReplyAsync(int maxOutputTokens)
        {
            var prompt = LlamaPeer.Tokenize(_context, peer.Render(History));
            var stopwatch = Stopwatch.StartNew();
            var keep = Math.Min(prompt.AsSpan().CommonPrefixLength(CollectionsMarshal.AsSpan(_cached)), prompt.Length - 1);
            if (keep < _cached.Count)
            {
                _context.NativeHandle.MemorySequenceRemove(LLamaSeqId.Zero, keep, -1);
                _cached.RemoveRange(keep, _cached.Count - keep);
            }

            var logitsIndex = DecodeChunks(prompt.AsSpan(keep));
            var output = new List<int>();
            var text = new StringBuilder();
            var decoder = new StreamingTokenDecoder(_context);
            double first = 0;
            double last = 0;
            while (output.Count < maxOutputTokens)
            {
                var token = ArgMax(_context.NativeHandle.GetLogitsIth(logitsIndex));
                if (((LLamaToken)token).IsEndOfGeneration(peer.Weights.Vocab))
                {
                    break;
                }

                var now = stopwatch.Elapsed.TotalMilliseconds;
                if (output.Count == 0)
                {
                    first = now;
                }

                last = now;
                output.Add(token);
                decoder.Add(token);
                text.Append(decoder.Read());
                if (output.Count == maxOutputTokens)
                {
                    break; // The last token stays pending: the next turn's prompt feeds it.
                }

                logitsIndex = DecodeChunks([token]);
            }

            var wall = stopwatch.Elapsed.TotalMilliseconds;
            History.Add(new ChatMessage(ChatRole.Assistant, text.ToString()));
            return Task.FromResult(new TurnResult(
                prompt.Length, prompt.Length - keep, output.Count, first,
                output.Count > 1 && last > first ? (output.Count - 1) / ((last - first) / 1000) : 0,
                wall, text.ToString(), prompt, [.. output]));
        }

        public void Dispose() => _context.Dispose();

        /// <summary>Decodes tokens after the cached ones in batches; returns the batch index of the last token's logits.</summary>
        private int DecodeChunks(ReadOnlySpan<int> tokens)
        {
            var size = (int)_context.BatchSize;
            var index = 0;
            for (var start = 0; start < tokens.Length; start += size)
            {
                var chunk = tokens.Slice(start, Math.Min(size, tokens.Length - start));
                _batch.Clear();
                for (var i = 0; i < chunk.Length; i++)
                {
                    _batch.Add(chunk[i], _cached.Count + i, LLamaSeqId.Zero, start + i == tokens.Length - 1);
                }

                var result = _context.NativeHandle.Decode(_batch);
                if (result != DecodeResult.Ok)
                {
                    throw new InvalidOperationException($"llama_decode returned {result}.");
                }

                foreach (var token in chunk)
                {
                    _cached.Add(token);
                }

                index = chunk.Length - 1;
            }

            return index;
        }
    }

    internal static int ArgMax(ReadOnlySpan<float> values)
    {
        var best = 0;
        for (var i = 1; i < values.Length; i++)
        {
            if (values[i] > values[best])
            {
                best = i;
            }
        }

        return best;
    }
}

/// <summary>Checks the peer's replies against a fresh llama.cpp context that prefills the whole prompt and decodes greedily.</summary>
internal static class LlamaOracle
{
    public static int Check(LlamaPeer peer, IReadOnlyList<TurnResult> turns, int replyTokens)
    {
        var failures = 0;
        foreach (var turn in turns)
        {
            if (turn.Prompt is null)
            {
                continue;
            }

            using var context = peer.NewContext();
            var batch = new LLamaBatch();
            var size = (int)context.BatchSize;
            var logitsIndex = 0;
            for (var start = 0; start < turn.Prompt.Length; start += size)
            {
                batch.Clear();
                var end = Math.Min(turn.Prompt.Length, start + size);
                for (var i = start; i < end; i++)
                {
                    batch.Add(turn.Prompt[i], i, LLamaSeqId.Zero, i == turn.Prompt.Length - 1);
                }

                context.NativeHandle.Decode(batch);
                logitsIndex = end - start - 1;
            }

            var fresh = new List<int>();
            var decoder = new StreamingTokenDecoder(context);
            var text = new StringBuilder();
            var wanted = turn.Output?.Length ?? replyTokens;
            while (fresh.Count < wanted)
            {
                var token = LlamaIdealWay.ArgMax(context.NativeHandle.GetLogitsIth(logitsIndex));
                if (((LLamaToken)token).IsEndOfGeneration(peer.Weights.Vocab))
                {
                    break;
                }

                fresh.Add(token);
                decoder.Add(token);
                text.Append(decoder.Read());
                batch.Clear();
                batch.Add(token, turn.Prompt.Length + fresh.Count - 1, LLamaSeqId.Zero, true);
                context.NativeHandle.Decode(batch);
                logitsIndex = 0;
            }

            var equal = turn.Output is not null ? fresh.SequenceEqual(turn.Output) : text.ToString() == turn.Text;
            if (!equal)
            {
                failures++;
            }
        }

        return failures;
    }
}
