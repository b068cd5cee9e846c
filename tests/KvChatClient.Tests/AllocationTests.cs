using KvChat;
using Xunit;

namespace KvChatClient.Tests;

/// <summary>The per-token and per-lookup paths allocate nothing once warmed up.</summary>
public sealed class AllocationTests
{
    /// <summary>
    /// The fewest bytes allocated by <paramref name="repetitions"/> calls over several attempts: a
    /// per-call allocation shows in every attempt, a one-off allocation by the runtime (tiered JIT)
    /// in one at most.
    /// </summary>
    private static long AllocatedBy(Action action, int repetitions = 100)
    {
        for (var i = 0; i < 50; i++)
        {
            action(); // Warm up: lazy buffers, pooled arrays, JIT tiers.
        }

        var fewest = long.MaxValue;
        for (var attempt = 0; attempt < 5; attempt++)
        {
            var before = GC.GetAllocatedBytesForCurrentThread();
            for (var i = 0; i < repetitions; i++)
            {
                action();
            }

            fewest = Math.Min(fewest, GC.GetAllocatedBytesForCurrentThread() - before);
        }

        return fewest;
    }

    private static float[] Logits(int count)
    {
        var random = new Random(1);
        return Enumerable.Range(0, count).Select(_ => (float)random.NextDouble() * 10f).ToArray();
    }

    [Fact]
    public void Next_Greedy_AllocatesNothing()
    {
        var logits = Logits(150_000);
        var sampler = new LogitSampler(SamplingSettings.Greedy, logits.Length);

        Assert.Equal(0, AllocatedBy(() => sampler.Next(logits)));
    }

    [Fact]
    public void Next_GreedyWithPenalties_AllocatesNothingPerToken()
    {
        var logits = Logits(150_000);
        var sampler = new LogitSampler(new SamplingSettings(0f, 1f, 0, 0.5f, 0.5f, null), logits.Length);
        sampler.Accept(sampler.Next(logits));
        for (var i = 0; i < 64; i++)
        {
            sampler.Accept(i); // Let the list of generated tokens reach its capacity.
        }

        Assert.Equal(0, AllocatedBy(() => sampler.Accept(sampler.Next(logits) % 64)));
    }

    [Fact]
    public void Next_Sampling_AllocatesNothingPerToken()
    {
        var logits = Logits(150_000);
        var sampler = new LogitSampler(new SamplingSettings(0.8f, 0.9f, 0, 0f, 0f, 3), logits.Length);
        var topK = new LogitSampler(new SamplingSettings(0.8f, 1f, 40, 0f, 0f, 3), logits.Length);

        Assert.Equal(0, AllocatedBy(() => sampler.Next(logits), 20));
        Assert.Equal(0, AllocatedBy(() => topK.Next(logits), 20));
    }

    [Fact]
    public void FindCandidatesAndComputeChain_AllocateNothing()
    {
        var index = new PrefixIndex<object>(16, 5);
        var system = Enumerable.Range(0, 500).ToArray();
        for (var i = 0; i < 64; i++)
        {
            index.Set(new object(), system.Concat(Enumerable.Range(1000 * (i + 1), 100)).ToArray());
        }

        var prompt = system.Concat([1, 2, 3]).ToArray();
        var results = new List<PrefixCandidate<object>>(64);
        var chain = new ulong[prompt.Length / 16];

        Assert.Equal(0, AllocatedBy(() => index.FindCandidates(prompt, results)));
        Assert.Equal(64, results.Count);
        Assert.Equal(0, AllocatedBy(() => PrefixIndex<object>.ComputeChain(prompt, 16, 5, chain)));
    }

    [Fact]
    public void Set_AppendingTurns_ReusesBuffer()
    {
        var index = new PrefixIndex<object>(16, 5);
        var entry = new object();
        var tokens = Enumerable.Range(0, 4000).ToArray();
        index.Set(entry, tokens);
        var length = 100;

        Assert.Equal(0, AllocatedBy(() => index.Set(entry, tokens.AsSpan(0, length = (length % 3900) + 37))));
    }
}
