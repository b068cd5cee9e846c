using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntimeGenAI;
using Xunit;

namespace KvChat.Tests.Sessions;

/// <summary>The owned-KV backend against GenAI and against itself: prefill, fork, batched steps, save and load.</summary>
public sealed class OwnedBackendTests
{
    private static readonly string TinyPath = TestModels.PathOf(ModelKitOptions.Tiny);

    [Fact]
    public void ConcatVariant_IsDeclined_WithTheReason_ForcedOwnedThrows_AutoFallsBack()
    {
        var path = TestModels.PathOf(TestModels.TinyConcat);
        Assert.Null(OwnedBackend.TryCreate(ModelFolder.Read(path), 256, 2, 1, out var reason));
        Assert.Contains("past_present_share_buffer", reason, StringComparison.Ordinal);

        var error = Assert.Throws<NotSupportedException>(() => new KvChatClient(path, new KvChatClientOptions { SessionBackend = KvSessionBackend.Owned }));
        Assert.Contains(reason!, error.Message, StringComparison.Ordinal);

        using var client = new KvChatClient(path);
        var stats = client.GetService<KvCacheStatistics>()!;
        Assert.Equal(KvSessionBackend.Generator, stats.Backend);
        Assert.Equal(reason, stats.BackendFallbackReason);
    }

    [Fact]
    public void KitDecoder_IsDrivenAndBatched_GeneratorIsForcedBySetting()
    {
        using (var client = new KvChatClient(TinyPath))
        {
            var stats = client.GetService<KvCacheStatistics>()!;
            Assert.Equal(KvSessionBackend.Owned, stats.Backend);
            Assert.Null(stats.BackendFallbackReason);
            Assert.Null(stats.DecodeBatchingNote);
        }

        using var generator = new KvChatClient(TinyPath, new KvChatClientOptions { SessionBackend = KvSessionBackend.Generator });
        Assert.Equal(KvSessionBackend.Generator, generator.GetService<KvCacheStatistics>()!.Backend);
    }

    [Fact]
    public void Prefill_AndSteps_AreBitIdenticalToGenAi()
    {
        using var backend = Create();
        using var model = new Model(TinyPath);
        using var generator = RawGeneration.NewGenerator(model, 256);
        using var session = backend.CreateSession();
        var prompt = Prompt(40, 3);
        session.Extend(0, prompt);
        generator.AppendTokens(prompt);
        Assert.Equal(RawGeneration.LastLogits(generator), Logits(session));
        foreach (var token in new[] { 7, 300, 12 })
        {
            session.Append(token);
            generator.AppendTokens([token]);
            Assert.Equal(RawGeneration.LastLogits(generator), Logits(session));
        }
    }

    [Fact]
    public void LongPrefill_InChunks_MatchesGenAi()
    {
        using var backend = Create(context: 512);
        using var model = new Model(TinyPath);
        using var generator = RawGeneration.NewGenerator(model, 512);
        using var session = backend.CreateSession();
        var prompt = Prompt((OwnedBackend.PrefillChunk * 2) + 37, 5);
        session.Extend(0, prompt);
        generator.AppendTokens(prompt);
        Assert.True(RawGeneration.MaxAbsDifference(RawGeneration.LastLogits(generator), Logits(session)) < 1e-4f);
    }

    [Fact]
    public void Fork_ThenExtend_IsBitIdenticalToPrefillingThePrefix_SourceUntouched()
    {
        using var backend = Create();
        var prompt = Prompt(40, 1);
        var tail = Prompt(9, 2);
        using var source = backend.CreateSession();
        using var fork = backend.CreateSession();
        using var direct = backend.CreateSession();
        source.Extend(0, prompt);

        fork.CopyPrefixFrom(source, prompt.AsSpan(0, 25));
        Assert.Equal(prompt[..25], fork.Tokens);
        fork.Extend(25, tail);
        direct.Extend(0, prompt.AsSpan(0, 25));
        direct.Extend(25, tail);
        Assert.Equal(Logits(direct), Logits(fork));
        Assert.Equal([.. prompt[..25], .. tail], fork.Tokens);

        using var reference = backend.CreateSession();
        reference.Extend(0, prompt);
        reference.Append(5);
        source.Append(5);
        Assert.Equal(Logits(reference), Logits(source));
    }

    [Fact]
    public async Task ConcurrentSteps_RunInOneBatch_BitIdenticalToSingleSteps_PaddingRowUntouched()
    {
        using var backend = Create();
        var sessions = Enumerable.Range(0, 3).Select(_ => (OwnedSession)backend.CreateSession()).ToArray();
        Assert.Equal([0, 1, 2], sessions.Select(s => s.Slot));
        int[] lengths = [11, 30, 4];
        int[] tokens = [40, 41, 42];
        for (var i = 0; i < 3; i++)
        {
            sessions[i].Extend(0, Prompt(lengths[i], 10 + i));
        }

        var single = new float[3][];
        for (var i = 0; i < 3; i++)
        {
            sessions[i].Append(tokens[i]);
            single[i] = Logits(sessions[i]);
            sessions[i].Extend(lengths[i], []);
        }

        // Sessions 0 and 2 step together; slot 1 between them is a padding row of that Run.
        Task[] steps;
        lock (backend.RunLock)
        {
            steps = [Task.Run(() => sessions[0].Append(tokens[0])), Task.Run(() => sessions[2].Append(tokens[2]))];
            Assert.True(SpinWait.SpinUntil(() => backend.WaitingSteps == 2, TimeSpan.FromSeconds(30)));
        }

        await Task.WhenAll(steps);
        Assert.Equal(2, backend.GetStepStatistics().MaxBatchSize);
        Assert.Equal(single[0], Logits(sessions[0]));
        Assert.Equal(single[2], Logits(sessions[2]));
        sessions[1].Append(tokens[1]);
        Assert.Equal(single[1], Logits(sessions[1]));
        foreach (var session in sessions)
        {
            session.Dispose();
        }
    }

    [Fact]
    public void SaveLoad_RoundTrip_IsExact_DamagedSnapshotsAreRejected()
    {
        using var backend = Create();
        var prompt = Prompt(40, 4);
        var tail = Prompt(6, 8);
        using var source = backend.CreateSession();
        source.Extend(0, prompt);
        var snapshot = new MemoryStream();
        source.Save(snapshot, 30);
        var bytes = snapshot.ToArray();

        using var loaded = backend.CreateSession();
        Assert.Equal(30, loaded.Load(new MemoryStream(bytes)));
        Assert.Equal(prompt[..30], loaded.Tokens);
        loaded.Extend(30, tail);
        using var direct = backend.CreateSession();
        direct.Extend(0, prompt.AsSpan(0, 30));
        direct.Extend(30, tail);
        Assert.Equal(Logits(direct), Logits(loaded));

        var corrupted = bytes.ToArray();
        corrupted[bytes.Length / 2] ^= 0x40;
        Assert.Contains("checksum", Assert.Throws<InvalidDataException>(() => loaded.Load(new MemoryStream(corrupted))).Message, StringComparison.Ordinal);
        Assert.Equal(0, loaded.TokenCount);
        Assert.Contains("truncated", Assert.Throws<InvalidDataException>(() => loaded.Load(new MemoryStream(bytes[..^20]))).Message, StringComparison.Ordinal);
        var otherLayout = bytes.ToArray();
        otherLayout[8]++; // The layer count.
        Assert.Contains("Layout", Assert.Throws<InvalidDataException>(() => loaded.Load(new MemoryStream(otherLayout))).Message, StringComparison.Ordinal);
        Assert.Throws<InvalidDataException>(() => loaded.Load(new MemoryStream("not a snapshot"u8.ToArray())));
        Assert.Equal(0, loaded.TokenCount);
    }

    [Fact]
    public void GeneratorSessions_CannotFork()
    {
        using var model = new Model(TinyPath);
        using var session = new KvSession(model, 64, 1, true);
        Assert.False(session.CanFork);
        Assert.Throws<NotSupportedException>(() => session.Save(Stream.Null, 1));
        Assert.Throws<NotSupportedException>(() => session.Load(Stream.Null));
        Assert.Throws<NotSupportedException>(() => session.CopyPrefixFrom(session, []));
    }

    [Fact]
    public async Task NewConversation_WhileAnotherDecodes_ForksTheBusySessionsPrompt_RepliesMatchTheOracle()
    {
        using var harness = new OracleHarness(TinyPath, new KvChatClientOptions { MaxSessions = 2, SessionBackend = KvSessionBackend.Owned });
        const string System = "A system prompt long enough to span several blocks of the prefix index, shared by both conversations.";
        using var decoding = new ManualResetEventSlim();
        using var proceed = new ManualResetEventSlim();
        var held = 0;
        harness.Client.DecodeStepHook = (_, generated) =>
        {
            if (generated == 2 && Interlocked.Exchange(ref held, 1) == 0)
            {
                decoding.Set();
                proceed.Wait(TimeSpan.FromSeconds(60));
            }
        };
        var first = harness.Client.GetResponseAsync([new(ChatRole.System, System), new(ChatRole.User, "First conversation")], new ChatOptions { MaxOutputTokens = 6 }, TestContext.Current.CancellationToken);
        Assert.True(decoding.Wait(TimeSpan.FromSeconds(60)));

        var second = await harness.AskAsync([new(ChatRole.System, System), new(ChatRole.User, "Second conversation")], new ChatOptions { MaxOutputTokens = 6 }, TestContext.Current.CancellationToken);
        var stats = harness.Client.GetService<KvCacheStatistics>()!;
        Assert.Equal(1, stats.Forks);
        Assert.Equal(1, stats.BusySessions);
        Assert.True(second.Usage!.CachedInputTokenCount > 20, $"cached {second.Usage.CachedInputTokenCount}");
        Assert.Equal(stats.ForkedTokens, second.Usage.CachedInputTokenCount);

        proceed.Set();
        var firstReply = await first;
        Assert.Equal(ChatRole.Assistant, firstReply.Messages[0].Role);
        harness.Client.DecodeStepHook = null;
        var again = await harness.AskAsync([new(ChatRole.System, System), new(ChatRole.User, "First conversation"), .. firstReply.Messages, new(ChatRole.User, "And then?")], new ChatOptions { MaxOutputTokens = 6 }, TestContext.Current.CancellationToken);
        Assert.True(again.Usage!.CachedInputTokenCount > second.Usage.CachedInputTokenCount);
    }

    [Fact]
    public async Task ConversationTakenOver_IsParked_AndComesBackByACopy_RepliesMatchTheOracle()
    {
        using var harness = new OracleHarness(TinyPath, new KvChatClientOptions { MaxSessions = 1, SessionBackend = KvSessionBackend.Owned });
        const string System = "A system prompt that both conversations share, long enough for a few index blocks.";
        List<ChatMessage> a = [new(ChatRole.System, System), new(ChatRole.User, "Conversation A asks its first question here")];
        a.AddRange((await harness.AskAsync(a, new ChatOptions { MaxOutputTokens = 8 }, TestContext.Current.CancellationToken)).Messages);
        var heldByA = harness.Last.SessionTokens.Length;

        // B takes the only session over; A's tokens are parked first.
        await harness.AskAsync([new(ChatRole.System, System), new(ChatRole.User, "Conversation B")], new ChatOptions { MaxOutputTokens = 8 }, TestContext.Current.CancellationToken);
        var stats = harness.Client.GetService<KvCacheStatistics>()!;
        Assert.Equal(1, stats.Sessions);
        Assert.Equal(1, stats.ParkedConversations);
        var blockTokens = (heldByA + OwnedBackend.ParkedBlockTokens - 1) / OwnedBackend.ParkedBlockTokens * OwnedBackend.ParkedBlockTokens;
        Assert.Equal(blockTokens * (long)ModelFolder.Read(TinyPath).KvBytesPerToken, stats.ParkedBytes);

        // A comes back: its whole history is copied from the parked KV (B's is parked in turn), only the new turn is prefilled.
        a.Add(new ChatMessage(ChatRole.User, "And A's second question"));
        var again = await harness.AskAsync(a, new ChatOptions { MaxOutputTokens = 8 }, TestContext.Current.CancellationToken);
        Assert.True(again.Usage!.CachedInputTokenCount >= heldByA - 1, $"cached {again.Usage.CachedInputTokenCount} of the {heldByA} A held");
        stats = harness.Client.GetService<KvCacheStatistics>()!;
        Assert.Equal(1, stats.ParkedConversations); // A's copy went live again; B's was parked.
        Assert.True(stats.Forks >= 1);
    }

    [Fact]
    public void GraphScan_ReadsTheDecodersOperators_WithoutParsingWeights()
    {
        var gqa = DecoderGraphScan.OperatorTypes(Path.Combine(TinyPath, "model.onnx"));
        Assert.Contains("com.microsoft:GroupQueryAttention", gqa);
        Assert.Contains("MatMul", gqa);
        var concat = DecoderGraphScan.OperatorTypes(Path.Combine(TestModels.PathOf(TestModels.TinyConcat), "model.onnx"));
        Assert.DoesNotContain("com.microsoft:GroupQueryAttention", concat);
        Assert.Contains("Concat", concat);
        var junk = Path.Combine(TestModels.RunDirectory, "junk.onnx");
        File.WriteAllBytes(junk, [0x3A, 0xFF, 0xFF, 0xFF, 0x0F]);
        Assert.Throws<InvalidDataException>(() => DecoderGraphScan.OperatorTypes(junk));
    }

    [Fact]
    public async Task ScriptedModel_ConcurrentConversations_SayTheScript_BatchedOrNot()
    {
        const string Script = "the scripted reply";
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny with { Script = Script }), new KvChatClientOptions { MaxSessions = 4, SessionBackend = KvSessionBackend.Owned });
        for (var round = 0; round < 3; round++)
        {
            var replies = await Task.WhenAll(Enumerable.Range(0, 4).Select(i => Task.Run(() => client.GetResponseAsync(
                [new(ChatRole.System, "Scripted."), new(ChatRole.User, new string('q', 1 + (i * 7)) + $" round {round}")],
                new ChatOptions { MaxOutputTokens = 40 },
                TestContext.Current.CancellationToken))));
            Assert.All(replies, r => Assert.Equal(Script, r.Text));
        }

        // The kit's script layer reads its position from the mask's width, so right-padded rows would see another
        // position: the load-time probe finds that batched steps differ and turns batching off.
        var stats = client.GetService<KvCacheStatistics>()!;
        Assert.Contains("not bit-identical", stats.DecodeBatchingNote, StringComparison.Ordinal);
        Assert.Equal(1, stats.MaxDecodeBatchSize);
    }

    private static OwnedBackend Create(int context = 256) => OwnedTestSessions.Create(context);

    private static int[] Prompt(int length, int seed) => OwnedTestSessions.Prompt(length, seed);

    private static float[] Logits(IKvSession session) => OwnedTestSessions.Logits(session);
}
