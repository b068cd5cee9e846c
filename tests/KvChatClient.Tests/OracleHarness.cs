using KvChat.Testing;
using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntimeGenAI;
using Xunit;

namespace KvChat.Tests;

/// <summary>
/// Runs requests through a client and checks each reply against the oracle: a fresh generator that prefills the same
/// prompt tokens says (greedily) exactly what the cached session said. With <c>prefillGreedy</c> (a decoder whose decode
/// steps drift from prefills and that decodes two rows a step, <see cref="RowExactness.DecodesTwoRows"/>), each token
/// of the reply must be what a fresh prefill of the prompt and the reply before it says (<see cref="RawGeneration.PrefillGreedy"/>).
/// </summary>
internal sealed class OracleHarness : IDisposable
{
    private readonly Model _model;
    private readonly Tokenizer _tokenizer;
    private readonly int[]? _eos;
    private ReplyTrace? _last;

    public OracleHarness(string modelPath, KvChatClientOptions? options = null, bool prefillGreedy = false)
    {
        _eos = prefillGreedy ? [.. ModelFolder.Read(modelPath).EosTokenIds] : null;
        Client = new KvChatClient(modelPath, options);
        Client.Trace = trace => _last = trace;
        _model = (Model)Client.GetService(typeof(Model))!;
        _tokenizer = new Tokenizer(_model);
    }

    public KvChatClient Client { get; }

    public int Checked { get; private set; }

    public ReplyTrace Last => _last ?? throw new InvalidOperationException("No reply yet.");

    /// <summary>The oracle's greedy continuation of a prompt.</summary>
    public List<int> Fresh(int[] prompt, int maxNewTokens)
        => _eos is null ? RawGeneration.FreshGreedy(_model, prompt, maxNewTokens) : RawGeneration.PrefillGreedy(_model, prompt, maxNewTokens, _eos);

    public string Decode(IEnumerable<int> ids) => _tokenizer.Decode(ids.ToArray());

    /// <summary>Text as the runtime's token-by-token decoder gives it (what a streaming client shows).</summary>
    public string StreamDecode(IEnumerable<int> ids)
    {
        using var stream = _tokenizer.CreateStream();
        return string.Concat(ids.Select(stream.Decode));
    }

    public async Task<ChatResponse> AskAsync(IList<ChatMessage> history, ChatOptions options, CancellationToken cancellationToken = default)
    {
        _last = null;
        var response = await Client.GetResponseAsync(history, options, cancellationToken);
        Check(response, options);
        return response;
    }

    public void Check(ChatResponse response, ChatOptions options)
    {
        var trace = Last;
        var limit = options.MaxOutputTokens ?? 64;
        var fresh = Fresh(trace.Prompt, limit);
        var stops = options.StopSequences is { Count: > 0 };

        Assert.True(trace.Generated.Length <= fresh.Count || stops, $"client said {trace.Generated.Length} tokens, fresh only {fresh.Count}");
        Assert.Equal(fresh.Take(trace.Generated.Length), trace.Generated);
        if (!stops)
        {
            Assert.Equal(fresh, trace.Generated);
            Assert.Equal(trace.Generated.Length == limit ? ChatFinishReason.Length : ChatFinishReason.Stop, response.FinishReason);
            // The text is what the runtime's streaming decoder makes of the ids (it holds back a cut character).
            Assert.Equal(StreamDecode(trace.Generated), response.Text);
        }
        else
        {
            var full = StreamDecode(fresh);
            Assert.StartsWith(response.Text, full, StringComparison.Ordinal);
            var stopAt = options.StopSequences!.Select(s => full.IndexOf(s, StringComparison.Ordinal)).Where(i => i >= 0).DefaultIfEmpty(-1).Min();
            Assert.Equal(stopAt >= 0 ? full[..stopAt] : response.Text, response.Text);
        }

        // Stronger than the tokens: the logits at the prompt's end equal a fresh prefill's.
        using (var fresh1 = RawGeneration.NewGenerator(_model))
        {
            fresh1.AppendTokens(trace.Prompt);
            var expected = RawGeneration.LastLogits(fresh1);
            Assert.True(RawGeneration.MaxAbsDifference(expected, trace.PromptLogits!) < 1e-4f, $"logits differ by {RawGeneration.MaxAbsDifference(expected, trace.PromptLogits!)}");
        }

        var usage = response.Usage!;
        Assert.Equal(trace.Prompt.Length, usage.InputTokenCount);
        Assert.Equal(trace.Cached, usage.CachedInputTokenCount);
        Assert.Equal(trace.Generated.Length, usage.OutputTokenCount);
        Assert.Equal(usage.InputTokenCount + usage.OutputTokenCount, usage.TotalTokenCount);
        Assert.Equal(trace.Prompt.Length - trace.Cached, usage.AdditionalCounts![KvChatUsage.PrefilledInputTokenCount]);
        Checked++;
    }

    public void Dispose()
    {
        _tokenizer.Dispose();
        Client.Dispose();
    }
}
