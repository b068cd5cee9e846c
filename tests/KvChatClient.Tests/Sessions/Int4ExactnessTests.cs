using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntimeGenAI;
using Xunit;

namespace KvChat.Tests.Sessions;

/// <summary>
/// int4 <c>MatMulNBits</c> at <c>accuracy_level</c> 4 (int8 activations, the CPU export of GenAI's model builder) on
/// ONNX Runtime's CPU kernels: a one-row Run (a decode step) computes a position to other bits than the same position
/// inside a prefill, while any Run of two or more rows agrees with one prefill. The load-time probe finds it on both
/// backends, and the cache stays exact: decode steps run two rows (<see cref="TwoRowDecodeTests"/>) or, with those
/// turned off, replies are prefilled again with the next turn (here); no prefill computes a one-token tail.
/// </summary>
public sealed class Int4ExactnessTests
{
    /// <summary>
    /// The smallest int4 kit shape whose greedy replies show it (measured, docs/benchmarks/peer/README.md): the
    /// Qwen2.5-0.5B widths (hidden 896, intermediate 4864), 2 layers, a small vocabulary.
    /// </summary>
    internal static readonly ModelKitOptions Int4Shape = ModelKitOptions.Tiny with
    {
        Precision = WeightPrecision.Int4,
        HiddenSize = 896,
        NumHeads = 14,
        NumKvHeads = 2,
        IntermediateSize = 4864,
        NumLayers = 2,
        VocabSize = 2048,
    };

    private static string Int4Path => TestModels.PathOf(Int4Shape);

    public static TheoryData<KvSessionBackend> Backends => TestBackends.Both;

    [Theory]
    [MemberData(nameof(Backends))]
    public void Probe_FindsOneRowRunsDiffer_PrefillsAgree_AndSaysSo(KvSessionBackend backend)
    {
        using var client = new KvChatClient(Int4Path, new KvChatClientOptions { SessionBackend = backend });
        var stats = client.GetService<KvCacheStatistics>()!;
        Assert.Equal(backend, stats.Backend);
        Assert.Contains("drift from a prefill", stats.CacheExactnessNote, StringComparison.Ordinal);
        Assert.Contains("runs two rows", stats.CacheExactnessNote, StringComparison.Ordinal);
        Assert.Contains("replies stay cached", stats.CacheExactnessNote, StringComparison.Ordinal);
        Assert.True(client.SessionBackend.RowExactness.TwoRowStepsMatch);

        // Two-row steps turned off: replies are prefilled again.
        using var recompute = new KvChatClient(Int4Path, new KvChatClientOptions { SessionBackend = backend, TwoRowDecodeSteps = false });
        Assert.Contains("prefilled again", recompute.GetService<KvCacheStatistics>()!.CacheExactnessNote, StringComparison.Ordinal);
        Assert.True(recompute.SessionBackend.RowExactness.RecomputesReplies);

        // accuracy_level 0 (float activations) and fp32 weights: decode steps differ within float rounding only.
        using var float32 = new KvChatClient(TestModels.PathOf(Int4Shape with { Int4AccuracyLevel = 0 }), new KvChatClientOptions { SessionBackend = backend });
        Assert.Contains("within float rounding", float32.GetService<KvCacheStatistics>()!.CacheExactnessNote, StringComparison.Ordinal);
        using var tiny = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny), new KvChatClientOptions { SessionBackend = backend });
        Assert.DoesNotContain("prefilled again", tiny.GetService<KvCacheStatistics>()!.CacheExactnessNote ?? string.Empty, StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(Backends))]
    public async Task Recompute_EveryTurn_EqualsAFreshPrefill_RepliesCountAsPrefilled(KvSessionBackend backend)
    {
        // One-row decode steps, as GenAI's own loop decodes: the replies equal GenAI's greedy replies.
        using var harness = new OracleHarness(Int4Path, new KvChatClientOptions { SessionBackend = backend, MaxSessions = 1, TwoRowDecodeSteps = false });
        var traces = await FourTurnsAsync(harness);

        // Every turn equals a fresh prefill (checked above); the previous reply's tokens, decoded one row per Run, were
        // prefilled again with each turn's, and counted so.
        Assert.Equal(4, harness.Checked);
        var prefilled = 0L;
        for (var turn = 0; turn < traces.Count; turn++)
        {
            Assert.Equal(turn == 0 ? 0 : traces[turn - 1].Prompt.Length, traces[turn].Cached);
            Assert.Equal(traces[turn].Prompt, traces[turn].SessionTokens);
            prefilled += traces[turn].Prompt.Length - traces[turn].Cached;
        }

        Assert.Equal(prefilled, harness.Client.GetService<KvCacheStatistics>()!.PrefilledInputTokens);
    }

    [Theory]
    [MemberData(nameof(Backends))]
    public async Task SamePromptTwice_NeverPrefillsAOneTokenTail_BothEqualAFreshPrefill(KvSessionBackend backend)
    {
        using var harness = new OracleHarness(Int4Path, new KvChatClientOptions { SessionBackend = backend, MaxSessions = 1 }, prefillGreedy: true);
        List<ChatMessage> history = [new(ChatRole.User, "Say something, then say it again.")];
        var options = new ChatOptions { MaxOutputTokens = 16 };
        await harness.AskAsync(history, options, TestContext.Current.CancellationToken);
        var prompt = harness.Last.Prompt.Length;

        // The same prompt again (a regenerated reply): all of it is cached, but its last two tokens are computed together.
        await harness.AskAsync(history, options, TestContext.Current.CancellationToken);
        Assert.Equal(prompt - 2, harness.Last.Cached);
        Assert.Equal(2, harness.Checked);
    }

    [Fact]
    public void OwnedPrefill_OfAChunkAndOneToken_IsBitIdenticalToOneGenAiPrefill()
    {
        using var backend = OwnedBackend.TryCreate(ModelFolder.Read(Int4Path), 512, 2, 2, out var reason) ?? throw new InvalidOperationException(reason);
        Assert.True(backend.RowExactness.AvoidsOneRowRuns);
        using var config = new Config(Int4Path);
        config.Overlay(IntraOpThreads.Overlay(2));
        using var model = new Model(config);
        var random = new Random(5);
        int[] prompt = [.. Enumerable.Range(0, 10 + OwnedBackend.PrefillChunk + 1).Select(_ => random.Next(3, Int4Shape.VocabSize))];

        using var session = backend.CreateSession();
        session.Extend(0, prompt.AsSpan(0, 10));
        session.Extend(10, prompt.AsSpan(10)); // Runs of 127 and 2 tokens: never a one-token chunk.
        using var generator = RawGeneration.NewGenerator(model, 512);
        generator.AppendTokens(prompt);
        var logits = new float[Int4Shape.VocabSize];
        session.ReadLastLogits(logits);
        Assert.Equal(RawGeneration.LastLogits(generator), logits);
    }

    [Fact]
    public void GeneratorPrefill_WithoutTheNativeLastLogits_PrefillsTheLastTokenWithTheRest()
    {
        using var config = new Config(Int4Path);
        config.Overlay(IntraOpThreads.Overlay(2));
        using var model = new Model(config);
        using var backend = new GeneratorBackend(model, 256, ModelFolder.Read(Int4Path).KvBytesPerToken, sharedBuffer: true, oneRunAtATime: false, Int4Shape.VocabSize, 1);
        Assert.True(backend.RowExactness.AvoidsOneRowRuns);
        var random = new Random(9);
        int[] prompt = [.. Enumerable.Range(0, 40).Select(_ => random.Next(3, Int4Shape.VocabSize))];

        using var session = (KvSession)backend.CreateSession();
        session.UseNativeLogits = false;
        session.Prefill(prompt, 0);
        using var generator = RawGeneration.NewGenerator(model, 256);
        generator.AppendTokens(prompt);
        var logits = new float[Int4Shape.VocabSize];
        session.ReadLastLogits(logits);
        Assert.Equal(RawGeneration.LastLogits(generator), logits);
    }

    [Fact]
    public async Task OwnedBatching_OfOneRowSteps_StaysOn_BatchedSteps_AreBitIdenticalToSingleSteps()
    {
        // With one-row steps (two-row steps off), batched decode rows are one-row sequences for attention, and
        // MatMulNBits at accuracy_level 4 computes a row to the same bits whatever the number of rows: the load-time
        // probe finds batching exact and keeps it.
        using var backend = OwnedBackend.TryCreate(ModelFolder.Read(Int4Path), 256, 4, 2, out var reason, twoRowSteps: false) ?? throw new InvalidOperationException(reason);
        Assert.Null(backend.BatchingNote);
        var sessions = Enumerable.Range(0, 2).Select(_ => backend.CreateSession()).ToArray();
        var random = new Random(3);
        int[][] prompts = [[.. Enumerable.Range(0, 21).Select(_ => random.Next(3, 2000))], [.. Enumerable.Range(0, 9).Select(_ => random.Next(3, 2000))]];
        var single = new float[2][];
        for (var i = 0; i < 2; i++)
        {
            sessions[i].Extend(0, prompts[i]);
            sessions[i].Append(40 + i);
            single[i] = new float[Int4Shape.VocabSize];
            sessions[i].ReadLastLogits(single[i]);
            sessions[i].Extend(prompts[i].Length, []);
        }

        Task[] steps;
        lock (backend.RunLock)
        {
            steps = [Task.Run(() => sessions[0].Append(40)), Task.Run(() => sessions[1].Append(41))];
            Assert.True(SpinWait.SpinUntil(() => backend.WaitingSteps == 2, TimeSpan.FromSeconds(30)));
        }

        await Task.WhenAll(steps);
        Assert.Equal(2, backend.GetStepStatistics().MaxBatchSize);
        for (var i = 0; i < 2; i++)
        {
            var batched = new float[Int4Shape.VocabSize];
            sessions[i].ReadLastLogits(batched);
            Assert.Equal(single[i], batched);
            sessions[i].Dispose();
        }
    }

    [Fact]
    public void RowExactness_KeepAndTail_FollowTheProbe()
    {
        var recompute = new RowExactness(SingleRowsMatch: false, SingleRowDrift: 0.08f, ChunksMatch: true, LogitRange: 20f);
        Assert.True(recompute.RecomputesReplies);
        Assert.False(recompute.DecodesTwoRows);
        Assert.Equal(2, recompute.MinimumTail);
        Assert.Equal(8, recompute.Keep(9, 10));
        Assert.Equal(8, recompute.Keep(8, 10));
        Assert.Equal(0, recompute.Keep(0, 1));
        Assert.Contains("prefilled again", recompute.Note, StringComparison.Ordinal);
        Assert.Contains("not bit-identical", recompute.Note, StringComparison.Ordinal);

        // Two-row steps found exact: they are taken, replies are kept, and prefills still keep a tail of two.
        var twoRows = recompute with { TwoRowStepsMatch = true };
        Assert.True(twoRows.DecodesTwoRows);
        Assert.False(twoRows.RecomputesReplies);
        Assert.Equal(2, twoRows.MinimumTail);
        Assert.Equal(8, twoRows.Keep(9, 10));
        Assert.Contains("runs two rows", twoRows.Note, StringComparison.Ordinal);
        var off = twoRows with { TwoRowStepsAllowed = false };
        Assert.False(off.DecodesTwoRows);
        Assert.True(off.RecomputesReplies);
        Assert.Contains("prefilled again", off.Note, StringComparison.Ordinal);
        Assert.DoesNotContain("not bit-identical", off.Note, StringComparison.Ordinal);

        var rounding = new RowExactness(SingleRowsMatch: false, SingleRowDrift: 2e-5f, ChunksMatch: true, LogitRange: 20f, TwoRowStepsMatch: true);
        Assert.False(rounding.RecomputesReplies);
        Assert.False(rounding.DecodesTwoRows);
        Assert.Equal(9, rounding.Keep(9, 10));
        Assert.Equal(1, rounding.MinimumTail);
        Assert.Contains("within float rounding", rounding.Note, StringComparison.Ordinal);

        Assert.Equal(9, RowExactness.Exact.Keep(9, 10));
        Assert.Null(RowExactness.Exact.Note);

        var near = new RowExactness(SingleRowsMatch: false, SingleRowDrift: 0.08f, ChunksMatch: false, LogitRange: 20f);
        Assert.False(near.RecomputesReplies);
        Assert.Equal(9, near.Keep(9, 10));
        Assert.Contains("near-exact", near.Note, StringComparison.Ordinal);
    }

    /// <summary>Asks four turns of one conversation through <paramref name="harness"/> (the oracle checks each) and returns their traces.</summary>
    internal static async Task<List<ReplyTrace>> FourTurnsAsync(OracleHarness harness)
    {
        List<ChatMessage> history = [new(ChatRole.System, "You are a terse assistant for the int4 oracle.")];
        var traces = new List<ReplyTrace>();
        for (var turn = 0; turn < 4; turn++)
        {
            history.Add(new ChatMessage(ChatRole.User, $"Question number {turn}: what follows {turn * 7}?"));
            var response = await harness.AskAsync(history, new ChatOptions { MaxOutputTokens = 24 }, TestContext.Current.CancellationToken);
            traces.Add(harness.Last);
            history.AddRange(response.Messages);
        }

        return traces;
    }
}
