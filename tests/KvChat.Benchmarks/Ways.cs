using System.Diagnostics;
using System.Text;
using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat.Benchmarks;

/// <summary>What one turn measured.</summary>
internal sealed record TurnResult(
    int PromptTokens,
    int PrefilledTokens,
    int OutputTokens,
    double TimeToFirstTokenMs,
    double DecodeTokensPerSecond,
    double WallMs,
    string Text,
    int[]? Prompt = null,
    int[]? Output = null,
    IReadOnlyList<ChatMessage>? HistoryBefore = null);

/// <summary>A way to hold a conversation: an anchor client, KvChatClient, or the raw-generator ideal.</summary>
internal interface IWay : IDisposable
{
    string Name { get; }

    IConversation Start(string systemPrompt);
}

/// <summary>One conversation's history as the caller keeps it.</summary>
internal interface IConversation : IDisposable
{
    List<ChatMessage> History { get; }

    /// <summary>Sends the history (or, for a stateful protocol, what is new) and appends the reply.</summary>
    Task<TurnResult> ReplyAsync(int maxOutputTokens);

    /// <summary>The history was changed other than by appending: the next call cannot use a delta protocol.</summary>
    void HistoryRewritten();
}

/// <summary>Any IChatClient: full history every call, or the ConversationId delta protocol.</summary>
internal sealed class ChatClientWay(string name, IChatClient client, bool deltas, Func<ReplyTrace?>? lastTrace = null) : IWay
{
    public string Name { get; } = name;

    public IChatClient Client { get; } = client;

    public IConversation Start(string systemPrompt) => new Conversation(this, systemPrompt);

    public void Dispose() => Client.Dispose();

    private sealed class Conversation(ChatClientWay way, string systemPrompt) : IConversation
    {
        private string? _conversationId;
        private int _sent;

        public List<ChatMessage> History { get; } = [new(ChatRole.System, systemPrompt)];

        public void HistoryRewritten()
        {
            _conversationId = null;
            _sent = 0;
        }

        public void Dispose()
        {
        }

        public async Task<TurnResult> ReplyAsync(int maxOutputTokens)
        {
            var options = new ChatOptions { MaxOutputTokens = maxOutputTokens, ConversationId = way.Deltas ? _conversationId : null };
            var send = way.Deltas && _conversationId is not null ? History.Skip(_sent).ToList() : History;
            var stopwatch = Stopwatch.StartNew();
            double first = -1;
            var text = new StringBuilder();
            UsageDetails? usage = null;
            string? conversationId = null;
            var updates = 0;
            await foreach (var update in way.Client.GetStreamingResponseAsync(send, options).ConfigureAwait(false))
            {
                var now = stopwatch.Elapsed.TotalMilliseconds;
                if (update.Contents.Any(c => c is TextContent))
                {
                    if (first < 0)
                    {
                        first = now;
                    }

                    updates++;
                    text.Append(update.Text);
                }

                usage = update.Contents.OfType<UsageContent>().FirstOrDefault()?.Details ?? usage;
                conversationId = update.ConversationId ?? conversationId;
            }

            var wall = stopwatch.Elapsed.TotalMilliseconds;
            var output = (int)(usage?.OutputTokenCount ?? updates);
            var prompt = (int)(usage?.InputTokenCount ?? 0);
            var prefilled = usage?.AdditionalCounts?.TryGetValue(KvChatUsage.PrefilledInputTokenCount, out var p) == true ? (int)p : prompt;
            History.Add(new ChatMessage(ChatRole.Assistant, text.ToString()));
            if (way.Deltas)
            {
                _conversationId = conversationId;
                _sent = History.Count;
            }

            var trace = way.LastTrace?.Invoke();
            return new TurnResult(
                prompt, prefilled, output, first < 0 ? wall : first,
                output > 1 && wall > first && first >= 0 ? (output - 1) / ((wall - first) / 1000) : 0,
                wall, text.ToString(), trace?.Prompt, trace?.Generated);
        }
    }

    private bool Deltas { get; } = deltas;

    private Func<ReplyTrace?>? LastTrace { get; } = lastTrace;
}

/// <summary>
/// The physical limit: one raw GenAI generator per conversation, kept alive, that appends only the tokens its KV cache
/// lacks and decodes with GenAI's own greedy loop (the pending token re-fed on the next turn).
/// </summary>
internal sealed class IdealWay(Model model, string modelPath, int contextTokens) : IWay
{
    private readonly Model _model = model;
    private readonly int _contextTokens = contextTokens;
    private readonly Tokenizer _tokenizer = new(model);
    private readonly Lock _lock = new();
    private PromptRenderer? _renderer;

    public string Name => "ideal (raw generator)";

    public IConversation Start(string systemPrompt)
    {
        _renderer ??= new PromptRenderer(_tokenizer, _lock, ModelFolder.Read(modelPath), null, 1024);
        return new Conversation(this, systemPrompt);
    }

    public void Dispose() => _tokenizer.Dispose();

    private sealed class Conversation : IConversation, IDisposable
    {
        private readonly IdealWay _way;
        private readonly Generator _generator;
        private readonly List<int> _sequence = [];
        private bool _pending;

        public Conversation(IdealWay way, string systemPrompt)
        {
            _way = way;
            using var parameters = new GeneratorParams(way._model);
            parameters.SetSearchOption("max_length", way._contextTokens);
            _generator = new Generator(way._model, parameters);
            History = [new(ChatRole.System, systemPrompt)];
        }

        public List<ChatMessage> History { get; }

        public void HistoryRewritten()
        {
        }

        public Task<TurnResult> ReplyAsync(int maxOutputTokens)
        {
            var prompt = _way._renderer!.Render(History, null, addGenerationPrompt: true).Tokens;
            var stopwatch = Stopwatch.StartNew();

            // Keep what the KV cache holds of this prompt (a pending token has no K/V yet), append the rest.
            var computed = _pending ? _sequence.Count - 1 : _sequence.Count;
            var keep = Math.Min(prompt.AsSpan().CommonPrefixLength(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_sequence)), computed);
            keep = Math.Min(keep, prompt.Length - 1);
            if (keep < _sequence.Count)
            {
                _generator.RewindTo((ulong)keep);
                _sequence.RemoveRange(keep, _sequence.Count - keep);
            }

            _generator.AppendTokens(prompt.AsSpan(keep));
            _sequence.AddRange(prompt.AsSpan(keep));
            _pending = false;

            using var stream = _way._tokenizer.CreateStream();
            var text = new StringBuilder();
            var output = new List<int>();
            double first = 0;
            double last = 0;
            while (output.Count < maxOutputTokens && !_generator.IsDone())
            {
                var before = _generator.TokenCount();
                _generator.GenerateNextToken();
                if (_generator.TokenCount() == before)
                {
                    break; // End of sequence: not appended, nothing pending.
                }

                var token = _generator.GetSequence(0)[^1];
                var now = stopwatch.Elapsed.TotalMilliseconds;
                if (output.Count == 0)
                {
                    first = now;
                }

                last = now;
                output.Add(token);
                _sequence.Add(token);
                _pending = true;
                text.Append(stream.Decode(token));
            }

            var wall = stopwatch.Elapsed.TotalMilliseconds;
            History.Add(new ChatMessage(ChatRole.Assistant, text.ToString()));
            _way._renderer.RememberReply(text.ToString(), System.Runtime.InteropServices.CollectionsMarshal.AsSpan(output));
            return Task.FromResult(new TurnResult(
                prompt.Length, prompt.Length - keep, output.Count, first,
                output.Count > 1 && last > first ? (output.Count - 1) / ((last - first) / 1000) : 0,
                wall, text.ToString(), prompt, [.. output]));
        }

        public void Dispose() => _generator.Dispose();
    }
}
