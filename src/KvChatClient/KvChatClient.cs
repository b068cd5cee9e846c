using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading.Channels;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.ML.OnnxRuntimeGenAI;
using OrtException = Microsoft.ML.OnnxRuntime.OnnxRuntimeException;

namespace KvChat;

/// <summary>
/// An <see cref="IChatClient"/> over ONNX Runtime GenAI that keeps generators (and their KV caches) alive across turns
/// and requests: each request is rendered with the model's chat template, the session holding its longest cached token
/// prefix is found by prompt-prefix hashing, rewound to that prefix, and only the new tail is prefilled.
/// </summary>
/// <remarks>
/// <para>
/// Stateless by default: send the whole history every call (as Semantic Kernel's <c>ChatHistory</c> and most apps do)
/// and the client finds what is cached. With greedy decoding a cached turn says exactly what a fresh full prefill says.
/// </para>
/// <para>
/// Thread-safe: one instance serves concurrent requests; each session serves one request at a time. Do not dispose the
/// client while calls are in flight if you need their results: <see cref="Dispose"/> cancels them.
/// </para>
/// </remarks>
public sealed partial class KvChatClient : IChatClient
{
    private const string ProviderName = "kvchat-onnxruntime-genai";

    private readonly Lock _modelLock = new();
    private readonly IKvBackend _backend;
    private readonly string? _backendFallbackReason;
    private Model? _model;
    private bool _ownsModel;
    private readonly Tokenizer _tokenizer;
    private readonly Lock _tokenizerLock = new();
    private readonly ModelFolder _folder;
    private readonly KvChatClientOptions _options;
    private readonly PromptRenderer _renderer;
    private readonly SessionPool<IKvSession> _pool;
    private readonly ChatClientMetadata _metadata;
    private readonly string _modelId;
    private readonly HashSet<int> _eos;
    private readonly ToolCallFormat? _toolFormat;
    private readonly int _contextTokens;
    private readonly Conversations? _conversations;
    private readonly ILogger _logger;
    private readonly KvChatMetrics _metrics;
    private readonly CancellationTokenSource _disposeCts = new();
    private readonly ManualResetEventSlim _idle = new(true);
    private readonly Lock _callLock = new();
    private readonly Lazy<(ConstraintVocabulary? Vocabulary, string? Error)> _constraintVocabulary;
    private int _inFlight;
    private int _disposed;
    private long _requests;
    private long _cachedInputTokens;
    private long _prefilledInputTokens;
    private long _outputTokens;

    /// <summary>Creates a client that loads the GenAI model folder at <paramref name="modelPath"/> and owns it.</summary>
    /// <param name="modelPath">A GenAI model folder (<c>genai_config.json</c>, <c>tokenizer.json</c>, the ONNX model).</param>
    /// <param name="options">The options; <see langword="null"/> for the defaults. Copied: later changes have no effect.</param>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">A required file is missing (the message names it).</exception>
    /// <exception cref="InvalidDataException">A file is malformed, or GenAI cannot load the model (the message names the problem).</exception>
    /// <exception cref="ArgumentException"><paramref name="options"/> sets a <see cref="KvChatClientOptions.ModelPath"/> that is not <paramref name="modelPath"/>.</exception>
    public KvChatClient(string modelPath, KvChatClientOptions? options = null)
        : this(ModelFolder.Read(modelPath), null, ownsModel: true, options)
    {
    }

    /// <summary>Creates a client over a loaded GenAI <paramref name="model"/>.</summary>
    /// <param name="model">The model. The client disposes it only when <paramref name="ownsModel"/> is <see langword="true"/>.</param>
    /// <param name="modelPath">The folder the model was loaded from: the client reads its tokenizer and template files.</param>
    /// <param name="options">The options; <see langword="null"/> for the defaults. Copied: later changes have no effect.</param>
    /// <param name="ownsModel">Whether disposing the client disposes <paramref name="model"/>.</param>
    /// <exception cref="ArgumentNullException"><paramref name="model"/> is <see langword="null"/>.</exception>
    /// <exception cref="FileNotFoundException">A required file is missing from <paramref name="modelPath"/>.</exception>
    /// <exception cref="InvalidDataException">A file in <paramref name="modelPath"/> is malformed.</exception>
    /// <exception cref="ArgumentException"><paramref name="options"/> sets a <see cref="KvChatClientOptions.ModelPath"/> that is not <paramref name="modelPath"/>.</exception>
    /// <remarks>
    /// The model keeps the ONNX Runtime settings it was loaded with: <see cref="KvChatClientOptions.IntraOpThreads"/>
    /// does not apply. To set the threads of a model you load, overlay its <c>Config</c> before creating it:
    /// <c>config.Overlay("{\"model\":{\"decoder\":{\"session_options\":{\"intra_op_num_threads\":2}}}}")</c>.
    /// </remarks>
    public KvChatClient(Model model, string modelPath, KvChatClientOptions? options = null, bool ownsModel = false)
        : this(ModelFolder.Read(modelPath), model ?? throw new ArgumentNullException(nameof(model)), ownsModel, options)
    {
    }

    private KvChatClient(ModelFolder folder, Model? model, bool ownsModel, KvChatClientOptions? options)
    {
        _folder = folder;
        _options = options?.Clone() ?? new KvChatClientOptions();
        if (_options.ModelPath is { Length: > 0 } configured && !SameFolder(configured, folder.Path))
        {
            // The path argument is the model; a different ModelPath (meant for dependency injection) would be ignored.
            throw new ArgumentException(
                $"KvChatClientOptions.ModelPath is '{configured}', but the model folder given is '{folder.Path}': leave ModelPath unset (it is read by AddKvChatClient) or give the same folder.",
                nameof(options));
        }

        _contextTokens = _options.ContextTokens ?? Math.Min(folder.ContextLength, 4096);
        if (_contextTokens > folder.ContextLength)
        {
            throw OptionErrors.OutOfRange(nameof(options), "KvChatClientOptions.ContextTokens", _contextTokens,
                $"at most the model's context_length ({folder.ContextLength})");
        }

        CheckPrefixCacheBackend(_options);
        _logger = _options.LoggerFactory?.CreateLogger<KvChatClient>() is { } logger ? new ContainedLogger(logger) : NullLogger<KvChatClient>.Instance;
        _ownsModel = ownsModel;
        _model = model;
        var owned = ChooseOwnedBackend(folder, out _backendFallbackReason);
        try
        {
            // The owned backend runs the decoder itself: the GenAI model is loaded only if something asks for it.
            _model ??= owned is null ? LoadModel(folder.Path, IntraOpThreads.Resolve(_options.IntraOpThreads)) : null;
            _ownsModel |= model is null;
            _tokenizer = _model is null ? new Tokenizer(folder.Path) : new Tokenizer(_model);
            _renderer = new PromptRenderer(_tokenizer, _tokenizerLock, folder, _options.ChatTemplate, _options.ReplyMemoCapacity);
        }
        catch (OnnxRuntimeGenAIException e)
        {
            _tokenizer?.Dispose();
            owned?.Dispose();
            DisposeOwnedModel();
            throw new InvalidDataException($"GenAI could not load the tokenizer of '{folder.Path}': {e.Message}", e);
        }
        catch
        {
            _tokenizer?.Dispose();
            owned?.Dispose();
            DisposeOwnedModel();
            throw;
        }

        _eos = [.. folder.EosTokenIds];
        _constraintVocabulary = new(ReadConstraintVocabulary, LazyThreadSafetyMode.ExecutionAndPublication);
        _toolFormat = ToolCallFormat.Detect(_options.ChatTemplate ?? folder.ChatTemplate, [.. folder.AddedTokens.Select(t => t.Content)]);
        var bytesPerToken = folder.KvBytesPerToken;
        var policy = _options.BusySessionBehavior == BusySessionBehavior.Wait ? BusySessionPolicy.Wait : BusySessionPolicy.TakeOther;
        // Generator sessions take turns when one forward pass fills every core: the threads of the model the client
        // loaded, or the option when the caller brought the model (its threads are unknown otherwise).
        var oneRunAtATime = (model is null || _options.IntraOpThreads is not null)
            && IntraOpThreads.Resolve(_options.IntraOpThreads) >= Environment.ProcessorCount;
        try
        {
            _backend = owned ?? (IKvBackend)new GeneratorBackend(_model!, _contextTokens, bytesPerToken, folder.SharedBuffer, oneRunAtATime, folder.VocabSize, ProbeStart(folder), _options.TwoRowDecodeSteps);
        }
        catch (Exception e) when (e is OnnxRuntimeGenAIException or InvalidOperationException)
        {
            _tokenizer.Dispose();
            DisposeOwnedModel();
            throw new InvalidDataException($"GenAI could not run the model in '{folder.Path}' (a probe Run at load failed): {e.Message}", e);
        }

        if (_backend.RowExactness.Note is { } exactness)
        {
            Log.RowExactness(_logger, _backend.Kind, exactness);
        }

        OpenPrefixStore(owned);

        _pool = new SessionPool<IKvSession>(
            _options.MaxSessions,
            _options.MaxCacheBytes,
            _backend.CreateSession,
            policy,
            _options.BlockSize,
            _backend.CanFork ? static (target, source, tokens) => target.CopyPrefixFrom(source, tokens) : null,
            _backend.CanFork ? static (session, length) => session.Park(length) : null,
            _backend.RowExactness.MinimumTail);
        _modelId = _options.ModelId ?? Path.GetFileName(folder.Path.TrimEnd(Path.DirectorySeparatorChar));
        _metadata = new ChatClientMetadata(ProviderName, new Uri(folder.Path + Path.DirectorySeparatorChar), _modelId);
        _conversations = _options.EnableConversationIds ? new Conversations(_options.MaxConversations) : null;
        _metrics = new KvChatMetrics(_options.MeterFactory, _modelId, () =>
        {
            var pool = _pool.GetStatistics();
            return (pool.Sessions, pool.BusySessions);
        }, _backend.GetStepStatistics);
    }

    /// <summary>Gets the backend that holds the KV caches (never <see cref="KvSessionBackend.Auto"/>).</summary>
    internal KvSessionBackend Backend => _backend.Kind;

    /// <summary>Gets the session backend itself (its memory and step counters).</summary>
    internal IKvBackend SessionBackend => _backend;

    /// <summary>Test hook: called after every reply with its prompt, cached count, generated ids and the session's tokens.</summary>
    internal Action<ReplyTrace>? Trace { get; set; }

    /// <summary>Test hook: called before each decode step with the session and the tokens generated so far (fault injection).</summary>
    internal Action<IKvSession, int>? DecodeStepHook { get; set; }

    /// <summary>Gets the number of tokens one session holds at most (prompt plus reply).</summary>
    public int ContextTokens => _contextTokens;

    /// <inheritdoc/>
    /// <exception cref="ArgumentNullException"><paramref name="messages"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">A message is empty or malformed, or the prompt does not fit a session's context.</exception>
    /// <exception cref="ArgumentOutOfRangeException">An option is out of range.</exception>
    /// <exception cref="NotSupportedException">A message or option asks for something this client cannot do.</exception>
    /// <exception cref="ObjectDisposedException">The client is disposed.</exception>
    public Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var request = Prepare(messages, options);
        return StreamAsync(request, cancellationToken).ToChatResponseAsync(cancellationToken);
    }

    /// <inheritdoc/>
    /// <exception cref="ArgumentNullException"><paramref name="messages"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">A message is empty or malformed, or the prompt does not fit a session's context.</exception>
    /// <exception cref="ArgumentOutOfRangeException">An option is out of range.</exception>
    /// <exception cref="NotSupportedException">A message or option asks for something this client cannot do.</exception>
    /// <exception cref="ObjectDisposedException">The client is disposed.</exception>
    public IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(
        IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var request = Prepare(messages, options);
        return StreamAsync(request, cancellationToken);
    }

    /// <summary>
    /// Prefills the rendering of <paramref name="messages"/> (no generation prompt: typically the system message that
    /// many conversations share) into a session and pins it there, so the first request that starts with it prefills
    /// only what follows, and eviction takes that session last.
    /// </summary>
    /// <param name="messages">The prefix conversation.</param>
    /// <param name="options">Options whose <c>Instructions</c> and <c>Tools</c> shape the rendering, as in a request.</param>
    /// <param name="cancellationToken">Cancels waiting for a session.</param>
    /// <returns>The number of tokens this call prefilled (0 when a session already held them all).</returns>
    /// <exception cref="ArgumentException">The messages are empty or malformed, or do not fit a session's context.</exception>
    /// <exception cref="ObjectDisposedException">The client is disposed.</exception>
    public async Task<int> PrefillAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(messages);
        EnterCall();
        try
        {
            var rendered = _renderer.Render(messages as IReadOnlyList<ChatMessage> ?? [.. messages], options, addGenerationPrompt: false);
            var prompt = rendered.Tokens;
            EnsureFits(prompt.Length, nameof(messages));
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _disposeCts.Token);
            await LoadPrefixAsync(prompt, linked.Token).ConfigureAwait(false);
            var lease = await _pool.AcquireAsync(prompt, rendered.IdentityLength, linked.Token).ConfigureAwait(false);
            RecordFork(lease);
            return await Task.Run(() => PrefillAndPin(lease, prompt), CancellationToken.None).ConfigureAwait(false);
        }
        finally
        {
            ExitCall();
        }
    }

    /// <inheritdoc/>
    /// <remarks>
    /// <para>
    /// Besides <see cref="ChatClientMetadata"/>, <see cref="KvCacheStatistics"/> (a snapshot) and the client itself, this
    /// gives the client's own GenAI objects, which stay owned by the client: never dispose them, and do not use them
    /// after the client is disposed.
    /// </para>
    /// <para>
    /// <see cref="Model"/> is safe to share: create your own <c>new Tokenizer(model)</c> or generators from it.
    /// <see cref="Tokenizer"/> is the instance the client encodes and decodes with under its own lock; GenAI tokenizers
    /// are not thread-safe, so use it only while no request of this client is in flight (for example to inspect the
    /// vocabulary at start-up), or create your own tokenizer from the model, which is cheap and safe at any time.
    /// </para>
    /// </remarks>
    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null)
        {
            return null;
        }

        if (serviceType == typeof(ChatClientMetadata))
        {
            return _metadata;
        }

        if (serviceType == typeof(KvCacheStatistics))
        {
            return GetStatistics();
        }

        if (serviceType == typeof(Model))
        {
            return GenAiModel;
        }

        if (serviceType == typeof(Tokenizer))
        {
            return _tokenizer;
        }

        return serviceType.IsInstanceOfType(this) ? this : null;
    }

    /// <summary>Cancels calls in flight, waits for them to leave the native runtime, and releases every generator.</summary>
    public void Dispose()
    {
        lock (_callLock)
        {
            if (_disposed != 0)
            {
                return;
            }

            _disposed = 1;
        }

        // Calls in flight see the cancellation between tokens (OperationCanceledException); new calls see the flag.
        _disposeCts.Cancel();
        _idle.Wait();
        _metrics.Dispose();
        _pool.Dispose();
        _backend.Dispose();
        _tokenizer.Dispose();
        DisposeOwnedModel();
        _disposeCts.Dispose();
        _prefixLoadGate.Dispose();
        lock (_callLock)
        {
            _idle.Dispose(); // Under the lock: the last ExitCall has left Set().
        }
    }

    private int PrefillAndPin(SessionPool<IKvSession>.Lease lease, int[] prompt)
    {
        var keep = _backend.RowExactness.Keep(Math.Min(lease.CommonPrefixLength, prompt.Length), prompt.Length);
        try
        {
            _metrics.RecordLease(lease.Evicted);
            lease.Session.Extend(keep, prompt.AsSpan(keep));
            _pool.Commit(lease, TokensOf(lease.Session), prompt.Length);
            _pool.Pin(lease);
        }
        catch
        {
            lease.Discard(); // Still held: its state is unknown.
            _metrics.RecordDiscard();
            throw;
        }

        SavePrefix(lease.Session, prompt);
        lease.Release();
        RecordPrompt(0, prompt.Length - keep);
        Log.Prefilled(_logger, prompt.Length - keep, prompt.Length);
        return prompt.Length - keep;
    }

    private static bool SameFolder(string a, string b) =>
        string.Equals(
            Path.TrimEndingDirectorySeparator(Path.GetFullPath(a)),
            Path.TrimEndingDirectorySeparator(Path.GetFullPath(b)),
            OperatingSystem.IsWindows() ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal);

    /// <summary>
    /// Gets the GenAI model: the one the client was given or loaded, or, with the owned backend, loaded on first use
    /// (structured output runs in GenAI's guided sampler; <c>GetService(typeof(Model))</c>).
    /// </summary>
    private Model GenAiModel
    {
        get
        {
            if (Volatile.Read(ref _model) is { } model)
            {
                return model;
            }

            lock (_modelLock)
            {
                ThrowIfDisposed();
                _model ??= LoadModel(_folder.Path, IntraOpThreads.Resolve(_options.IntraOpThreads));
                _ownsModel = true;
                return _model;
            }
        }
    }

    /// <summary>
    /// Loads the owned-KV backend unless the options ask for the generator, or it declines the model (then returns null
    /// with the reason, logged). A model that a forced <see cref="KvSessionBackend.Owned"/> cannot drive is an error.
    /// </summary>
    private OwnedBackend? ChooseOwnedBackend(ModelFolder folder, out string? reason)
    {
        reason = null;
        if (_options.SessionBackend == KvSessionBackend.Generator)
        {
            return null;
        }

        // The same thread count GenAI runs with (KvChatClientOptions.IntraOpThreads): an explicit option wins over the
        // folder's genai_config.json, which wins over the default of one thread per logical processor.
        var threads = _options.IntraOpThreads ?? folder.Decoder.IntraOpThreads ?? IntraOpThreads.Default;
        var owned = OwnedBackend.TryCreate(folder, _contextTokens, _options.MaxSessions, threads, out reason, twoRowSteps: _options.TwoRowDecodeSteps);
        if (owned is null)
        {
            if (_options.SessionBackend == KvSessionBackend.Owned)
            {
                throw new NotSupportedException($"KvChatClientOptions.SessionBackend is Owned, but the owned-KV backend cannot drive '{folder.Path}': {reason}");
            }

            Log.OwnedBackendDeclined(_logger, folder.Path, reason!);
        }
        else
        {
            Log.OwnedLogits(_logger, owned.LogitsNote);
            if (owned.BatchingNote is { } note)
            {
                Log.BatchingOff(_logger, note);
            }
        }

        return owned;
    }

    /// <summary>The token the load-time probes start their prompt with: the first special token (a role marker), or 1.</summary>
    private static int ProbeStart(ModelFolder folder)
        => folder.AddedTokens.Where(t => t.Special).Select(t => t.Id).DefaultIfEmpty(1).First();

    private static Model LoadModel(string path, int intraOpThreads)
    {
        try
        {
            using var config = new Config(path);
            config.Overlay(IntraOpThreads.Overlay(intraOpThreads));
            return new Model(config);
        }
        catch (OnnxRuntimeGenAIException e)
        {
            throw new InvalidDataException($"GenAI could not load the model in '{path}': {e.Message}", e);
        }
    }

    private void DisposeOwnedModel()
    {
        if (_ownsModel)
        {
            _model?.Dispose();
        }
    }

    private KvCacheStatistics GetStatistics()
    {
        var pool = _pool.GetStatistics();
        var steps = _backend.GetStepStatistics();
        return new KvCacheStatistics
        {
            Backend = _backend.Kind,
            BackendFallbackReason = _backendFallbackReason,
            Forks = pool.Forks,
            ForkedTokens = pool.ForkedTokens,
            PrefixesLoadedFromDisk = Interlocked.Read(ref _prefixesLoaded),
            PrefixesWrittenToDisk = Interlocked.Read(ref _prefixesWritten),
            DecodeSteps = steps.Steps,
            DecodeStepRows = steps.Rows,
            MaxDecodeBatchSize = steps.MaxBatchSize,
            DecodeBatchingNote = steps.BatchingNote,
            CacheExactnessNote = _backend.RowExactness.Note,
            Sessions = pool.Sessions,
            BusySessions = pool.BusySessions,
            PinnedSessions = pool.PinnedSessions,
            KvBytesPerSession = _folder.KvBytesPerToken * _contextTokens,
            KvBytes = pool.TotalBytes,
            ParkedConversations = pool.ParkedSessions,
            ParkedBytes = pool.ParkedBytes,
            Requests = Interlocked.Read(ref _requests),
            CacheHits = pool.Hits,
            CacheMisses = pool.Misses,
            Evictions = pool.Evictions,
            Discards = pool.Discards,
            CachedInputTokens = Interlocked.Read(ref _cachedInputTokens),
            PrefilledInputTokens = Interlocked.Read(ref _prefilledInputTokens),
            OutputTokens = Interlocked.Read(ref _outputTokens),
            RetokenizedReplies = _renderer.RetokenizedReplies,
        };
    }

    private static ReadOnlySpan<int> TokensOf(IKvSession session)
        => session.Tokens is List<int> list ? CollectionsMarshal.AsSpan(list) : session.Tokens.ToArray();

    private void RecordFork(SessionPool<IKvSession>.Lease lease)
    {
        if (lease.ForkedTokens > 0)
        {
            _metrics.RecordFork(lease.ForkedTokens);
            Log.Forked(_logger, lease.ForkedTokens);
        }
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);

    /// <summary>Validates a request and renders its prompt, as a call (Dispose waits for the tokenizer to be free).</summary>
    private Request Prepare(IEnumerable<ChatMessage> messages, ChatOptions? options)
    {
        EnterCall();
        try
        {
            return PrepareRequest(messages, options);
        }
        finally
        {
            ExitCall();
        }
    }

    /// <summary>
    /// Counts a call in flight, so that <see cref="Dispose"/> waits for it before it frees the native objects.
    /// </summary>
    /// <remarks>
    /// The disposed check and the count change under one lock that <see cref="Dispose"/> also takes to set the flag: a
    /// call either enters before Dispose (and Dispose waits for it) or sees the flag and throws, never touching the
    /// disposed idle event, and never leaving the count raised.
    /// </remarks>
    /// <exception cref="ObjectDisposedException">The client is disposed (the exception names the client).</exception>
    private void EnterCall()
    {
        lock (_callLock)
        {
            ObjectDisposedException.ThrowIf(_disposed != 0, this);
            if (_inFlight++ == 0)
            {
                _idle.Reset();
            }
        }
    }

    private void ExitCall()
    {
        lock (_callLock)
        {
            if (--_inFlight == 0)
            {
                _idle.Set();
            }
        }
    }

    /// <summary>Gets the calls in flight (for tests).</summary>
    internal int InFlightCalls
    {
        get
        {
            lock (_callLock)
            {
                return _inFlight;
            }
        }
    }

    private readonly record struct Event(IReadOnlyList<AIContent>? Contents, ChatFinishReason? FinishReason, UsageDetails? Usage);

    private async IAsyncEnumerable<ChatResponseUpdate> StreamAsync(Request request, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        EnterCall();
        var entered = true;
        Conversations.Conversation? heldConversation = null;
        Task? producer = null;
        var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _disposeCts.Token);
        try
        {
            var token = linked.Token;
            var prompt = request.Tokens;
            var identityLength = request.IdentityLength;
            var conversation = request.Conversation;
            if (conversation is not null || _conversations is not null)
            {
                conversation ??= _conversations!.Create();
                await conversation.Gate.WaitAsync(token).ConfigureAwait(false);
                heldConversation = conversation;
                if (request.Conversation is not null && conversation.Version != request.ConversationVersion)
                {
                    // Another request on this conversation finished meanwhile: render its history as it is now.
                    List<ChatMessage> full;
                    lock (conversation)
                    {
                        full = [.. conversation.History, .. request.Messages];
                    }

                    var rendered = _renderer.Render(full, request.Options, addGenerationPrompt: true);
                    prompt = rendered.Tokens;
                    identityLength = rendered.IdentityLength;
                    EnsureFits(prompt.Length, "messages");
                }
            }

            var started = Stopwatch.GetTimestamp();
            var channel = Channel.CreateUnbounded<Event>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
            var requestId = Guid.NewGuid().ToString("N");
            var reply = new List<AIContent>();
            TokenSource source;
            if (request.JsonSchema is not null && request.Constraint is null)
            {
                source = new GuidedTokenSource(GenAiModel, prompt, request.Sampling, request.JsonSchema, _contextTokens);
            }
            else
            {
                await LoadPrefixAsync(prompt, token).ConfigureAwait(false);
                var lease = await _pool.AcquireAsync(prompt, identityLength, token).ConfigureAwait(false);
                RecordFork(lease);
                source = new SessionTokenSource(lease, prompt, request.Sampling, _folder.VocabSize, _contextTokens, DecodeStepHook, Trace is not null, _backend.RowExactness);
            }

            // The in-flight count goes to the producer with the reply: it leaves the call when decoding ends.
            producer = Task.Run(() => Decode(requestId, request, source, channel.Writer, reply, started, token), CancellationToken.None);
            entered = false;

            var messageId = Guid.NewGuid().ToString("N");
            var created = DateTimeOffset.UtcNow;
            await foreach (var e in channel.Reader.ReadAllAsync(token).ConfigureAwait(false))
            {
                token.ThrowIfCancellationRequested();
                var update = new ChatResponseUpdate
                {
                    Role = ChatRole.Assistant,
                    ResponseId = requestId,
                    MessageId = messageId,
                    CreatedAt = created,
                    ModelId = _modelId,
                    ConversationId = conversation?.Id,
                };
                if (e.Contents is not null)
                {
                    foreach (var content in e.Contents)
                    {
                        update.Contents.Add(content);
                    }
                }

                if (e.Usage is not null)
                {
                    update.FinishReason = e.FinishReason;
                    update.Contents.Add(new UsageContent(e.Usage));
                    if (conversation is not null)
                    {
                        lock (conversation)
                        {
                            conversation.History.AddRange(request.Messages);
                            conversation.History.Add(new ChatMessage(ChatRole.Assistant, MergeText(reply)));
                            conversation.Version++;
                        }
                    }
                }

                yield return update;
            }
        }
        finally
        {
            if (producer is not null)
            {
                if (!producer.IsCompleted)
                {
                    await linked.CancelAsync().ConfigureAwait(false);
                }

                await producer.ConfigureAwait(false);
            }

            heldConversation?.Gate.Release();

            linked.Dispose();
            if (entered)
            {
                ExitCall();
            }
        }
    }

}

/// <summary>What one reply did, for tests.</summary>
internal sealed record ReplyTrace(int[] Prompt, int Cached, int[] Generated, int[] SessionTokens, ChatFinishReason Finish, float[]? PromptLogits, double TimeToFirstTokenMs = 0);

/// <summary>Names of the extra counters in <see cref="UsageDetails.AdditionalCounts"/> that <see cref="KvChatClient"/> reports.</summary>
public static class KvChatUsage
{
    /// <summary>The prompt tokens computed for this request (the input tokens not served from the KV cache).</summary>
    public const string PrefilledInputTokenCount = "PrefilledInputTokenCount";
}
