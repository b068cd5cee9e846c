using Microsoft.Extensions.Logging;

namespace KvChat;

// KvChatClient: pinned prefixes kept on disk (KvChatClientOptions.PrefixCacheDirectory) and warm-up prompts.
public sealed partial class KvChatClient
{
    private readonly SemaphoreSlim _prefixLoadGate = new(1, 1);
    private PrefixStore? _prefixStore;
    private long _prefixesLoaded;
    private long _prefixesWritten;

    /// <summary>
    /// Prefills and pins every prefix of <see cref="KvChatClientOptions.WarmupPrompts"/>, in order (as
    /// <see cref="PrefillAsync"/> does; with <see cref="KvChatClientOptions.PrefixCacheDirectory"/> a prefix on disk is
    /// loaded instead). The dependency-injection registration calls this when the host starts.
    /// </summary>
    /// <param name="cancellationToken">Cancels the warm-up.</param>
    /// <returns>The number of tokens prefilled (0 when every prefix was cached or loaded from disk).</returns>
    /// <exception cref="ArgumentException">
    /// A warm-up prompt is invalid input (empty or malformed messages, or longer than a session's context): a
    /// configuration error, thrown so that a host does not start with it. Any other failure of one prompt is logged as a
    /// warning and the next prompt is warmed.
    /// </exception>
    /// <exception cref="ObjectDisposedException">The client is disposed.</exception>
    public async Task<int> WarmUpAsync(CancellationToken cancellationToken = default)
    {
        ThrowIfDisposed();
        var prefilled = 0;
        var prompts = _options.WarmupPrompts;
        for (var i = 0; i < prompts.Count; i++)
        {
            try
            {
                prefilled += await PrefillAsync(prompts[i], null, cancellationToken).ConfigureAwait(false);
            }
            catch (ArgumentException e)
            {
                throw new ArgumentException($"KvChatClientOptions.WarmupPrompts[{i}] is not a valid prompt: {e.Message}", e);
            }
            catch (Exception e) when (e is not (OperationCanceledException or ObjectDisposedException))
            {
                Log.WarmupFailed(_logger, i, e);
            }
        }

        return prefilled;
    }

    /// <summary>Gets the prefix store (for tests), or null without a usable directory.</summary>
    internal PrefixStore? PrefixStore => _prefixStore;

    /// <summary>
    /// Rejects a directory the generator backend could never use, before anything is loaded: GenAI generators cannot
    /// read or write their KV (GenAI has no API for it).
    /// </summary>
    private static void CheckPrefixCacheBackend(KvChatClientOptions options)
    {
        if (options.PrefixCacheDirectory is not null && options.SessionBackend == KvSessionBackend.Generator)
        {
            throw new ArgumentException(
                $"KvChatClientOptions.PrefixCacheDirectory is set ('{options.PrefixCacheDirectory}'), but KvChatClientOptions.SessionBackend is Generator: GenAI generators cannot save or load their KV, so prefixes cannot be kept on disk. Set SessionBackend to Auto or Owned, or leave PrefixCacheDirectory unset.",
                nameof(options));
        }
    }

    /// <summary>Opens the prefix directory for the owned backend; with the generator (Auto fell back) logs why it is unused.</summary>
    private void OpenPrefixStore(OwnedBackend? owned)
    {
        if (_options.PrefixCacheDirectory is not { } directory)
        {
            return;
        }

        if (owned is null)
        {
            Log.PrefixCacheUnused(_logger, directory, _backendFallbackReason ?? "the generator backend is in use");
            return;
        }

        ulong fingerprint;
        try
        {
            fingerprint = ModelFingerprint.Compute(_folder, _options.ChatTemplate ?? _folder.ChatTemplate);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Log.PrefixCacheUnused(_logger, directory, $"the model files could not be read for their fingerprint: {e.Message}");
            return;
        }

        _prefixStore = PrefixStore.Open(directory, _options.PrefixCacheMaxBytes, fingerprint, owned.Layout, _contextTokens, _logger);
    }

    /// <summary>
    /// When <paramref name="prompt"/> starts with a prefix on disk that no session holds, loads its KV into a session and
    /// pins it there, as <see cref="PrefillAsync"/> would have left it; the request's lease then finds it cached. Never
    /// fails the request for the disk's sake: a load that fails is logged and the prompt is prefilled as usual.
    /// </summary>
    private async ValueTask LoadPrefixAsync(int[] prompt, CancellationToken cancellationToken)
    {
        if (_prefixStore is not { Count: > 0 } store)
        {
            return;
        }

        try
        {
            // A prefix shorter than a block is never found by the pool's index: it would be loaded again every time.
            // The disk index is scanned first (a few entries, compared while their first tokens match); the pool is
            // asked only about a prefix found there, so a request whose prompt starts with none is not hashed twice.
            if (store.Find(prompt, _options.BlockSize - 1) is not { } entry)
            {
                return;
            }

            await _prefixLoadGate.WaitAsync(cancellationToken).ConfigureAwait(false);
            try
            {
                if (_pool.GetLongestCachedPrefix(entry.Tokens) < entry.Tokens.Length)
                {
                    await LoadAndPinAsync(store, entry, cancellationToken).ConfigureAwait(false);
                }
            }
            finally
            {
                _prefixLoadGate.Release();
            }
        }
        catch (Exception e) when (e is not (OperationCanceledException or ObjectDisposedException))
        {
            Log.PrefixLoadFailed(_logger, e);
        }
    }

    private async ValueTask LoadAndPinAsync(PrefixStore store, PrefixStore.Entry entry, CancellationToken cancellationToken)
    {
        var lease = await _pool.AcquireAsync(entry.Tokens, int.MaxValue, cancellationToken).ConfigureAwait(false);
        var loaded = false;
        try
        {
            _metrics.RecordLease(lease.Evicted);
            if (lease.CommonPrefixLength >= entry.Tokens.Length)
            {
                _pool.Commit(lease, TokensOf(lease.Session)); // Held already: keep it as it is.
            }
            else if (store.TryLoad(entry, lease.Session))
            {
                _pool.Commit(lease, entry.Tokens, entry.Tokens.Length);
                _pool.Pin(lease);
                loaded = true;
            }

            // Otherwise (logged by the store) the lease ends without a commit: the pool registers the session as empty.
        }
        catch
        {
            lease.Discard(); // Its state is unknown.
            _metrics.RecordDiscard();
            throw;
        }

        lease.Release();
        if (loaded)
        {
            Interlocked.Increment(ref _prefixesLoaded);
            _metrics.RecordPrefixLoaded();
        }
    }

    /// <summary>Writes a pinned prefix to the directory (the lease is still held); failures are logged, never thrown.</summary>
    private void SavePrefix(IKvSession session, int[] prompt)
    {
        if (_prefixStore is not { } store)
        {
            return;
        }

        try
        {
            if (store.Save(session, prompt))
            {
                Interlocked.Increment(ref _prefixesWritten);
            }
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            Log.PrefixSaveFailed(_logger, e);
        }
    }
}

// The client's log messages about the prefix directory and warm-ups (event ids 50-53).
internal static partial class Log
{
    [LoggerMessage(50, LogLevel.Warning, "KvChatClientOptions.PrefixCacheDirectory '{Directory}' is not used: the GenAI generator backend holds the KV and cannot save or load it ({Reason}).")]
    public static partial void PrefixCacheUnused(ILogger logger, string directory, string reason);

    [LoggerMessage(51, LogLevel.Warning, "Loading a prefix from the prefix cache directory failed: the prompt is prefilled instead.")]
    public static partial void PrefixLoadFailed(ILogger logger, Exception exception);

    [LoggerMessage(52, LogLevel.Warning, "Writing a pinned prefix to the prefix cache directory failed: it stays in memory only.")]
    public static partial void PrefixSaveFailed(ILogger logger, Exception exception);

    [LoggerMessage(53, LogLevel.Warning, "Warm-up prompt {Index} (KvChatClientOptions.WarmupPrompts) failed and is not pinned.")]
    public static partial void WarmupFailed(ILogger logger, int index, Exception exception);
}
