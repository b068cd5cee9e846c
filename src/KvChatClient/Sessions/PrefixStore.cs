using System.IO.Hashing;
using Microsoft.Extensions.Logging;

namespace KvChat;

/// <summary>
/// Pinned prefixes on disk (<see cref="KvChatClientOptions.PrefixCacheDirectory"/>): their token ids and KV, one file per
/// prefix (<see cref="PrefixFileFormat"/>), so that a new client over the same model loads them instead of prefilling.
/// </summary>
/// <remarks>
/// <para>
/// <b>Index at open, KV on first use.</b> Opening reads only each file's headers (its fingerprint, layout and token ids,
/// and checks its length): a few bytes per file, so construction stays fast however many prefixes are kept, and no KV
/// memory is taken for a prefix no request asks for. A request whose prompt starts with an indexed prefix loads its KV
/// then (<see cref="TryLoad"/>), which also verifies the checksum.
/// </para>
/// <para>
/// <b>Never fails a request.</b> A file of another model (its name tells), a file whose contents do not match its name, a
/// zero-length, truncated or corrupted file, a file deleted meanwhile, a directory that cannot be written, a full disk:
/// each is logged as a warning and the prefix is prefilled as if the file were not there. Files that cannot be right are
/// deleted; files of other models are left to their model's clients (and to the size bound).
/// </para>
/// <para>
/// <b>Atomic writes; shared directories.</b> A file is written to <c>name.tmp-&lt;guid&gt;</c>, flushed, and renamed over
/// its final name. The rename replaces the directory entry at once, so a reader (in this or another process) opens
/// either the old complete file or the new one, never a partial one; two writers of the same prefix each rename a
/// complete file and the last wins. No fsync: after a power loss a renamed file may be torn, and then fails its length
/// or checksum check and is ignored, which costs a prefill, never a wrong reply. Temporary files older than
/// <see cref="StaleTempAge"/> are left by a crash (a write takes milliseconds) and deleted.
/// </para>
/// <para>
/// <b>Size bound.</b> After each write the directory's prefix files (of every model) are deleted least recently used
/// first until they fit <see cref="KvChatClientOptions.PrefixCacheMaxBytes"/>; "used" is written or loaded, recorded as
/// the file's last-write time (access times are not kept on many file systems).
/// </para>
/// <para>
/// Why hand-written: the KV is the owned backend's own memory layout, and no .NET library offers a size-bounded,
/// multi-process file cache; the pieces used (atomic <see cref="File.Move(string, string, bool)"/>, XxHash64) are the
/// runtime's.
/// </para>
/// </remarks>
internal sealed partial class PrefixStore
{
    /// <summary>The age after which a temporary file is taken for the remains of an interrupted write.</summary>
    public static readonly TimeSpan StaleTempAge = TimeSpan.FromMinutes(10);

    private readonly string _directory;
    private readonly long _maxBytes;
    private readonly ulong _fingerprint;
    private readonly KvSnapshotFormat.Layout _layout;
    private readonly int _maxTokens;
    private readonly ILogger _logger;
    private readonly Lock _lock = new();
    private readonly Dictionary<string, Entry> _entries = new(StringComparer.Ordinal);
    private DateTime _lastStamp;

    private PrefixStore(string directory, long maxBytes, ulong fingerprint, KvSnapshotFormat.Layout layout, int maxTokens, ILogger logger)
    {
        _directory = directory;
        _maxBytes = maxBytes;
        _fingerprint = fingerprint;
        _layout = layout;
        _maxTokens = maxTokens;
        _logger = logger;
    }

    /// <summary>A prefix file of this model: its path and the token ids it holds.</summary>
    public sealed record Entry(string Path, int[] Tokens);

    /// <summary>Gets the directory.</summary>
    public string Directory => _directory;

    /// <summary>Gets the number of indexed prefixes.</summary>
    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _entries.Count;
            }
        }
    }

    /// <summary>Creates a temporary file for writing (a test hook: a stream that fails as a full disk does).</summary>
    internal Func<string, Stream> OpenWrite { get; set; } = static path => new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16);

    /// <summary>
    /// Opens (creating it if needed) and indexes the directory, or returns <see langword="null"/> when it cannot be
    /// created or listed (logged).
    /// </summary>
    public static PrefixStore? Open(string directory, long maxBytes, ulong fingerprint, KvSnapshotFormat.Layout layout, int maxTokens, ILogger logger)
    {
        string full;
        try
        {
            full = Path.GetFullPath(directory);
            System.IO.Directory.CreateDirectory(full);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            LogDirectoryUnusable(logger, directory, e.Message);
            return null;
        }

        var store = new PrefixStore(full, maxBytes, fingerprint, layout, maxTokens, logger);
        try
        {
            store.Index();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            LogDirectoryUnusable(logger, directory, e.Message);
            return null;
        }

        return store;
    }

    /// <summary>Gets the longest indexed prefix longer than <paramref name="longerThan"/> that <paramref name="prompt"/> starts with, or null.</summary>
    /// <remarks>A linear scan: a directory holds a handful of pinned prefixes per model, compared only while their first tokens match.</remarks>
    public Entry? Find(ReadOnlySpan<int> prompt, int longerThan)
    {
        Entry? best = null;
        lock (_lock)
        {
            foreach (var entry in _entries.Values)
            {
                if (entry.Tokens.Length <= prompt.Length
                    && entry.Tokens.Length > Math.Max(longerThan, best?.Tokens.Length ?? 0)
                    && prompt.StartsWith(entry.Tokens.AsSpan()))
                {
                    best = entry;
                }
            }
        }

        return best;
    }

    /// <summary>
    /// Loads <paramref name="entry"/>'s KV into <paramref name="session"/>. Returns false (logged) when the file is gone,
    /// unreadable or fails a check; the session then holds nothing, and a file that cannot be right is deleted.
    /// </summary>
    public bool TryLoad(Entry entry, IKvSession session)
    {
        try
        {
            using (var stream = new FileStream(entry.Path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete, 1 << 16))
            {
                PrefixFileFormat.ReadHeader(stream, _fingerprint);
                session.Load(stream);
                if (stream.Position != stream.Length)
                {
                    throw new InvalidDataException($"the file has {stream.Length - stream.Position} bytes after its checksum.");
                }
            }

            if (!session.Tokens.SequenceEqual(entry.Tokens))
            {
                throw new InvalidDataException("the file holds other tokens than when it was indexed.");
            }

            Touch(entry.Path);
            LogLoaded(_logger, entry.Tokens.Length, entry.Path);
            return true;
        }
        catch (InvalidDataException e)
        {
            Forget(entry.Path);
            TryDelete(entry.Path);
            LogBadFile(_logger, entry.Path, e.Message);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Forget(entry.Path);
            LogUnreadable(_logger, entry.Path, e.Message);
        }

        // The session may hold part of the file's KV: whatever it held is gone (Load cleared its tokens first).
        return false;
    }

    /// <summary>
    /// Writes the first <paramref name="tokens"/>.Length tokens <paramref name="session"/> holds (which are
    /// <paramref name="tokens"/>) and their KV, unless this prefix's file is there already (then it is marked used).
    /// Failures are logged; nothing is thrown for the file system's sake.
    /// </summary>
    /// <returns>Whether a file was written.</returns>
    public bool Save(IKvSession session, ReadOnlySpan<int> tokens)
    {
        var name = PrefixFileFormat.FileName(_fingerprint, tokens);
        var path = Path.Combine(_directory, name);
        bool known;
        lock (_lock)
        {
            known = _entries.TryGetValue(path, out var entry) && tokens.SequenceEqual(entry.Tokens.AsSpan());
        }

        if (known && File.Exists(path))
        {
            Touch(path);
            return false;
        }

        var length = PrefixFileFormat.Length(_layout, tokens.Length);
        if (length > _maxBytes)
        {
            LogTooLarge(_logger, tokens.Length, length, _maxBytes);
            return false;
        }

        var temp = path + PrefixFileFormat.TempMarker + Guid.NewGuid().ToString("N");
        try
        {
            using (var stream = OpenWrite(temp))
            {
                PrefixFileFormat.WriteHeader(stream, _fingerprint);
                session.Save(stream, tokens.Length);
                stream.Flush();
            }

            File.Move(temp, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            TryDelete(temp);
            LogWriteFailed(_logger, path, e.Message);
            return false;
        }

        Touch(path);
        lock (_lock)
        {
            _entries[path] = new Entry(path, tokens.ToArray());
        }

        LogWritten(_logger, tokens.Length, path);
        Prune(keep: path);
        return true;
    }

    private void Index()
    {
        var others = 0;
        var ours = PrefixFileFormat.NamePrefix(_fingerprint);
        foreach (var path in System.IO.Directory.EnumerateFiles(_directory))
        {
            var name = Path.GetFileName(path);
            if (name.Contains(PrefixFileFormat.TempMarker, StringComparison.Ordinal))
            {
                RemoveIfStale(path);
            }
            else if (!name.EndsWith(PrefixFileFormat.Extension, StringComparison.Ordinal))
            {
                continue; // Not ours: never touched.
            }
            else if (!name.StartsWith(ours, StringComparison.Ordinal))
            {
                others++;
            }
            else if (ReadEntry(path) is { } entry)
            {
                _entries[path] = entry;
            }
        }

        if (others > 0)
        {
            LogOtherModels(_logger, others, _directory);
        }

        Prune(keep: null);
    }

    private Entry? ReadEntry(string path)
    {
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete, 4096);
            if (stream.Length == 0)
            {
                throw new InvalidDataException("the file is empty (zero length).");
            }

            PrefixFileFormat.ReadHeader(stream, _fingerprint);
            var tokens = KvSnapshotFormat.ReadHeader(stream, new XxHash64(), _layout, _maxTokens);
            var expected = PrefixFileFormat.Length(_layout, tokens.Length);
            if (stream.Length != expected)
            {
                throw new InvalidDataException($"the file has {stream.Length} bytes; {tokens.Length} tokens of this layout take {expected} (truncated or overwritten).");
            }

            var name = PrefixFileFormat.FileName(_fingerprint, tokens);
            if (!string.Equals(Path.GetFileName(path), name, StringComparison.Ordinal))
            {
                throw new InvalidDataException($"the file holds the prefix named {name}.");
            }

            return new Entry(path, tokens);
        }
        catch (InvalidDataException e)
        {
            TryDelete(path);
            LogBadFile(_logger, path, e.Message);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            LogUnreadable(_logger, path, e.Message);
        }

        return null;
    }

    private void RemoveIfStale(string path)
    {
        try
        {
            if (DateTime.UtcNow - File.GetLastWriteTimeUtc(path) > StaleTempAge)
            {
                File.Delete(path);
                LogStaleTemp(_logger, path);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Another client removed or is finishing it.
        }
    }

    /// <summary>Deletes the least recently used prefix files (of every model) until the directory fits the bound.</summary>
    private void Prune(string? keep)
    {
        List<FileInfo> files;
        try
        {
            files = [.. new DirectoryInfo(_directory).EnumerateFiles("*" + PrefixFileFormat.Extension).OrderBy(f => f.LastWriteTimeUtc)];
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            LogUnreadable(_logger, _directory, e.Message);
            return;
        }

        var total = files.Sum(f => f.Length);
        foreach (var file in files)
        {
            if (total <= _maxBytes)
            {
                break;
            }

            if (string.Equals(file.FullName, keep, StringComparison.Ordinal))
            {
                continue;
            }

            total -= file.Length;
            Forget(file.FullName);
            if (TryDelete(file.FullName))
            {
                LogPruned(_logger, file.FullName, _maxBytes);
            }
        }
    }

    /// <summary>Marks a file used now (its last-write time, never earlier than the last mark this store made).</summary>
    private void Touch(string path)
    {
        DateTime stamp;
        lock (_lock)
        {
            var now = DateTime.UtcNow;
            stamp = _lastStamp = now > _lastStamp ? now : _lastStamp.AddTicks(10);
        }

        try
        {
            File.SetLastWriteTimeUtc(path, stamp);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Deleted meanwhile, or read-only: it is then pruned earlier than it would be.
        }
    }

    private void Forget(string path)
    {
        lock (_lock)
        {
            _entries.Remove(path);
        }
    }

    private static bool TryDelete(string path)
    {
        try
        {
            File.Delete(path);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }
}
