using System.Buffers.Binary;
using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;
using Xunit;

namespace KvChat.Tests.Sessions;

/// <summary>
/// Pinned prefixes on disk (<see cref="KvChatClientOptions.PrefixCacheDirectory"/>): a second client serves them without
/// prefill and says what a fresh prefill says; every bad file is logged and never used; writes are atomic.
/// </summary>
public sealed class PrefixCacheDirectoryTests
{
    private const string System = "You are the assistant of a small shop that sells tea, teapots and cups. Answer briefly and politely, in English.";

    private static readonly string TinyPath = TestModels.PathOf(ModelKitOptions.Tiny);

    private static CancellationToken Cancel => TestContext.Current.CancellationToken;

    private static List<ChatMessage> Prefix(string system = System) => [new(ChatRole.System, system)];

    private static List<ChatMessage> Ask(string system = System) => [new(ChatRole.System, system), new(ChatRole.User, "Do you sell green tea?")];

    private static ChatOptions Greedy => new() { MaxOutputTokens = 8 };

    [Fact]
    public async Task SecondClient_ServesThePinnedPrefixFromDisk_PrefillsOnlyTheTail_SaysWhatAFreshPrefillSays()
    {
        var directory = NewDirectory();
        int prefixTokens;
        using (var first = new KvChatClient(TinyPath, Options(directory)))
        {
            prefixTokens = await first.PrefillAsync(Prefix(), cancellationToken: Cancel);
            Assert.True(prefixTokens >= 16);
            Assert.Equal(1, first.GetService<KvCacheStatistics>()!.PrefixesWrittenToDisk);
        }

        Assert.Single(PrefixFiles(directory));
        Assert.Empty(TempFiles(directory));

        var modelId = "disk-" + Guid.NewGuid().ToString("N")[..8];
        using var metrics = MetricRecorder.ForModel(modelId);
        var options = Options(directory);
        options.ModelId = modelId;
        using var harness = new OracleHarness(TinyPath, options);
        Assert.Equal(1, harness.Client.PrefixStore!.Count);
        var response = await harness.AskAsync(Ask(), Greedy, Cancel);
        Assert.Equal(1, metrics.Sum(KvChatMetricNames.PrefixesLoaded));
        Assert.Equal(prefixTokens, response.Usage!.CachedInputTokenCount);
        Assert.Equal(response.Usage.InputTokenCount - prefixTokens, response.Usage.AdditionalCounts![KvChatUsage.PrefilledInputTokenCount]);
        var stats = harness.Client.GetService<KvCacheStatistics>()!;
        Assert.Equal(1, stats.PrefixesLoadedFromDisk);
        Assert.Equal(1, stats.PinnedSessions);
        Assert.True(stats.KvBytes >= stats.KvBytesPerSession);

        // Pinning the same prefix again prefills nothing and rewrites no file.
        Assert.Equal(0, await harness.Client.PrefillAsync(Prefix(), cancellationToken: Cancel));
        Assert.Equal(0, harness.Client.GetService<KvCacheStatistics>()!.PrefixesWrittenToDisk);
        Assert.Single(PrefixFiles(directory));

        // Without the directory the same request is prefilled whole (the control).
        using var cold = new OracleHarness(TinyPath, new KvChatClientOptions { MaxSessions = 2 });
        var coldResponse = await cold.AskAsync(Ask(), Greedy, Cancel);
        Assert.Equal(0, coldResponse.Usage!.CachedInputTokenCount);
        Assert.Equal(coldResponse.Text, response.Text);
    }

    public static TheoryData<string> Corruptions => new() { "empty", "truncated", "kv-byte", "checksum-byte", "magic", "fingerprint", "layout", "tokens" };

    [Theory]
    [MemberData(nameof(Corruptions))]
    public async Task BadFile_IsLoggedDeletedAndNeverServed_TheRequestIsPrefilledAndCorrect(string corruption)
    {
        var directory = NewDirectory();
        await WriteFileAsync(directory);
        var file = Assert.Single(PrefixFiles(directory));
        Corrupt(file, corruption);

        var logs = new CapturingLoggerProvider();
        using var factory = LoggerFactory.Create(b => b.AddProvider(logs));
        using var harness = new OracleHarness(TinyPath, Options(directory, factory));
        var response = await harness.AskAsync(Ask(), Greedy, Cancel);

        Assert.Equal(0, response.Usage!.CachedInputTokenCount);
        Assert.Equal(0, harness.Client.GetService<KvCacheStatistics>()!.PrefixesLoadedFromDisk);
        Assert.Contains(logs.Entries, e => e.Level == LogLevel.Warning && e.Message.Contains(Path.GetFileName(file), StringComparison.Ordinal));
        Assert.False(File.Exists(file));

        // The next pin (held in memory by the request's session) rewrites it.
        Assert.Equal(0, await harness.Client.PrefillAsync(Prefix(), cancellationToken: Cancel));
        Assert.Single(PrefixFiles(directory));
    }

    [Fact]
    public async Task FileDeletedUnderTheClient_IsLogged_TheRequestIsPrefilled()
    {
        var directory = NewDirectory();
        await WriteFileAsync(directory);
        var logs = new CapturingLoggerProvider();
        using var factory = LoggerFactory.Create(b => b.AddProvider(logs));
        using var harness = new OracleHarness(TinyPath, Options(directory, factory));
        Assert.Equal(1, harness.Client.PrefixStore!.Count);
        File.Delete(Assert.Single(PrefixFiles(directory)));

        var response = await harness.AskAsync(Ask(), Greedy, Cancel);
        Assert.Equal(0, response.Usage!.CachedInputTokenCount);
        Assert.Contains(logs.Entries, e => e.Level == LogLevel.Warning && e.Message.Contains("could not be read", StringComparison.Ordinal));
        Assert.Equal(0, harness.Client.PrefixStore.Count);
    }

    [Fact]
    public async Task OtherModelsFiles_AreNotUsed_NotDeleted_AndOneRenamedToThisModelsName_IsDetected()
    {
        var directory = NewDirectory();
        var otherPath = TestModels.PathOf(ModelKitOptions.Tiny with { Seed = 7, NumLayers = 3 });
        using (var other = new KvChatClient(otherPath, Options(directory)))
        {
            await other.PrefillAsync(Prefix(), cancellationToken: Cancel);
        }

        var otherFile = Assert.Single(PrefixFiles(directory));
        var logs = new CapturingLoggerProvider();
        using var factory = LoggerFactory.Create(b => b.AddProvider(logs));
        using (var harness = new OracleHarness(TinyPath, Options(directory, factory)))
        {
            Assert.Equal(0, harness.Client.PrefixStore!.Count);
            var response = await harness.AskAsync(Ask(), Greedy, Cancel);
            Assert.Equal(0, response.Usage!.CachedInputTokenCount);
            Assert.Contains(logs.Entries, e => e.Level == LogLevel.Warning && e.Message.Contains("another model", StringComparison.Ordinal));
        }

        Assert.True(File.Exists(otherFile));

        // The same file under the name this model's file of that prefix would have: its header gives it away.
        var folder = ModelFolder.Read(TinyPath);
        var tokens = ReadTokens(otherFile);
        var renamed = Path.Combine(directory, PrefixFileFormat.FileName(ModelFingerprint.Compute(folder, folder.ChatTemplate), tokens));
        File.Move(otherFile, renamed);
        using var second = new OracleHarness(TinyPath, Options(directory, factory));
        Assert.Equal(0, second.Client.PrefixStore!.Count);
        var again = await second.AskAsync(Ask(), Greedy, Cancel);
        Assert.Equal(0, again.Usage!.CachedInputTokenCount);
        Assert.False(File.Exists(renamed));
        Assert.Contains(logs.Entries, e => e.Level == LogLevel.Warning && e.Message.Contains("written for another model", StringComparison.Ordinal));
    }

    [Fact]
    public void Fingerprint_ChangesWithTheTemplateTheTokenizerAndTheWeights()
    {
        var folder = ModelFolder.Read(TinyPath);
        var baseline = ModelFingerprint.Compute(folder, folder.ChatTemplate);
        Assert.Equal(baseline, ModelFingerprint.Compute(ModelFolder.Read(TinyPath), folder.ChatTemplate));
        Assert.NotEqual(baseline, ModelFingerprint.Compute(folder, folder.ChatTemplate + " "));

        var copy = Path.Combine(TestModels.RunDirectory, "fingerprint-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(copy);
        foreach (var file in Directory.GetFiles(TinyPath))
        {
            File.Copy(file, Path.Combine(copy, Path.GetFileName(file)));
        }

        Assert.Equal(baseline, ModelFingerprint.Compute(ModelFolder.Read(copy), folder.ChatTemplate));
        File.AppendAllText(Path.Combine(copy, "tokenizer.json"), " ");
        var tokenizerChanged = ModelFingerprint.Compute(ModelFolder.Read(copy), folder.ChatTemplate);
        Assert.NotEqual(baseline, tokenizerChanged);
        var decoder = Path.Combine(copy, folder.Decoder.FileName);
        var bytes = File.ReadAllBytes(decoder);
        bytes[bytes.Length / 2] ^= 1;
        File.WriteAllBytes(decoder, bytes);
        Assert.NotEqual(tokenizerChanged, ModelFingerprint.Compute(ModelFolder.Read(copy), folder.ChatTemplate));
    }

    [Fact]
    public async Task TempFiles_OldOnesAreRemoved_FreshOnesLeftToTheirWriter_NeitherIsUsed()
    {
        var directory = NewDirectory();
        await WriteFileAsync(directory);
        var file = Assert.Single(PrefixFiles(directory));
        var stale = file + PrefixFileFormat.TempMarker + Guid.NewGuid().ToString("N");
        var fresh = file + PrefixFileFormat.TempMarker + Guid.NewGuid().ToString("N");
        File.Copy(file, stale);
        File.WriteAllBytes(fresh, new byte[] { 1, 2, 3 });
        File.SetLastWriteTimeUtc(stale, DateTime.UtcNow - PrefixStore.StaleTempAge - TimeSpan.FromMinutes(1));
        File.Delete(file);

        using var client = new KvChatClient(TinyPath, Options(directory));
        Assert.Equal(0, client.PrefixStore!.Count);
        Assert.False(File.Exists(stale));
        Assert.True(File.Exists(fresh));
    }

    [Fact]
    public async Task FullDisk_IsLogged_LeavesNoFile_ThePrefixStaysPinnedInMemory()
    {
        var directory = NewDirectory();
        var logs = new CapturingLoggerProvider();
        using var factory = LoggerFactory.Create(b => b.AddProvider(logs));
        using var client = new KvChatClient(TinyPath, Options(directory, factory));

        // /dev/full fails every write with ENOSPC, as a full disk does.
        client.PrefixStore!.OpenWrite = temp =>
        {
            File.WriteAllBytes(temp, Array.Empty<byte>());
            return new FileStream("/dev/full", FileMode.Open, FileAccess.Write, FileShare.ReadWrite, 4096);
        };
        Assert.True(await client.PrefillAsync(Prefix(), cancellationToken: Cancel) > 0);

        Assert.Empty(Directory.GetFiles(directory));
        Assert.Contains(logs.Entries, e => e.Level == LogLevel.Warning && e.Message.Contains("could not be written", StringComparison.Ordinal));
        var stats = client.GetService<KvCacheStatistics>()!;
        Assert.Equal(0, stats.PrefixesWrittenToDisk);
        Assert.Equal(1, stats.PinnedSessions);
        var response = await client.GetResponseAsync(Ask(), Greedy, Cancel);
        Assert.True(response.Usage!.CachedInputTokenCount > 0);
    }

    [Fact]
    public async Task Write_IsAtomic_TheFinalNameHoldsTheOldCompleteFileOrNothingUntilTheRename()
    {
        var directory = NewDirectory();
        await WriteFileAsync(directory);
        var file = Assert.Single(PrefixFiles(directory));
        var old = File.ReadAllBytes(file);
        File.Delete(file);

        // First write: nothing under the final name while the bytes go out.
        var seen = new List<bool>();
        using (var client = new KvChatClient(TinyPath, Options(directory)))
        {
            client.PrefixStore!.OpenWrite = temp => new ObservingStream(new FileStream(temp, FileMode.CreateNew), () => seen.Add(File.Exists(file)));
            await client.PrefillAsync(Prefix(), cancellationToken: Cancel);
        }

        Assert.NotEmpty(seen);
        Assert.All(seen, exists => Assert.False(exists));
        Assert.Equal(old, File.ReadAllBytes(file));

        // A rewrite (another process wrote the file after this client indexed the directory): readers see the old
        // complete bytes until the rename replaces them.
        File.Delete(file);
        var during = new List<byte[]>();
        using (var client = new KvChatClient(TinyPath, Options(directory)))
        {
            File.WriteAllBytes(file, old);
            client.PrefixStore!.OpenWrite = temp => new ObservingStream(new FileStream(temp, FileMode.CreateNew), () => during.Add(File.ReadAllBytes(file)));
            await client.PrefillAsync(Prefix(), cancellationToken: Cancel);
            Assert.Equal(1, client.GetService<KvCacheStatistics>()!.PrefixesWrittenToDisk);
        }

        Assert.NotEmpty(during);
        Assert.All(during, bytes => Assert.Equal(old, bytes));
        Assert.Empty(TempFiles(directory));
    }

    [Fact]
    public async Task TwoClients_WritingTheSamePrefixAtOnce_LeaveOneValidFile_AThirdServesIt()
    {
        var directory = NewDirectory();
        for (var round = 0; round < 3; round++)
        {
            foreach (var file in Directory.GetFiles(directory))
            {
                File.Delete(file);
            }

            using var a = new KvChatClient(TinyPath, Options(directory));
            using var b = new KvChatClient(TinyPath, Options(directory));
            await Task.WhenAll(
                Task.Run(() => a.PrefillAsync(Prefix(), cancellationToken: Cancel), Cancel),
                Task.Run(() => b.PrefillAsync(Prefix(), cancellationToken: Cancel), Cancel));
            Assert.Single(PrefixFiles(directory));
            Assert.Empty(TempFiles(directory));

            using var third = new OracleHarness(TinyPath, Options(directory));
            var response = await third.AskAsync(Ask(), Greedy, Cancel);
            Assert.True(response.Usage!.CachedInputTokenCount > 0);
            Assert.Equal(1, third.Client.GetService<KvCacheStatistics>()!.PrefixesLoadedFromDisk);
        }
    }

    [Fact]
    public async Task SizeBound_DeletesTheLeastRecentlyUsedFile_ALoadCountsAsAUse()
    {
        var directory = NewDirectory();
        string[] systems = [System + " Shop A.", System + " Shop B.", System + " Shop C."];
        await WriteFileAsync(directory, systems[0]);
        var size = new FileInfo(Assert.Single(PrefixFiles(directory))).Length;
        var bound = (size * 5) / 2; // Two files fit, three do not.
        var names = new List<string>();
        foreach (var system in systems)
        {
            names.Add(Path.Combine(directory, PrefixFileFormat.FileName(Fingerprint(), await TokensAsync(system))));
        }

        string FileOf(int i) => names[i];

        using (var first = new KvChatClient(TinyPath, Options(directory, maxBytes: bound)))
        {
            await first.PrefillAsync(Prefix(systems[1]), cancellationToken: Cancel);
        }

        Assert.True(File.Exists(FileOf(0)) && File.Exists(FileOf(1)));
        using var second = new KvChatClient(TinyPath, Options(directory, maxBytes: bound));
        var response = await second.GetResponseAsync(Ask(systems[0]), Greedy, Cancel); // Loads A: A is now newer than B.
        Assert.True(response.Usage!.CachedInputTokenCount > 0);
        await second.PrefillAsync(Prefix(systems[2]), cancellationToken: Cancel);

        Assert.True(File.Exists(FileOf(0)));
        Assert.False(File.Exists(FileOf(1)));
        Assert.True(File.Exists(FileOf(2)));
        Assert.True(PrefixFiles(directory).Sum(f => new FileInfo(f).Length) <= bound);
    }

    [Fact]
    public async Task PrefixLargerThanTheBound_IsNotWritten()
    {
        var directory = NewDirectory();
        using var client = new KvChatClient(TinyPath, Options(directory, maxBytes: 1024));
        Assert.True(await client.PrefillAsync(Prefix(), cancellationToken: Cancel) > 0);
        Assert.Empty(Directory.GetFiles(directory));
    }

    [Fact]
    public async Task DirectoryThatCannotBeCreated_IsLogged_TheClientWorks()
    {
        var blocker = Path.Combine(NewDirectory(), "a-file");
        File.WriteAllText(blocker, "not a directory");
        var logs = new CapturingLoggerProvider();
        using var factory = LoggerFactory.Create(b => b.AddProvider(logs));
        using var client = new KvChatClient(TinyPath, Options(Path.Combine(blocker, "prefixes"), factory));

        Assert.Null(client.PrefixStore);
        Assert.Contains(logs.Entries, e => e.Level == LogLevel.Warning && e.Message.Contains("cannot be used", StringComparison.Ordinal));
        Assert.True(await client.PrefillAsync(Prefix(), cancellationToken: Cancel) > 0);
        var response = await client.GetResponseAsync(Ask(), Greedy, Cancel);
        Assert.True(response.Usage!.CachedInputTokenCount > 0);
    }

    [Fact]
    public void GeneratorForced_WithADirectory_ThrowsNamingBoth()
    {
        var error = Assert.Throws<ArgumentException>(() => new KvChatClient(TinyPath, new KvChatClientOptions
        {
            SessionBackend = KvSessionBackend.Generator,
            PrefixCacheDirectory = NewDirectory(),
        }));
        Assert.Contains("PrefixCacheDirectory", error.Message, StringComparison.Ordinal);
        Assert.Contains("SessionBackend is Generator", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AutoFellBackToTheGenerator_LogsOnceThatTheDirectoryIsUnused_WritesNothing()
    {
        var directory = NewDirectory();
        var logs = new CapturingLoggerProvider();
        using var factory = LoggerFactory.Create(b => b.AddProvider(logs));
        using var client = new KvChatClient(TestModels.PathOf(TestModels.TinyConcat), Options(directory, factory));
        await client.PrefillAsync(Prefix(), cancellationToken: Cancel);
        await client.GetResponseAsync(Ask(), Greedy, Cancel);

        Assert.Single(logs.Entries, e => e.Level == LogLevel.Warning && e.Message.Contains("PrefixCacheDirectory", StringComparison.Ordinal));
        Assert.Empty(Directory.GetFiles(directory));
    }

    [Fact]
    public void Options_ValidateTheDirectoryAndTheBound()
    {
        var options = new KvChatClientOptions();
        Assert.Null(options.PrefixCacheDirectory);
        Assert.Equal(2L << 30, options.PrefixCacheMaxBytes);
        Assert.Throws<ArgumentException>(() => options.PrefixCacheDirectory = " ");
        Assert.Throws<ArgumentException>(() => options.PrefixCacheDirectory = "a\0b");
        Assert.Throws<ArgumentOutOfRangeException>(() => options.PrefixCacheMaxBytes = 0);
        options.PrefixCacheDirectory = null;
    }

    private static async Task WriteFileAsync(string directory, string system = System)
    {
        using var client = new KvChatClient(TinyPath, Options(directory));
        await client.PrefillAsync(Prefix(system), cancellationToken: Cancel);
    }

    private static void Corrupt(string file, string corruption)
    {
        var bytes = File.ReadAllBytes(file);
        var tokensAt = PrefixFileFormat.HeaderBytes + 24;
        var kvAt = PrefixFileFormat.HeaderBytes + KvSnapshotFormat.HeaderBytes + (4 * BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(tokensAt)));
        switch (corruption)
        {
            case "empty":
                bytes = [];
                break;
            case "truncated":
                bytes = bytes[..(bytes.Length / 2)];
                break;
            case "kv-byte":
                bytes[kvAt + ((bytes.Length - 8 - kvAt) / 2)] ^= 0x10;
                break;
            case "checksum-byte":
                bytes[^3] ^= 0x01;
                break;
            case "magic":
                bytes[0] = (byte)'X';
                break;
            case "fingerprint":
                bytes[9] ^= 0x40;
                break;
            case "layout":
                BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(PrefixFileFormat.HeaderBytes + 12), 1 + BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(PrefixFileFormat.HeaderBytes + 12)));
                break;
            case "tokens":
                bytes[tokensAt + 4] ^= 0x01; // The first token id: the file no longer holds the prefix its name says.
                break;
        }

        File.WriteAllBytes(file, bytes);
    }

    private static int[] ReadTokens(string file)
    {
        var bytes = File.ReadAllBytes(file);
        var at = PrefixFileFormat.HeaderBytes + 24;
        var count = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(at));
        return [.. Enumerable.Range(0, count).Select(i => BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(at + 4 + (4 * i))))];
    }

    private static ulong Fingerprint()
    {
        var folder = ModelFolder.Read(TinyPath);
        return ModelFingerprint.Compute(folder, folder.ChatTemplate);
    }

    private static async Task<int[]> TokensAsync(string system)
    {
        var directory = NewDirectory();
        await WriteFileAsync(directory, system);
        return ReadTokens(Assert.Single(PrefixFiles(directory)));
    }

    private static KvChatClientOptions Options(string directory, ILoggerFactory? logs = null, long? maxBytes = null)
    {
        var options = new KvChatClientOptions { PrefixCacheDirectory = directory, LoggerFactory = logs, MaxSessions = 2 };
        if (maxBytes is { } bound)
        {
            options.PrefixCacheMaxBytes = bound;
        }

        return options;
    }

    private static string NewDirectory()
    {
        var directory = Path.Combine(TestModels.RunDirectory, "prefixes-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(directory);
        return directory;
    }

    private static string[] PrefixFiles(string directory) => Directory.GetFiles(directory, "*" + PrefixFileFormat.Extension);

    private static string[] TempFiles(string directory) => [.. Directory.GetFiles(directory).Where(f => f.Contains(PrefixFileFormat.TempMarker, StringComparison.Ordinal))];

    /// <summary>A write-through stream that calls back at every write after the first (the file is half written).</summary>
    private sealed class ObservingStream(Stream inner, Action onWrite) : Stream
    {
        private int _writes;

        public override bool CanRead => false;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => inner.Length;

        public override long Position { get => inner.Position; set => throw new NotSupportedException(); }

        public override void Flush() => inner.Flush();

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            if (_writes++ > 0)
            {
                onWrite();
            }

            inner.Write(buffer);
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                inner.Dispose();
            }

            base.Dispose(disposing);
        }
    }
}
