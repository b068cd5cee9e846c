using System.Buffers;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.ML.OnnxRuntimeGenAI;

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
public sealed class KvChatClient : IChatClient
{
    private const string ProviderName = "kvchat-onnxruntime-genai";

    private readonly Model _model;
    private readonly bool _ownsModel;
    private readonly Tokenizer _tokenizer;
    private readonly Lock _tokenizerLock = new();
    private readonly ModelFolder _folder;
    private readonly KvChatClientOptions _options;
    private readonly PromptRenderer _renderer;
    private readonly SessionPool<KvSession> _pool;
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
    public KvChatClient(Model model, string modelPath, KvChatClientOptions? options = null, bool ownsModel = false)
        : this(ModelFolder.Read(modelPath), model ?? throw new ArgumentNullException(nameof(model)), ownsModel, options)
    {
    }

    private KvChatClient(ModelFolder folder, Model? model, bool ownsModel, KvChatClientOptions? options)
    {
        _folder = folder;
        _options = options?.Clone() ?? new KvChatClientOptions();
        _contextTokens = _options.ContextTokens ?? Math.Min(folder.ContextLength, 4096);
        if (_contextTokens > folder.ContextLength)
        {
            throw new ArgumentOutOfRangeException(nameof(options), _contextTokens,
                $"KvChatClientOptions.ContextTokens ({_contextTokens}) exceeds the model's context_length ({folder.ContextLength}).");
        }

        _logger = _options.LoggerFactory?.CreateLogger<KvChatClient>() ?? NullLogger<KvChatClient>.Instance;
        _ownsModel = ownsModel;
        _model = model ?? LoadModel(folder.Path);
        try
        {
            _tokenizer = new Tokenizer(_model);
            _renderer = new PromptRenderer(_tokenizer, _tokenizerLock, folder, _options.ChatTemplate, _options.ReplyMemoCapacity);
        }
        catch (OnnxRuntimeGenAIException e)
        {
            _tokenizer?.Dispose();
            DisposeOwnedModel();
            throw new InvalidDataException($"GenAI could not load the tokenizer of '{folder.Path}': {e.Message}", e);
        }
        catch
        {
            _tokenizer?.Dispose();
            DisposeOwnedModel();
            throw;
        }

        _eos = [.. folder.EosTokenIds];
        _toolFormat = ToolCallFormat.Detect(_options.ChatTemplate ?? folder.ChatTemplate, [.. folder.AddedTokens.Select(t => t.Content)]);
        var bytesPerToken = folder.KvBytesPerToken;
        var policy = _options.BusySessionBehavior == BusySessionBehavior.Wait ? BusySessionPolicy.Wait : BusySessionPolicy.TakeOther;
        _pool = new SessionPool<KvSession>(
            _options.MaxSessions,
            _options.MaxCacheBytes,
            () => new KvSession(_model, _contextTokens, bytesPerToken, folder.SharedBuffer),
            policy,
            _options.BlockSize);
        _modelId = _options.ModelId ?? Path.GetFileName(folder.Path.TrimEnd(Path.DirectorySeparatorChar));
        _metadata = new ChatClientMetadata(ProviderName, new Uri(folder.Path + Path.DirectorySeparatorChar), _modelId);
        _conversations = _options.EnableConversationIds ? new Conversations(_options.MaxConversations) : null;
        _metrics = new KvChatMetrics(_options.MeterFactory, _modelId, () =>
        {
            var pool = _pool.GetStatistics();
            return (pool.Sessions, pool.BusySessions);
        });
    }

    /// <summary>Test hook: called after every reply with its prompt, cached count, generated ids and the session's tokens.</summary>
    internal Action<ReplyTrace>? Trace { get; set; }

    /// <summary>Test hook: called before each decode step with the session and the tokens generated so far (fault injection).</summary>
    internal Action<KvSession, int>? DecodeStepHook { get; set; }

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
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(messages);
        var rendered = _renderer.Render(messages as IReadOnlyList<ChatMessage> ?? [.. messages], options, addGenerationPrompt: false);
        var prompt = rendered.Tokens;
        EnsureFits(prompt.Length, nameof(messages));
        EnterCall();
        try
        {
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _disposeCts.Token);
            var lease = await _pool.AcquireAsync(prompt, rendered.IdentityLength, linked.Token).ConfigureAwait(false);
            return await Task.Run(
                () =>
                {
                    try
                    {
                        _metrics.RecordLease(lease.Evicted);
                        var keep = Math.Min(lease.CommonPrefixLength, prompt.Length);
                        lease.Session.Extend(keep, prompt.AsSpan(keep));
                        _pool.Commit(lease, CollectionsMarshal.AsSpan((List<int>)lease.Session.Tokens), prompt.Length);
                        _pool.Pin(lease);
                        lease.Release();
                        Interlocked.Add(ref _prefilledInputTokens, prompt.Length - keep);
                        _metrics.RecordPrompt(0, prompt.Length - keep);
                        Log.Prefilled(_logger, prompt.Length - keep, prompt.Length);
                        return prompt.Length - keep;
                    }
                    catch
                    {
                        lease.Discard();
                        _metrics.RecordDiscard();
                        throw;
                    }
                },
                CancellationToken.None).ConfigureAwait(false);
        }
        finally
        {
            ExitCall();
        }
    }

    /// <inheritdoc/>
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
            return _model;
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
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _disposeCts.Cancel();
        _idle.Wait();
        _metrics.Dispose();
        _pool.Dispose();
        _tokenizer.Dispose();
        DisposeOwnedModel();
        _disposeCts.Dispose();
        _idle.Dispose();
    }

    private static Model LoadModel(string path)
    {
        try
        {
            return new Model(path);
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
        return new KvCacheStatistics
        {
            Sessions = pool.Sessions,
            BusySessions = pool.BusySessions,
            PinnedSessions = pool.PinnedSessions,
            KvBytesPerSession = _folder.KvBytesPerToken * _contextTokens,
            KvBytes = pool.TotalBytes,
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

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);

    private void EnterCall()
    {
        lock (_idle)
        {
            if (_inFlight++ == 0)
            {
                _idle.Reset();
            }
        }

        if (Volatile.Read(ref _disposed) != 0)
        {
            ExitCall();
            throw new ObjectDisposedException(GetType().FullName);
        }
    }

    private void ExitCall()
    {
        lock (_idle)
        {
            if (--_inFlight == 0)
            {
                _idle.Set();
            }
        }
    }

    private void EnsureFits(int promptTokens, string parameterName)
    {
        if (promptTokens > _contextTokens)
        {
            throw new ArgumentException(
                $"The prompt has {promptTokens} tokens; a session holds at most {_contextTokens} (KvChatClientOptions.ContextTokens).",
                parameterName);
        }
    }

    private sealed record Request(
        int[] Tokens,
        int IdentityLength,
        string[]? ToolNames,
        int[] ForcedTokens,
        string? JsonSchema,
        bool AllowMultipleToolCalls,
        IReadOnlyList<ChatMessage> Messages,
        ChatOptions? Options,
        SamplingSettings Sampling,
        int? MaxOutputTokens,
        IReadOnlyList<string> StopSequences,
        Conversations.Conversation? Conversation,
        int ConversationVersion);

    private Request Prepare(IEnumerable<ChatMessage> messages, ChatOptions? options)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(messages);
        var list = messages as IReadOnlyList<ChatMessage> ?? [.. messages];
        var sampling = SamplingFrom(options);
        var maxOutput = options?.MaxOutputTokens;
        if (maxOutput is <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(options), maxOutput, "ChatOptions.MaxOutputTokens must be positive.");
        }

        var stops = options?.StopSequences is { Count: > 0 } s ? [.. s] : Array.Empty<string>();
        foreach (var stop in stops)
        {
            if (string.IsNullOrEmpty(stop))
            {
                throw new ArgumentException("ChatOptions.StopSequences holds a null or empty string.", nameof(options));
            }
        }

        ValidateUnsupported(options);

        Conversations.Conversation? conversation = null;
        var version = 0;
        var full = list;
        if (options?.ConversationId is { } id)
        {
            if (_conversations is null)
            {
                throw new NotSupportedException(
                    "ChatOptions.ConversationId was set, but KvChatClientOptions.EnableConversationIds is off: send the whole history instead.");
            }

            conversation = _conversations.Get(id);
            lock (conversation)
            {
                version = conversation.Version;
                full = [.. conversation.History, .. list];
            }
        }

        var prompt = _renderer.Render(full, options, addGenerationPrompt: true);
        EnsureFits(prompt.Tokens.Length, nameof(messages));
        var (toolNames, forced) = ToolsFrom(options);
        var schema = GuidanceSchema(options, toolNames is not null);
        return new Request(
            prompt.Tokens, prompt.IdentityLength, toolNames, forced, schema, options?.AllowMultipleToolCalls != false,
            list, options, sampling, maxOutput, stops, conversation, version);
    }

    /// <summary>
    /// The JSON schema a structured reply is constrained to (GenAI guidance), or <see langword="null"/> for free text.
    /// Whitespace is made strict, so replies are compact and short.
    /// </summary>
    private static string? GuidanceSchema(ChatOptions? options, bool toolsOffered)
    {
        if (options?.ResponseFormat is not ChatResponseFormatJson json)
        {
            return null;
        }

        if (toolsOffered)
        {
            throw new NotSupportedException("ChatOptions.ResponseFormat JSON together with tools is not supported: offer tools or ask for JSON, not both.");
        }

        if (options.FrequencyPenalty is not null and not 0 || options.PresencePenalty is not null and not 0)
        {
            throw new NotSupportedException("Frequency and presence penalties are not supported with ChatOptions.ResponseFormat JSON (constrained decoding runs in GenAI's own sampler).");
        }

        JsonObject schema;
        try
        {
            schema = json.Schema is { ValueKind: JsonValueKind.Object } element
                ? JsonNode.Parse(element.GetRawText())!.AsObject()
                : new JsonObject { ["type"] = "object" };
        }
        catch (JsonException e)
        {
            throw new ArgumentException($"ChatOptions.ResponseFormat's JSON schema cannot be read: {e.Message}", nameof(options), e);
        }

        schema.TryAdd("x-guidance", new JsonObject { ["whitespace_flexible"] = false });
        return schema.ToJsonString();
    }

    /// <summary>The offered tool names (null when no tool can be called) and the tokens a required call starts with.</summary>
    private (string[]? Names, int[] Forced) ToolsFrom(ChatOptions? options)
    {
        var required = options?.ToolMode as RequiredChatToolMode;
        if (options?.Tools is not { Count: > 0 } tools || options.ToolMode is NoneChatToolMode)
        {
            return required is null
                ? (null, [])
                : throw new ArgumentException("ChatOptions.ToolMode requires a tool call, but ChatOptions.Tools is empty.", nameof(options));
        }

        if (_toolFormat is null)
        {
            throw new NotSupportedException(
                "ChatOptions.Tools were given, but the model's chat template uses no tool-call format KvChatClient recognises " +
                "(Hermes/Qwen <tool_call>, Phi <|tool_call|>, Llama 3 JSON).");
        }

        var names = tools.OfType<AIFunctionDeclaration>().Select(t => t.Name).ToArray();
        if (required is null)
        {
            return (names, []);
        }

        var name = required.RequiredFunctionName;
        if (name is not null && !names.Contains(name, StringComparer.Ordinal))
        {
            throw new ArgumentException($"ChatOptions.ToolMode requires '{name}', which is not among ChatOptions.Tools.", nameof(options));
        }

        var prefix = _toolFormat.ForcedReplyPrefix(name)
            ?? throw new NotSupportedException($"The {_toolFormat} tool-call format has no opening to force: ToolMode RequireAny/RequireSpecific cannot be honoured.");
        return (names, _renderer.EncodeTemplateText(prefix));
    }

    private SamplingSettings SamplingFrom(ChatOptions? options)
    {
        var temperature = options?.Temperature ?? (_folder.DoSample ? _folder.Temperature : 0f);
        var topP = options?.TopP ?? (_folder.DoSample ? _folder.TopP : 1f);
        var topK = options?.TopK ?? (_folder.DoSample ? _folder.TopK : 0);
        if (options?.TopK is <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.TopK, "ChatOptions.TopK must be positive.");
        }

        var settings = new SamplingSettings(
            temperature,
            topP,
            topK,
            options?.FrequencyPenalty ?? 0f,
            options?.PresencePenalty ?? 0f,
            options?.Seed is { } seed ? unchecked((ulong)seed) : null);
        try
        {
            settings.Validate();
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw new ArgumentOutOfRangeException(nameof(options), e.ActualValue, "ChatOptions." + e.Message);
        }

        return settings;
    }

    private void ValidateUnsupported(ChatOptions? options)
    {
        if (options is null)
        {
            return;
        }

        if (options.ResponseFormat is not null and not ChatResponseFormatText and not ChatResponseFormatJson)
        {
            throw new NotSupportedException($"ChatOptions.ResponseFormat {options.ResponseFormat.GetType().Name} is not supported.");
        }

        if (options.ModelId is { } modelId && !string.Equals(modelId, _modelId, StringComparison.Ordinal))
        {
            throw new ArgumentException($"ChatOptions.ModelId '{modelId}' is not this client's model '{_modelId}'.", nameof(options));
        }

        if (options.RawRepresentationFactory?.Invoke(this) is { } raw)
        {
            throw new NotSupportedException($"ChatOptions.RawRepresentationFactory returned a {raw.GetType().Name}; KvChatClient takes no raw options.");
        }

        if (options.AdditionalProperties is { Count: > 0 } additional)
        {
            foreach (var key in additional.Keys)
            {
                if (_options.RejectUnknownAdditionalProperties)
                {
                    throw new NotSupportedException(
                        $"ChatOptions.AdditionalProperties key '{key}' is not known to KvChatClient (set KvChatClientOptions.RejectUnknownAdditionalProperties to false to log it instead).");
                }

                Log.UnknownAdditionalProperty(_logger, key);
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
            if (request.JsonSchema is not null)
            {
                producer = Task.Run(() => GenerateStructured(requestId, prompt, request, channel.Writer, reply, started, token), CancellationToken.None);
            }
            else
            {
                var lease = await _pool.AcquireAsync(prompt, identityLength, token).ConfigureAwait(false);
                producer = Task.Run(() => Generate(requestId, prompt, request, lease, channel.Writer, reply, started, token), CancellationToken.None);
            }

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
                entered = false; // The producer leaves the call.
            }

            heldConversation?.Gate.Release();

            linked.Dispose();
            if (entered)
            {
                ExitCall();
            }
        }
    }

    private static void Emit(ChannelWriter<Event> writer, List<AIContent> contents, List<AIContent> reply, StringBuilder text)
    {
        if (contents.Count == 0)
        {
            return;
        }

        foreach (var content in contents)
        {
            if (content is TextContent t)
            {
                text.Append(t.Text);
            }
        }

        reply.AddRange(contents);
        writer.TryWrite(new Event([.. contents], null, null));
        contents.Clear();
    }

    /// <summary>A reply's contents for history: adjacent text merged, calls kept in order.</summary>
    private static List<AIContent> MergeText(List<AIContent> contents)
    {
        var merged = new List<AIContent>();
        var text = new StringBuilder();
        foreach (var content in contents)
        {
            if (content is TextContent t)
            {
                text.Append(t.Text);
                continue;
            }

            if (text.Length > 0)
            {
                merged.Add(new TextContent(text.ToString()));
                text.Clear();
            }

            merged.Add(content);
        }

        if (text.Length > 0 || merged.Count == 0)
        {
            merged.Add(new TextContent(text.ToString()));
        }

        return merged;
    }

    /// <summary>
    /// A reply constrained to a JSON schema: GenAI guidance works only inside its own sampler and is fixed per generator,
    /// so this runs on a temporary guided generator that prefills the whole prompt (the cached sessions are untouched;
    /// the next turn reuses them and prefills the structured reply with the new message).
    /// </summary>
    private void GenerateStructured(
        string requestId,
        int[] prompt,
        Request request,
        ChannelWriter<Event> writer,
        List<AIContent> reply,
        long started,
        CancellationToken token)
    {
        Interlocked.Increment(ref _requests);
        try
        {
            token.ThrowIfCancellationRequested();
            using var parameters = new GeneratorParams(_model);
            parameters.SetSearchOption("max_length", _contextTokens);
            var sampling = request.Sampling;
            parameters.SetSearchOption("do_sample", !sampling.IsGreedy);
            if (!sampling.IsGreedy)
            {
                parameters.SetSearchOption("temperature", sampling.Temperature);
                parameters.SetSearchOption("top_p", sampling.TopP);
                parameters.SetSearchOption("top_k", sampling.TopK);
                if (sampling.Seed is { } seed)
                {
                    parameters.SetSearchOption("random_seed", seed % (1UL << 31));
                }
            }

            parameters.SetGuidance("json_schema", request.JsonSchema!, false);
            using var generator = new Generator(_model, parameters);
            generator.AppendTokens(prompt);
            Interlocked.Add(ref _prefilledInputTokens, prompt.Length);
            _metrics.RecordPrompt(0, prompt.Length);
            Log.CacheLookup(_logger, requestId, prompt.Length, 0, prompt.Length, false, false);

            TokenizerStream stream;
            lock (_tokenizerLock)
            {
                stream = _tokenizer.CreateStream();
            }

            using var streamScope = stream;
            var pipeline = new ReplyTextPipeline(null, request.StopSequences.Count > 0 ? new StopSequenceMatcher(request.StopSequences) : null);
            var contents = new List<AIContent>();
            var text = new StringBuilder();
            var limit = Math.Min(request.MaxOutputTokens ?? int.MaxValue, _contextTokens - prompt.Length);
            var output = 0;
            var finish = ChatFinishReason.Length;
            var firstTokenMs = 0.0;
            while (output < limit && !generator.IsDone())
            {
                token.ThrowIfCancellationRequested();
                var before = generator.TokenCount();
                generator.GenerateNextToken();
                if (output == 0)
                {
                    firstTokenMs = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
                }

                if (generator.TokenCount() == before)
                {
                    finish = ChatFinishReason.Stop; // End of sequence (the grammar is complete): not appended.
                    break;
                }

                output++;
                var stopped = pipeline.Append(stream.Decode(generator.GetSequence(0)[^1]), contents);
                Emit(writer, contents, reply, text);
                if (stopped)
                {
                    finish = ChatFinishReason.Stop;
                    break;
                }
            }

            if (finish == ChatFinishReason.Length && generator.IsDone() && output < limit)
            {
                finish = ChatFinishReason.Stop;
            }

            pipeline.Complete(contents);
            Emit(writer, contents, reply, text);
            if (finish == ChatFinishReason.Length)
            {
                throw new InvalidOperationException(
                    $"The structured (JSON) reply was cut after {output} tokens, before its JSON ended: raise ChatOptions.MaxOutputTokens.");
            }

            if (!pipeline.StoppedByString)
            {
                EnsureJson(text.ToString());
            }

            Interlocked.Add(ref _outputTokens, output);
            Log.ReplyFinished(_logger, requestId, output, finish.Value, firstTokenMs);
            _metrics.RecordReply(output, firstTokenMs / 1000, Stopwatch.GetElapsedTime(started).TotalSeconds);
            writer.TryWrite(new Event(null, finish, new UsageDetails
            {
                InputTokenCount = prompt.Length,
                CachedInputTokenCount = 0,
                OutputTokenCount = output,
                TotalTokenCount = prompt.Length + output,
                AdditionalCounts = new AdditionalPropertiesDictionary<long> { [KvChatUsage.PrefilledInputTokenCount] = prompt.Length },
            }));
            writer.TryComplete();
        }
        catch (OperationCanceledException e)
        {
            writer.TryComplete(e);
        }
        catch (OnnxRuntimeGenAIException e)
        {
            writer.TryComplete(new InvalidOperationException($"GenAI failed during a structured (JSON) reply: {e.Message}", e));
        }
        catch (Exception e)
        {
            writer.TryComplete(e);
        }
        finally
        {
            ExitCall();
        }
    }

    private static void EnsureJson(string text)
    {
        try
        {
            using var document = JsonDocument.Parse(text);
        }
        catch (JsonException e)
        {
            throw new InvalidOperationException(
                $"The model's structured reply is not valid JSON ({e.Message}): {(text.Length > 200 ? text[..200] + "..." : text)}", e);
        }
    }

    private void Generate(
        string requestId,
        int[] prompt,
        Request request,
        SessionPool<KvSession>.Lease lease,
        ChannelWriter<Event> writer,
        List<AIContent> reply,
        long started,
        CancellationToken token)
    {
        var session = lease.Session;
        var keep = Math.Min(lease.CommonPrefixLength, prompt.Length - 1);
        var vocab = _folder.VocabSize;
        var logits = ArrayPool<float>.Shared.Rent(vocab);
        var prefilled = false;
        Interlocked.Increment(ref _requests);
        try
        {
            token.ThrowIfCancellationRequested();
            Log.CacheLookup(_logger, requestId, prompt.Length, keep, prompt.Length - keep, lease.IsHit, lease.Evicted);
            _metrics.RecordLease(lease.Evicted);
            session.Prefill(prompt, keep);
            prefilled = true;
            Interlocked.Add(ref _cachedInputTokens, keep);
            Interlocked.Add(ref _prefilledInputTokens, prompt.Length - keep);
            _metrics.RecordPrompt(keep, prompt.Length - keep);

            var sampler = new LogitSampler(request.Sampling, vocab);
            TokenizerStream stream;
            lock (_tokenizerLock)
            {
                stream = _tokenizer.CreateStream();
            }

            using var streamScope = stream;
            var pipeline = new ReplyTextPipeline(
                request.ToolNames is null ? null : new ToolCallParser(_toolFormat!, request.ToolNames),
                request.StopSequences.Count > 0 ? new StopSequenceMatcher(request.StopSequences) : null);
            var forced = request.ForcedTokens;
            var contents = new List<AIContent>();
            var text = new StringBuilder();
            var limit = Math.Min(request.MaxOutputTokens ?? int.MaxValue, _contextTokens - prompt.Length + 1);
            var generated = new List<int>();
            var finish = ChatFinishReason.Length;
            var firstTokenMs = 0.0;
            float[]? promptLogits = null;
            while (generated.Count < limit)
            {
                token.ThrowIfCancellationRequested();
                DecodeStepHook?.Invoke(session, generated.Count);
                session.ReadLastLogits(logits.AsSpan(0, vocab));
                if (generated.Count == 0)
                {
                    promptLogits = Trace is null ? null : logits.AsSpan(0, vocab).ToArray();
                }

                // A required tool call starts with the format's opening (forced), then the model writes the rest.
                var isForced = generated.Count < forced.Length;
                var next = isForced ? forced[generated.Count] : sampler.Next(logits.AsSpan(0, vocab));
                if (generated.Count == 0)
                {
                    firstTokenMs = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
                }

                if (!isForced && _eos.Contains(next))
                {
                    finish = ChatFinishReason.Stop;
                    break;
                }

                generated.Add(next);
                sampler.Accept(next);
                var stopped = pipeline.Append(stream.Decode(next), contents);
                Emit(writer, contents, reply, text);
                if (stopped)
                {
                    finish = ChatFinishReason.Stop;
                    break;
                }

                if (!request.AllowMultipleToolCalls && pipeline.CallCount > 0)
                {
                    finish = ChatFinishReason.ToolCalls;
                    break;
                }

                if (generated.Count < limit)
                {
                    session.Append(next);
                }
            }

            pipeline.Complete(contents);
            Emit(writer, contents, reply, text);
            if (pipeline.CallCount > 0 && finish != ChatFinishReason.Length)
            {
                finish = ChatFinishReason.ToolCalls;
            }

            _pool.Commit(lease, CollectionsMarshal.AsSpan((List<int>)session.Tokens), prompt.Length);
            Trace?.Invoke(new ReplyTrace(prompt, keep, [.. generated], [.. session.Tokens], finish, promptLogits));
            lease.Release();
            if (!pipeline.StoppedByString && pipeline.CallCount == 0)
            {
                _renderer.RememberReply(text.ToString(), CollectionsMarshal.AsSpan(generated));
            }

            Interlocked.Add(ref _outputTokens, generated.Count);
            Log.ReplyFinished(_logger, requestId, generated.Count, finish.Value, firstTokenMs);
            _metrics.RecordReply(generated.Count, firstTokenMs / 1000, Stopwatch.GetElapsedTime(started).TotalSeconds);
            var usage = new UsageDetails
            {
                InputTokenCount = prompt.Length,
                CachedInputTokenCount = keep,
                OutputTokenCount = generated.Count,
                TotalTokenCount = prompt.Length + generated.Count,
                AdditionalCounts = new AdditionalPropertiesDictionary<long>
                {
                    [KvChatUsage.PrefilledInputTokenCount] = prompt.Length - keep,
                },
            };
            writer.TryWrite(new Event(null, finish, usage));
            writer.TryComplete();
        }
        catch (OperationCanceledException e)
        {
            // Cancellation comes between native calls: the session holds exactly its recorded tokens.
            _pool.Commit(lease, CollectionsMarshal.AsSpan((List<int>)session.Tokens), prefilled ? prompt.Length : null);
            lease.Release();
            writer.TryComplete(e);
        }
        catch (Exception e)
        {
            lease.Discard();
            _metrics.RecordDiscard();
            Log.SessionDiscarded(_logger, requestId, e);
            writer.TryComplete(e is OnnxRuntimeGenAIException
                ? new InvalidOperationException($"GenAI failed during the reply; the session was discarded: {e.Message}", e)
                : e);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(logits);
            ExitCall();
        }
    }
}

/// <summary>What one reply did, for tests.</summary>
internal sealed record ReplyTrace(int[] Prompt, int Cached, int[] Generated, int[] SessionTokens, ChatFinishReason Finish, float[]? PromptLogits);

/// <summary>Names of the extra counters in <see cref="UsageDetails.AdditionalCounts"/> that <see cref="KvChatClient"/> reports.</summary>
public static class KvChatUsage
{
    /// <summary>The prompt tokens computed for this request (the input tokens not served from the KV cache).</summary>
    public const string PrefilledInputTokenCount = "PrefilledInputTokenCount";
}
