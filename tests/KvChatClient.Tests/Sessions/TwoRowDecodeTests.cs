using System.Collections.Concurrent;
using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntimeGenAI;
using Xunit;

namespace KvChat.Tests.Sessions;

/// <summary>
/// Two-row decode steps on the int4 kit shape at <c>accuracy_level</c> 4, where one-row Runs drift from prefills: each
/// step computes the previous token again with the new one, so every position a session holds has the bits of one
/// prefill, replies stay cached, and each reply token is what a fresh prefill of everything before it says
/// (<see cref="RawGeneration.PrefillGreedy"/>). The fp32 path keeps one-row, batched steps.
/// </summary>
public sealed class TwoRowDecodeTests
{
    private const int Vocab = 2048;

    private static string Int4Path => TestModels.PathOf(Int4ExactnessTests.Int4Shape);

    public static TheoryData<KvSessionBackend> Backends => TestBackends.Both;

    /// <summary>How a reply is cut short.</summary>
    public enum Cut
    {
        MaxOutputTokens,
        StopSequence,
        Cancellation,
    }

    public static TheoryData<Cut, KvSessionBackend> Cuts => TestBackends.OnBoth(Enum.GetValues<Cut>());

    [Theory]
    [MemberData(nameof(Backends))]
    public void TwoRowSteps_GiveTheBitsOfOnePrefill_AtEveryStep_WhereOneRowStepsDrift(KvSessionBackend kind)
    {
        using var config = new Config(Int4Path);
        config.Overlay(IntraOpThreads.Overlay(2));
        using var model = new Model(config);
        using var owned = kind == KvSessionBackend.Owned
            ? OwnedBackend.TryCreate(ModelFolder.Read(Int4Path), 256, 2, 2, out var reason) ?? throw new InvalidOperationException(reason)
            : null;
        using var generator = kind == KvSessionBackend.Generator
            ? new GeneratorBackend(model, 256, ModelFolder.Read(Int4Path).KvBytesPerToken, sharedBuffer: true, oneRunAtATime: false, Vocab, 1)
            : null;
        IKvBackend backend = (IKvBackend?)owned ?? generator!;
        Assert.True(backend.RowExactness.DecodesTwoRows);

        var random = new Random(5);
        int[] tokens = [.. Enumerable.Range(0, 60).Select(_ => random.Next(3, Vocab))];
        using var twoRows = backend.CreateSession();
        using var oneRow = owned is not null ? owned.CreateSession(twoRowSteps: false) : new KvSession(model, 256, 1, sharedBuffer: true);
        twoRows.Extend(0, tokens.AsSpan(0, 20));
        oneRow.Extend(0, tokens.AsSpan(0, 20));
        var actual = new float[Vocab];
        var drift = 0f;
        for (var n = 20; n < tokens.Length; n++)
        {
            twoRows.Append(tokens[n]);
            oneRow.Append(tokens[n]);
            using var fresh = RawGeneration.NewGenerator(model, 256);
            fresh.AppendTokens(tokens.AsSpan(0, n + 1));
            var expected = RawGeneration.LastLogits(fresh);
            twoRows.ReadLastLogits(actual);
            Assert.Equal(expected, actual);
            oneRow.ReadLastLogits(actual);
            drift = Math.Max(drift, RawGeneration.MaxAbsDifference(expected, actual));
        }

        Assert.Equal(tokens, twoRows.Tokens);
        Assert.True(drift > 1e-3f, $"one-row steps drifted only {drift}: the shape no longer shows why two-row steps exist");
    }

    [Theory]
    [MemberData(nameof(Backends))]
    public async Task Conversation_RepliesStayCached_EveryTurnEqualsAFreshPrefill(KvSessionBackend backend)
    {
        using var harness = new OracleHarness(Int4Path, new KvChatClientOptions { SessionBackend = backend, MaxSessions = 1 }, prefillGreedy: true);
        Assert.True(harness.Client.SessionBackend.RowExactness.DecodesTwoRows);
        var traces = await Int4ExactnessTests.FourTurnsAsync(harness);

        // Every turn equals a fresh prefill (checked above). The session keeps each reply, and the next turn serves it
        // from the cache: its tokens count as cached, only the new ones as prefilled.
        Assert.Equal(4, harness.Checked);
        var prefilled = 0L;
        for (var turn = 0; turn < traces.Count; turn++)
        {
            var trace = traces[turn];
            Assert.Equal(trace.Prompt, trace.SessionTokens.Take(trace.Prompt.Length));
            Assert.Equal(trace.Generated.SkipLast(1), trace.SessionTokens.Skip(trace.Prompt.Length).Take(trace.Generated.Length - 1));
            if (turn > 0)
            {
                var before = traces[turn - 1].SessionTokens;
                Assert.Equal(before, trace.Prompt.Take(before.Length));
                Assert.Equal(before.Length, trace.Cached);
                Assert.True(
                    trace.Cached >= traces[turn - 1].Prompt.Length + traces[turn - 1].Generated.Length - 1,
                    $"turn {turn} cached {trace.Cached} of a previous prompt of {traces[turn - 1].Prompt.Length} and a reply of {traces[turn - 1].Generated.Length}");
            }

            prefilled += trace.Prompt.Length - trace.Cached;
        }

        var stats = harness.Client.GetService<KvCacheStatistics>()!;
        Assert.Equal(prefilled, stats.PrefilledInputTokens);
        Assert.Equal(traces.Sum(t => (long)t.Cached), stats.CachedInputTokens);
    }

    [Theory]
    [MemberData(nameof(Cuts))]
    public async Task CutReply_KeepsWhatWasDecoded_NextTurnEqualsAFreshPrefill(Cut cut, KvSessionBackend backend)
    {
        using var harness = new OracleHarness(Int4Path, new KvChatClientOptions { SessionBackend = backend, MaxSessions = 1 }, prefillGreedy: true);
        List<ChatMessage> history = [new(ChatRole.System, "A system prompt for a reply cut short."), new(ChatRole.User, "Tell me a long story.")];
        var options = new ChatOptions { MaxOutputTokens = 24 };
        string text;
        int[]? cancelledSession = null;
        switch (cut)
        {
            case Cut.MaxOutputTokens:
                text = (await harness.AskAsync(history, new ChatOptions { MaxOutputTokens = 7 }, TestContext.Current.CancellationToken)).Text;
                break;
            case Cut.StopSequence:
                var full = await harness.AskAsync(history, options, TestContext.Current.CancellationToken);
                var fullLength = harness.Last.Generated.Length;
                var stop = full.Text.Substring(full.Text.Length / 2, 3);
                var stopped = new ChatOptions { MaxOutputTokens = 24, StopSequences = [stop] };
                text = (await harness.AskAsync(history, stopped, TestContext.Current.CancellationToken)).Text;
                Assert.True(harness.Last.Generated.Length < fullLength, "the stop sequence cut the reply");
                Assert.DoesNotContain(stop, text, StringComparison.Ordinal);
                break;
            default:
                using (var cts = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken))
                {
                    harness.Client.DecodeStepHook = (session, generated) =>
                    {
                        if (generated == 9)
                        {
                            cancelledSession = [.. session.Tokens]; // The prompt and the 9 tokens decoded so far.
                            cts.Cancel();
                        }
                    };
                    var streamed = new System.Text.StringBuilder();
                    await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
                    {
                        await foreach (var update in harness.Client.GetStreamingResponseAsync(history, options, cts.Token))
                        {
                            streamed.Append(update.Text);
                        }
                    });
                    harness.Client.DecodeStepHook = null;
                    text = streamed.ToString();
                }

                break;
        }

        // What the session holds after the cut reply: its prompt and the tokens decoded (a cancelled reply has no trace).
        var (sessionTokens, promptLength) = cancelledSession is { } tokens ? (tokens, tokens.Length - 9) : (harness.Last.SessionTokens, harness.Last.Prompt.Length);
        Assert.True(sessionTokens.Length > promptLength + 2, "the cut reply's decoded positions stay in the session");
        history.Add(new ChatMessage(ChatRole.Assistant, text));
        history.Add(new ChatMessage(ChatRole.User, "Go on."));
        await harness.AskAsync(history, options, TestContext.Current.CancellationToken);
        var next = harness.Last;

        // The next turn keeps the cut turn's prompt and as much of its reply as the new prompt shares with the session
        // (never the last position alone as a one-token tail), and equals a fresh prefill.
        var shared = next.Prompt.AsSpan().CommonPrefixLength(sessionTokens);
        Assert.True(shared > promptLength, "the next prompt starts with the cut reply's tokens");
        Assert.Equal(next.Prompt.Length - shared == 1 ? shared - 1 : Math.Min(shared, next.Prompt.Length - 1), next.Cached);
        Assert.Equal(cut switch { Cut.MaxOutputTokens => 2, Cut.StopSequence => 3, _ => 1 }, harness.Checked);
    }

    [Fact]
    public async Task OwnedConcurrentSteps_RunOneSessionAtATime_EachEqualsItsStepAlone()
    {
        // ONNX Runtime's CPU GroupQueryAttention takes two rows after cached positions for a batch of one only: the
        // sessions' steps gather as before but each runs in its own Run of two rows.
        using var backend = OwnedBackend.TryCreate(ModelFolder.Read(Int4Path), 256, 4, 2, out var reason) ?? throw new InvalidOperationException(reason);
        Assert.Equal(OwnedBackend.TwoRowBatchingNote, backend.BatchingNote);
        var sessions = Enumerable.Range(0, 3).Select(_ => backend.CreateSession()).ToArray();
        var random = new Random(3);
        int[][] prompts = [.. new[] { 21, 9, 33 }.Select(n => Enumerable.Range(0, n).Select(_ => random.Next(3, 2000)).ToArray())];
        var single = new float[3][];
        for (var i = 0; i < 3; i++)
        {
            sessions[i].Extend(0, prompts[i]);
            sessions[i].Append(40 + i);
            single[i] = new float[Vocab];
            sessions[i].ReadLastLogits(single[i]);
            sessions[i].Extend(prompts[i].Length, []);
        }

        Task[] steps;
        lock (backend.RunLock)
        {
            steps = [.. Enumerable.Range(0, 3).Select(i => Task.Run(() => sessions[i].Append(40 + i)))];
            Assert.True(SpinWait.SpinUntil(() => backend.WaitingSteps == 3, TimeSpan.FromSeconds(30)));
        }

        await Task.WhenAll(steps);
        Assert.Equal(1, backend.GetStepStatistics().MaxBatchSize);
        using var config = new Config(Int4Path);
        config.Overlay(IntraOpThreads.Overlay(2));
        using var model = new Model(config);
        for (var i = 0; i < 3; i++)
        {
            var gathered = new float[Vocab];
            sessions[i].ReadLastLogits(gathered);
            Assert.Equal(single[i], gathered);
            using var fresh = RawGeneration.NewGenerator(model, 256);
            fresh.AppendTokens([.. prompts[i], 40 + i]);
            Assert.Equal(RawGeneration.LastLogits(fresh), gathered);
            sessions[i].Dispose();
        }
    }

    [Fact]
    public async Task ConcurrentConversations_OnTheOwnedBackend_EveryTurnEqualsAFreshPrefill()
    {
        using var harness = new OracleHarness(Int4Path, new KvChatClientOptions { SessionBackend = KvSessionBackend.Owned, MaxSessions = 3 }, prefillGreedy: true);
        var traces = new ConcurrentQueue<ReplyTrace>();
        harness.Client.Trace = traces.Enqueue;
        var options = new ChatOptions { MaxOutputTokens = 16 };
        var conversations = Enumerable.Range(0, 3).Select(c => Task.Run(async () =>
        {
            List<ChatMessage> history = [new(ChatRole.System, $"Conversation {c} of three at once.")];
            for (var turn = 0; turn < 2; turn++)
            {
                history.Add(new ChatMessage(ChatRole.User, $"Turn {turn} of conversation {c}."));
                history.AddRange((await harness.Client.GetResponseAsync(history, options, TestContext.Current.CancellationToken)).Messages);
            }
        }));
        await Task.WhenAll(conversations);

        Assert.Equal(6, traces.Count);
        foreach (var trace in traces)
        {
            Assert.Equal(harness.Fresh(trace.Prompt, 16), trace.Generated);
        }

        Assert.Equal(3, traces.Count(t => t.Cached > 0));
        var stats = harness.Client.GetService<KvCacheStatistics>()!;
        Assert.Equal(1, stats.MaxDecodeBatchSize);
        Assert.Equal(OwnedBackend.TwoRowBatchingNote, stats.DecodeBatchingNote);
    }

    [Theory]
    [MemberData(nameof(Backends))]
    public void Float32_DecodesOneRow_AndBatches(KvSessionBackend backend)
    {
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny), new KvChatClientOptions { SessionBackend = backend });
        var exactness = client.SessionBackend.RowExactness;
        Assert.False(exactness.AvoidsOneRowRuns);
        Assert.False(exactness.DecodesTwoRows);
        Assert.False(exactness.TwoRowStepsMatch); // Not even probed.
        Assert.Equal(1, exactness.MinimumTail);
        using var session = client.SessionBackend.CreateSession();
        Assert.False(session is OwnedSession { TwoRowSteps: true } or KvSession { TwoRowSteps: true });
        if (backend == KvSessionBackend.Owned)
        {
            Assert.Null(client.GetService<KvCacheStatistics>()!.DecodeBatchingNote);
        }
    }
}
