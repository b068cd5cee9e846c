using Xunit;

namespace KvChat.Tests.Sessions;

/// <summary>
/// The owned backend's prefill Runs: <see cref="OwnedBackend.LongPrefillChunk"/> tokens per Run while no session
/// decodes, <see cref="OwnedBackend.PrefillChunk"/> once a decode step ran, and the same bits either way.
/// </summary>
public sealed class PrefillChunkTests
{
    [Fact]
    public void Prefill_RunsLongChunksWhileNothingDecodes_ShortOnesAfterADecodeStep_SameBits()
    {
        using var backend = OwnedTestSessions.Create(context: 1100);
        backend.DecodeIdle = TimeSpan.FromHours(1);
        var prompt = OwnedTestSessions.Prompt(1000, 7);
        using var idle = backend.CreateSession();
        using var decoding = backend.CreateSession();
        using var busy = backend.CreateSession();

        // No decode step since load: 512 + 488.
        var before = backend.PrefillRuns;
        idle.Extend(0, prompt);
        Assert.Equal(2, backend.PrefillRuns - before);

        // Another session decodes: Runs of 128 (7 x 128 + 104), so its next token waits one short Run at most.
        decoding.Extend(0, OwnedTestSessions.Prompt(10, 8));
        decoding.Append(5);
        before = backend.PrefillRuns;
        busy.Extend(0, prompt);
        Assert.Equal(8, backend.PrefillRuns - before);

        // The same logits, and the same KV at every position (a decode step on each reads all of it).
        Assert.Equal(OwnedTestSessions.Logits(idle), OwnedTestSessions.Logits(busy));
        idle.Append(9);
        busy.Append(9);
        Assert.Equal(OwnedTestSessions.Logits(idle), OwnedTestSessions.Logits(busy));

        // Once no step has run for DecodeIdle, prefills take long Runs again.
        backend.DecodeIdle = TimeSpan.Zero;
        before = backend.PrefillRuns;
        busy.Extend(0, prompt);
        Assert.Equal(2, backend.PrefillRuns - before);
        Assert.Equal(prompt, busy.Tokens);
    }

    [Fact]
    public void WithoutTheLastPositionRewrite_PrefillStaysInShortRuns()
    {
        // Logits at every position: a Run of 512 would write 512 rows of the vocabulary, so chunks stay at 128.
        var folder = ModelFolder.Read(KvChat.Testing.TestModels.PathOf(KvChat.ModelKit.ModelKitOptions.Tiny));
        using var backend = OwnedBackend.TryCreate(folder, 1100, 2, 1, out var reason, lastPositionLogits: false) ?? throw new InvalidOperationException(reason);
        backend.DecodeIdle = TimeSpan.Zero;
        using var session = backend.CreateSession();
        var before = backend.PrefillRuns;
        session.Extend(0, OwnedTestSessions.Prompt(1000, 7));
        Assert.Equal(8, backend.PrefillRuns - before);
    }
}
