using System.Diagnostics.Metrics;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;

namespace KvChat;

/// <summary>What a request does when the session holding its longest cached prefix is serving another request.</summary>
public enum BusySessionBehavior
{
    /// <summary>Take another session at once (an idle one, a new one, or an evicted one) and prefill what it lacks: requests run in parallel.</summary>
    TakeOther,

    /// <summary>Wait for the busy session: no prefix is prefilled twice, but requests for one conversation run one after another.</summary>
    Wait,
}

/// <summary>Options of a <see cref="KvChatClient"/>. Setters validate their value.</summary>
public sealed class KvChatClientOptions
{
    private int _maxSessions = 4;
    private int? _contextTokens;
    private long _maxCacheBytes = 4L << 30;
    private int _blockSize = 16;
    private int _maxConversations = 1024;
    private int _replyMemoCapacity = 1024;
    private int? _intraOpThreads;
    private KvSessionBackend _sessionBackend = KvSessionBackend.Auto;
    private string? _prefixCacheDirectory;
    private long _prefixCacheMaxBytes = 2L << 30;
    private List<IReadOnlyList<ChatMessage>> _warmupPrompts = [];

    /// <summary>
    /// Gets or sets the GenAI model folder (<c>genai_config.json</c>, <c>tokenizer.json</c>, the ONNX model) that the
    /// dependency-injection registration (<c>services.AddKvChatClient(...)</c>) loads. For dependency injection only: the
    /// <see cref="KvChatClient"/> constructors take the folder as an argument, and reject options whose
    /// <see cref="ModelPath"/> names a different folder (an <see cref="ArgumentException"/>) rather than ignore it.
    /// </summary>
    /// <value>The default value is <see langword="null"/>.</value>
    public string? ModelPath { get; set; }

    /// <summary>Gets or sets the number of sessions (one GenAI generator and its KV cache each) kept alive.</summary>
    /// <value>The default value is 4.</value>
    /// <exception cref="ArgumentOutOfRangeException">The value is less than 1.</exception>
    public int MaxSessions
    {
        get => _maxSessions;
        set
        {
            _maxSessions = value >= 1 ? value : throw OptionErrors.OutOfRange(nameof(value), "KvChatClientOptions.MaxSessions", value, "at least 1");
        }
    }

    /// <summary>
    /// Gets or sets the context of one session in tokens (GenAI's <c>max_length</c>): prompt plus reply. With a
    /// shared-buffer model the KV cache of this many tokens is allocated when a session is created, so this is also
    /// the per-session memory. <see langword="null"/> takes the model's <c>context_length</c>, at most 4096.
    /// </summary>
    /// <value>The default value is <see langword="null"/>.</value>
    /// <exception cref="ArgumentOutOfRangeException">The value is less than 16.</exception>
    public int? ContextTokens
    {
        get => _contextTokens;
        set
        {
            _contextTokens = value is null or >= 16 ? value : throw OptionErrors.OutOfRange(nameof(value), "KvChatClientOptions.ContextTokens", value, "at least 16, or null");
        }
    }

    /// <summary>
    /// Gets or sets the memory bound for KV caches, in bytes: no session is created past it. With the owned-KV backend,
    /// parked copies of conversations whose session another request took over fill what live sessions leave (least
    /// recently used dropped first), so a conversation coming back is copied rather than prefilled.
    /// </summary>
    /// <value>The default value is 4 GiB.</value>
    /// <exception cref="ArgumentOutOfRangeException">The value is less than 1.</exception>
    public long MaxCacheBytes
    {
        get => _maxCacheBytes;
        set
        {
            _maxCacheBytes = value >= 1 ? value : throw OptionErrors.OutOfRange(nameof(value), "KvChatClientOptions.MaxCacheBytes", value, "at least 1");
        }
    }

    /// <summary>
    /// Gets or sets the number of tokens in one block of the prefix index. A session is found by prefix when it shares
    /// at least one block with the prompt; the exact common prefix is then verified token by token.
    /// </summary>
    /// <value>The default value is 16.</value>
    /// <exception cref="ArgumentOutOfRangeException">The value is less than 1 or more than 4096.</exception>
    public int BlockSize
    {
        get => _blockSize;
        set
        {
            _blockSize = value is >= 1 and <= 4096 ? value : throw OptionErrors.OutOfRange(nameof(value), "KvChatClientOptions.BlockSize", value, "from 1 to 4096");
        }
    }

    /// <summary>
    /// Gets or sets which runtime holds the KV caches. <see cref="KvSessionBackend.Auto"/> takes the owned-KV backend
    /// (prefix forks: a shared system prompt is prefilled once per process; concurrent sessions decode in one batched
    /// Run) when the model's decoder is one it can drive, and the GenAI generator backend otherwise, logging why.
    /// </summary>
    /// <value>The default value is <see cref="KvSessionBackend.Auto"/>.</value>
    /// <exception cref="ArgumentOutOfRangeException">The value is not a defined <see cref="KvSessionBackend"/>.</exception>
    public KvSessionBackend SessionBackend
    {
        get => _sessionBackend;
        set
        {
            if (!Enum.IsDefined(value))
            {
                throw new ArgumentOutOfRangeException(nameof(value), value, "Unknown session backend.");
            }

            _sessionBackend = value;
        }
    }

    /// <summary>Gets or sets what a request does when its best session is busy.</summary>
    /// <value>The default value is <see cref="BusySessionBehavior.TakeOther"/>.</value>
    public BusySessionBehavior BusySessionBehavior { get; set; } = BusySessionBehavior.TakeOther;

    /// <summary>
    /// Gets or sets whether responses carry a <c>ConversationId</c>: the client then keeps each conversation's history
    /// and accepts only new messages with that id (the stateful mode of Microsoft.Extensions.AI). Off by default: send
    /// the whole history every call and the client finds the cached prefix itself.
    /// </summary>
    /// <value>The default value is <see langword="false"/>.</value>
    public bool EnableConversationIds { get; set; }

    /// <summary>Gets or sets how many conversations the stateful mode remembers (least recently used forgotten first).</summary>
    /// <value>The default value is 1024.</value>
    /// <exception cref="ArgumentOutOfRangeException">The value is less than 1.</exception>
    public int MaxConversations
    {
        get => _maxConversations;
        set
        {
            _maxConversations = value >= 1 ? value : throw OptionErrors.OutOfRange(nameof(value), "KvChatClientOptions.MaxConversations", value, "at least 1");
        }
    }

    /// <summary>
    /// Gets or sets how many recent replies the client remembers with the token ids it generated, so that a reply sent
    /// back as text is prefilled from those ids rather than re-encoded (re-encoding can split text differently and lose
    /// the cache from that point). 0 turns it off.
    /// </summary>
    /// <value>The default value is 1024.</value>
    /// <exception cref="ArgumentOutOfRangeException">The value is negative.</exception>
    public int ReplyMemoCapacity
    {
        get => _replyMemoCapacity;
        set
        {
            _replyMemoCapacity = value >= 0 ? value : throw OptionErrors.OutOfRange(nameof(value), "KvChatClientOptions.ReplyMemoCapacity", value, "at least 0");
        }
    }

    /// <summary>
    /// Gets or sets a chat template (Jinja) that replaces the model's own from <c>tokenizer_config.json</c>.
    /// </summary>
    /// <value>The default value is <see langword="null"/>: the model's template.</value>
    public string? ChatTemplate { get; set; }

    /// <summary>Gets or sets the model id reported in metadata and responses; <see langword="null"/> takes the model folder's name.</summary>
    /// <value>The default value is <see langword="null"/>.</value>
    public string? ModelId { get; set; }

    /// <summary>
    /// Gets or sets whether a <c>ChatOptions.AdditionalProperties</c> key the client does not know is an error
    /// (<see langword="true"/>, a <see cref="NotSupportedException"/> naming the key) or logged at debug and ignored
    /// (<see langword="false"/>, what callers written for other providers expect). Keys other providers honour are
    /// handled either way: <c>top_k</c> and <c>seed</c> apply when <c>ChatOptions.TopK</c>/<c>Seed</c> are unset;
    /// <c>stream_options</c>, <c>repetition_penalty</c>, <c>min_p</c>, <c>max_tokens</c> and a few more are logged at
    /// debug with the reason they are not used.
    /// </summary>
    /// <value>The default value is <see langword="false"/>.</value>
    public bool RejectUnknownAdditionalProperties { get; set; }

    /// <summary>
    /// Gets or sets whether tool calls in <c>ToolMode.Auto</c> are constrained too: the text stays free, and a call
    /// the model opens gets an offered tool's name and arguments that follow its parameter schema. Required calls
    /// (<c>RequireAny</c>, <c>RequireSpecific</c>) and calls in a reply that may also be JSON are always constrained.
    /// Formats whose calls have no marker in the text (Llama 3's bare JSON) keep free calls.
    /// </summary>
    /// <value>The default value is <see langword="false"/>: calls in <c>Auto</c> mode are parsed as the model wrote them.</value>
    public bool ConstrainToolArguments { get; set; }

    /// <summary>Gets or sets the logger factory for the client's logs; <see langword="null"/> logs nothing.</summary>
    /// <value>The default value is <see langword="null"/>.</value>
    public ILoggerFactory? LoggerFactory { get; set; }

    /// <summary>
    /// Gets or sets the factory that creates the client's <see cref="Meter"/> (named <c>KvChat</c>; the
    /// instruments are listed in <see cref="KvChatMetricNames"/>); <see langword="null"/> creates a meter the client
    /// owns and disposes. The
    /// dependency-injection registration takes the container's factory when this is <see langword="null"/>.
    /// </summary>
    /// <value>The default value is <see langword="null"/>.</value>
    public IMeterFactory? MeterFactory { get; set; }

    /// <summary>
    /// Gets or sets the number of ONNX Runtime intra-op threads the model runs with (GenAI's
    /// <c>session_options.intra_op_num_threads</c>), when the client loads the model itself (the
    /// <see cref="KvChatClient(string, KvChatClientOptions?)"/> constructor and the dependency-injection registration).
    /// <see langword="null"/> takes one thread per logical processor (<see cref="Environment.ProcessorCount"/>), which
    /// on a 2-core machine prefilled and decoded about twice as fast as GenAI's own default of half the hardware
    /// threads. A <see cref="Microsoft.ML.OnnxRuntimeGenAI.Model"/> passed to the other constructor keeps the settings
    /// it was loaded with: set them on its <c>Config</c>.
    /// </summary>
    /// <value>The default value is <see langword="null"/>: <see cref="Environment.ProcessorCount"/> threads.</value>
    /// <exception cref="ArgumentOutOfRangeException">The value is less than 1 or more than 1024.</exception>
    public int? IntraOpThreads
    {
        get => _intraOpThreads;
        set
        {
            _intraOpThreads = value is null || (value >= 1 && value <= KvChat.IntraOpThreads.Max)
                ? value
                : throw OptionErrors.OutOfRange(nameof(value), "KvChatClientOptions.IntraOpThreads", value, $"from 1 to {KvChat.IntraOpThreads.Max}, or null");
        }
    }

    /// <summary>
    /// Gets or sets a directory where pinned prefixes (<see cref="KvChatClient.PrefillAsync"/>, and
    /// <see cref="WarmupPrompts"/>) are kept with their KV, so that a new client over the same model serves them without
    /// prefilling: its first request that starts with one loads its KV from disk. Files of another model, layout or
    /// tokenizer, truncated or corrupted files, and a directory that cannot be written are logged (warning) and
    /// ignored; they never fail a request. Several clients and processes may share the directory (files are written to
    /// a temporary name and renamed into place). Needs the owned-KV backend: with
    /// <see cref="SessionBackend"/> = <see cref="KvSessionBackend.Generator"/> the client throws at construction.
    /// <see langword="null"/> keeps prefixes in memory only.
    /// </summary>
    /// <value>The default value is <see langword="null"/>.</value>
    /// <exception cref="ArgumentException">The value is empty, white space, or holds a character that is invalid in a path.</exception>
    public string? PrefixCacheDirectory
    {
        get => _prefixCacheDirectory;
        set
        {
            if (value is not null && (string.IsNullOrWhiteSpace(value) || value.AsSpan().IndexOfAny(Path.GetInvalidPathChars()) >= 0))
            {
                throw new ArgumentException($"KvChatClientOptions.PrefixCacheDirectory is {OptionErrors.Format(value)}; it must be a directory path, or null.", nameof(value));
            }

            _prefixCacheDirectory = value;
        }
    }

    /// <summary>
    /// Gets or sets the most bytes the files in <see cref="PrefixCacheDirectory"/> take: after each write the least
    /// recently used files (written or loaded longest ago) are deleted until the rest fit. A prefix larger than this is
    /// not written.
    /// </summary>
    /// <value>The default value is 2 GiB.</value>
    /// <exception cref="ArgumentOutOfRangeException">The value is less than 1.</exception>
    public long PrefixCacheMaxBytes
    {
        get => _prefixCacheMaxBytes;
        set
        {
            _prefixCacheMaxBytes = value >= 1 ? value : throw OptionErrors.OutOfRange(nameof(value), "KvChatClientOptions.PrefixCacheMaxBytes", value, "at least 1");
        }
    }

    /// <summary>
    /// Gets the prefixes to prefill and pin at start-up, each a message list (typically one system message), rendered
    /// as <see cref="KvChatClient.PrefillAsync"/> renders it. The dependency-injection registration prefills them when
    /// the host starts; a client created with its constructor prefills them when <see cref="KvChatClient.WarmUpAsync"/>
    /// is called. With <see cref="PrefixCacheDirectory"/> a prefix already on disk is loaded instead of prefilled. In
    /// configuration: <c>"Warmup": [ { "System": "..." }, [ { "Role": "system", "Content": "..." } ] ]</c>.
    /// </summary>
    /// <value>The default value is an empty list.</value>
    public IList<IReadOnlyList<ChatMessage>> WarmupPrompts => _warmupPrompts;

    /// <summary>
    /// Gets or sets how the client keeps cached turns exact on a model whose decode steps drift from a prefill of the same
    /// tokens (int4 <c>MatMulNBits</c> at <c>accuracy_level</c> 4, the CPU export of GenAI's model builder; a probe at
    /// load finds them, <see cref="KvCacheStatistics.CacheExactnessNote"/> says what it found). When true, each decode
    /// step runs two rows, the previous token again with the new one, so replies stay cached and the next turn prefills
    /// only its new tokens (measured on the int4 Qwen2.5-0.5B shape: the next turn's first token 0.61x as late, decode
    /// 0.89x as fast), but concurrent sessions' decode steps run one at a time (total decode 0.67x-0.80x at 2-8
    /// conversations). When false, decode steps run one row
    /// (batched across sessions) and each reply is prefilled again with the next turn's tokens. Other models decode one
    /// row a step, batched, either way.
    /// </summary>
    /// <value>The default value is <see langword="true"/>.</value>
    public bool TwoRowDecodeSteps { get; set; } = true;

    internal KvChatClientOptions Clone()
    {
        var clone = (KvChatClientOptions)MemberwiseClone();
        clone._warmupPrompts = [.. _warmupPrompts];
        return clone;
    }
}
