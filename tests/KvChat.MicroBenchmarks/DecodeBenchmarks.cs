using System.Globalization;
using BenchmarkDotNet.Attributes;
using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat.MicroBenchmarks;

/// <summary>
/// The decode loop's own cost per token: 32 greedy tokens after a short prompt, on the tiny model (a forward pass of
/// tens of microseconds, where overhead shows) and on the bench model (128.7M parameters, where it does not).
/// Times are per token (<c>OperationsPerInvoke</c> = 32).
/// </summary>
/// <remarks>
/// <para>
/// Every method starts from the same state (the prompt's KV cache minus its last token), appends the prompt's last
/// token, and then makes 32 token choices and 31 more forward passes, the work GenAI's own loop does for 32 tokens:
/// </para>
/// <list type="bullet">
/// <item><description><c>bare</c>: <c>GenerateNextToken</c> and <c>GetSequence(0)[^1]</c> 32 times (GenAI picks the
/// token natively; the last one stays pending, without keys and values).</description></item>
/// <item><description><c>KvSession</c>: the client's mechanism, through <see cref="KvSession"/>: <c>GetOutput("logits")</c>
/// and a copy of the last row, <see cref="LogitSampler.Next"/> (greedy), <c>AppendTokens([token])</c> but for the last
/// token, as <c>KvChatClient</c> leaves it.</description></item>
/// <item><description><c>KvChatClient</c>: a whole streamed reply of 32 tokens to the same prompt on a warm session:
/// rendering (cached), the pool's lookup, the rewind, the decode loop, text decoding, the channel and the updates.</description></item>
/// </list>
/// <para>
/// The setup checks that all three say the same 32 tokens. The last row times one part of the client's loop alone,
/// once per token: reading the logits and copying the last row (the greedy pick is <see cref="SamplerBenchmarks"/>).
/// </para>
/// </remarks>
public class DecodeBenchmarks : DecodeLoops
{
    /// <summary>The tokens of each reply.</summary>
    public const int Tokens = 32;

    public DecodeBenchmarks()
        : base(Tokens)
    {
    }

    [Params(BenchModels.Tiny, BenchModels.Bench)]
    public string Model { get; set; } = BenchModels.Tiny;

    protected override string ModelName => Model;

    [Benchmark(Baseline = true, OperationsPerInvoke = Tokens, Description = "bare GenerateNextToken loop")]
    public int BareGenerateNextToken() => RunBare();

    [Benchmark(OperationsPerInvoke = Tokens, Description = "KvSession: logits copy + LogitSampler + AppendTokens")]
    public int KvSessionLoop() => RunKvSession();

    [Benchmark(OperationsPerInvoke = Tokens, Description = "KvChatClient streamed reply, warm session")]
    public Task<int> KvChatClientReply() => RunClientAsync();

    [Benchmark(Description = "of which GetOutput(logits) + last-row copy")]
    public float ReadLogits() => ReadLastLogits();
}

/// <summary>
/// What a request costs beyond its tokens: a reply of one token on a warm session of the tiny model (one forward pass
/// of the prompt's last token and one token choice), bare, through <see cref="KvSession"/>, and as a whole
/// <c>KvChatClient</c> streamed reply. Times are per request.
/// </summary>
public class RequestOverheadBenchmarks : DecodeLoops
{
    public RequestOverheadBenchmarks()
        : base(1)
    {
    }

    protected override string ModelName => BenchModels.Tiny;

    [Benchmark(Baseline = true, Description = "bare: rewind, append 1, GenerateNextToken")]
    public int BareGenerateNextToken() => RunBare();

    [Benchmark(Description = "KvSession: rewind, append 1, logits copy + LogitSampler")]
    public int KvSessionLoop() => RunKvSession();

    [Benchmark(Description = "KvChatClient streamed reply of 1 token, warm session")]
    public Task<int> KvChatClientReply() => RunClientAsync();
}

/// <summary>The three decode loops over one model, from the same state; see <see cref="DecodeBenchmarks"/>.</summary>
[MemoryDiagnoser]
public abstract class DecodeLoops
{
    private readonly int _tokens;
    private readonly List<ChatMessage> _messages =
    [
        new(ChatRole.System, "You are a concise assistant."),
        new(ChatRole.User, "What is a KV cache, and why does reusing it across turns help?"),
    ];

    private readonly ChatOptions _chatOptions;
    private Model _model = null!;
    private Generator _generator = null!;
    private KvSession _session = null!;
    private KvChatClient _client = null!;
    private int[] _prompt = null!;
    private int[] _lastPromptToken = null!;
    private float[] _logits = null!;
    private int _vocab;
    private int[] _lastClientReply = [];
    private bool _disposed;

    protected DecodeLoops(int tokens)
    {
        _tokens = tokens;
        _chatOptions = new ChatOptions { MaxOutputTokens = tokens, Temperature = 0f };
    }

    protected abstract string ModelName { get; }

    [GlobalSetup]
    public async Task Setup()
    {
        BenchModels.EnsureGenAiHandle();
        var path = BenchModels.PathOf(ModelName);
        var folder = ModelFolder.Read(path);
        var context = Math.Min(folder.ContextLength, 4096);
        _vocab = folder.VocabSize;
        _logits = new float[_vocab];
        _model = new Model(path);

        _client = new KvChatClient(_model, path, new KvChatClientOptions { MaxSessions = 1 });
        _client.Trace = trace => _lastClientReply = trace.Generated;
        using (var tokenizer = new Tokenizer(_model))
        {
            var renderer = new PromptRenderer(tokenizer, new Lock(), folder, templateOverride: null, replyMemoCapacity: 0);
            _prompt = renderer.Render(_messages, null, addGenerationPrompt: true).Tokens;
        }

        _lastPromptToken = [_prompt[^1]];
        using (var parameters = new GeneratorParams(_model))
        {
            parameters.SetSearchOption("max_length", context);
            _generator = new Generator(_model, parameters);
        }

        _generator.AppendTokens(_prompt);
        _session = new KvSession(_model, context, folder.KvBytesPerToken, folder.SharedBuffer);
        _session.Prefill(_prompt, 0);

        RunBare();
        var bare = _generator.GetSequence(0)[_prompt.Length..].ToArray();
        var ours = new List<int>();
        RunKvSession(ours);
        await RunClientAsync().ConfigureAwait(false); // Warms the client's session: the prompt is cached from now on.
        await RunClientAsync().ConfigureAwait(false);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"// {ModelName}: prompt {_prompt.Length} tokens, vocabulary {_vocab}, context {context}; {_tokens} tokens [{string.Join(',', bare.Take(8))}...]"));
        if (bare.Length != _tokens || !bare.SequenceEqual(ours) || !bare.SequenceEqual(_lastClientReply))
        {
            throw new InvalidOperationException(
                $"The loops disagree: bare [{string.Join(',', bare)}], KvSession [{string.Join(',', ours)}], KvChatClient [{string.Join(',', _lastClientReply)}].");
        }

        _client.Trace = null;
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _client?.Dispose();
        _session?.Dispose();
        _generator?.Dispose();
        _model?.Dispose();
    }

    /// <summary>GenAI's own loop: <c>GenerateNextToken</c> picks each token natively.</summary>
    protected int RunBare()
    {
        _generator.RewindTo((ulong)(_prompt.Length - 1));
        _generator.AppendTokens(_lastPromptToken);
        var last = 0;
        for (var i = 0; i < _tokens; i++)
        {
            _generator.GenerateNextToken();
            last = _generator.GetSequence(0)[^1];
        }

        return last;
    }

    /// <summary>The client's loop: logits read and copied, sampled in managed code, each token appended but the last.</summary>
    protected int RunKvSession(List<int>? said = null)
    {
        _session.Prefill(_prompt, _prompt.Length - 1);
        var sampler = new LogitSampler(SamplingSettings.Greedy, _vocab);
        var next = 0;
        for (var i = 0; i < _tokens; i++)
        {
            _session.ReadLastLogits(_logits);
            next = sampler.Next(_logits);
            sampler.Accept(next);
            said?.Add(next);
            if (i < _tokens - 1)
            {
                _session.Append(next);
            }
        }

        return next;
    }

    /// <summary>Reads the logits of the session's last position and copies them (what each decode step starts with).</summary>
    protected float ReadLastLogits()
    {
        _session.ReadLastLogits(_logits);
        return _logits[0];
    }

    /// <summary>A whole streamed reply through <see cref="KvChatClient"/>.</summary>
    protected async Task<int> RunClientAsync()
    {
        var updates = 0;
        await foreach (var update in _client.GetStreamingResponseAsync(_messages, _chatOptions).ConfigureAwait(false))
        {
            updates++;
        }

        return updates;
    }
}
