using KvChat.ModelKit;
using KvChat.Testing;

namespace KvChat.Tests.Sessions;

/// <summary>An owned backend over the tiny kit model, random prompts and last-position logits, for the backend's suites.</summary>
internal static class OwnedTestSessions
{
    private static readonly string TinyPath = TestModels.PathOf(ModelKitOptions.Tiny);

    /// <summary>An owned backend of 4 sessions and one intra-op thread over the tiny model.</summary>
    public static OwnedBackend Create(int context = 256)
        => OwnedBackend.TryCreate(ModelFolder.Read(TinyPath), context, 4, 1, out var reason) ?? throw new InvalidOperationException(reason);

    /// <summary>A seeded random prompt of ordinary (non-special) token ids.</summary>
    public static int[] Prompt(int length, int seed)
    {
        var random = new Random(seed);
        return [.. Enumerable.Range(0, length).Select(_ => random.Next(3, 250))];
    }

    /// <summary>The session's logits for its last position.</summary>
    public static float[] Logits(IKvSession session)
    {
        var logits = new float[ModelKitOptions.Tiny.VocabSize];
        session.ReadLastLogits(logits);
        return logits;
    }
}
