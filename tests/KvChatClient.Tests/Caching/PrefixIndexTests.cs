using KvChat;
using Xunit;

namespace KvChatClient.Tests.Caching;

public sealed class PrefixIndexTests
{
    private const int Block = 4;

    private static int[] Range(int start, int count) => Enumerable.Range(start, count).ToArray();

    private static int[] Concat(params int[][] parts) => parts.SelectMany(p => p).ToArray();

    private static ulong[] Chain(int[] tokens, int blockSize = Block, ulong seed = 7)
    {
        var chain = new ulong[tokens.Length / blockSize];
        var blocks = PrefixIndex<object>.ComputeChain(tokens, blockSize, seed, chain);
        Assert.Equal(chain.Length, blocks);
        return chain;
    }

    private static List<PrefixCandidate<Entry>> Find(PrefixIndex<Entry> index, int[] prompt)
    {
        var results = new List<PrefixCandidate<Entry>>();
        index.FindCandidates(prompt, results);
        return results;
    }

    private sealed class Entry(string name)
    {
        public string Name { get; } = name;

        public override string ToString() => Name;
    }

    [Fact]
    public void ComputeChain_SameTokens_SameChain()
    {
        var tokens = Range(100, 37);

        Assert.Equal(Chain(tokens), Chain((int[])tokens.Clone()));
    }

    [Fact]
    public void ComputeChain_PartialBlock_IsNotHashed()
    {
        var destination = new ulong[10];

        var blocks = PrefixIndex<object>.ComputeChain(Range(0, 11), Block, 1, destination);

        Assert.Equal(2, blocks);
        Assert.All(destination[2..], h => Assert.Equal(0UL, h));
        Assert.Equal(Chain(Range(0, 8), seed: 1), destination[..2]);
    }

    [Fact]
    public void ComputeChain_OneChangedToken_ChangesItsBlockAndEveryLaterHash()
    {
        var tokens = Range(0, 40);
        var changed = (int[])tokens.Clone();
        changed[21] = 999; // Block 5.

        var a = Chain(tokens);
        var b = Chain(changed);

        Assert.Equal(a[..5], b[..5]);
        for (var k = 5; k < a.Length; k++)
        {
            Assert.NotEqual(a[k], b[k]);
        }
    }

    [Fact]
    public void ComputeChain_ChangeInFirstBlock_ChangesLaterHashesOfIdenticalBlocks()
    {
        // Block 1 is identical in both sequences; only the chain makes its hash differ.
        var a = Chain(Concat([1, 2, 3, 4], [9, 9, 9, 9]));
        var b = Chain(Concat([1, 2, 3, 5], [9, 9, 9, 9]));

        Assert.NotEqual(a[1], b[1]);
    }

    [Fact]
    public void ComputeChain_DifferentSeed_DifferentChain()
    {
        var tokens = Range(0, 16);

        var a = Chain(tokens, seed: 1);
        var b = Chain(tokens, seed: 2);

        for (var k = 0; k < a.Length; k++)
        {
            Assert.NotEqual(a[k], b[k]);
        }
    }

    [Fact]
    public void ComputeChain_DifferentBlockSize_DifferentChain()
    {
        var tokens = Range(0, 16);

        Assert.NotEqual(Chain(tokens, blockSize: 4)[1], Chain(tokens, blockSize: 8)[0]);
    }

    [Fact]
    public void ComputeChain_LargeBlocks_UsesPooledBufferAndStaysConsistent()
    {
        // 300 ints = 1208 bytes per block: larger than the stack buffer.
        var tokens = Range(0, 900);
        var changed = (int[])tokens.Clone();
        changed[650] = -1;

        var a = Chain(tokens, blockSize: 300);
        var b = Chain(changed, blockSize: 300);

        Assert.Equal(3, a.Length);
        Assert.Equal(a, Chain(tokens, blockSize: 300));
        Assert.Equal(a[..2], b[..2]);
        Assert.NotEqual(a[2], b[2]);
    }

    [Fact]
    public void ComputeChain_DestinationTooShort_Throws()
    {
        var ex = Assert.Throws<ArgumentException>(() => PrefixIndex<object>.ComputeChain(Range(0, 12), Block, 0, new ulong[2]));

        Assert.Equal("destination", ex.ParamName);
    }

    [Fact]
    public void Constructor_BlockSizeBelowOne_Throws()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new PrefixIndex<Entry>(0, 0));
    }

    [Fact]
    public void FindCandidates_EmptyIndex_ReturnsNothing()
    {
        var index = new PrefixIndex<Entry>(Block, 0);
        var results = new List<PrefixCandidate<Entry>> { new(new Entry("stale"), 99) };

        index.FindCandidates(Range(0, 20), results);

        Assert.Empty(results);
    }

    [Fact]
    public void FindCandidates_ManyEntries_DeepestMatchFirstWithExactLengths()
    {
        var index = new PrefixIndex<Entry>(Block, 0);
        var prompt = Range(0, 30);
        var shallow = new Entry("shallow");
        var deep = new Entry("deep");
        var middle = new Entry("middle");
        var unrelated = new Entry("unrelated");
        index.Set(shallow, Concat(prompt[..5], [-1, -2, -3, -4]));
        index.Set(deep, Concat(prompt[..27], [-5]));
        index.Set(middle, prompt.AsSpan(0, 13));
        index.Set(unrelated, Range(1000, 30));

        var results = Find(index, prompt);

        Assert.Equal(
            new[] { (deep, 27), (middle, 13), (shallow, 5) },
            results.Select(r => (r.Entry, r.CommonPrefixLength)));
    }

    [Fact]
    public void FindCandidates_ExactPrefixExtendsIntoPartialBlock()
    {
        var index = new PrefixIndex<Entry>(Block, 0);
        var entry = new Entry("a");
        var prompt = Range(0, 11); // Two full blocks and a partial one.
        index.Set(entry, Concat(prompt[..10], [500, 501]));

        var candidate = Assert.Single(Find(index, prompt));

        Assert.Equal(10, candidate.CommonPrefixLength);
    }

    [Fact]
    public void FindCandidates_EntryLongerThanPrompt_ReportsPromptLength()
    {
        var index = new PrefixIndex<Entry>(Block, 0);
        var entry = new Entry("a");
        index.Set(entry, Range(0, 50));

        var candidate = Assert.Single(Find(index, Range(0, 7)));

        Assert.Equal(7, candidate.CommonPrefixLength);
    }

    [Fact]
    public void FindCandidates_SharesLessThanOneBlock_NotIncluded()
    {
        var index = new PrefixIndex<Entry>(Block, 0);
        index.Set(new Entry("a"), Concat([0, 1, 2], Range(100, 10)));
        index.Set(new Entry("short"), [0, 1, 2]);

        Assert.Empty(Find(index, Range(0, 10)));
    }

    [Fact]
    public void FindCandidates_PromptShorterThanBlock_ReturnsNothing()
    {
        var index = new PrefixIndex<Entry>(Block, 0);
        index.Set(new Entry("a"), Range(0, 10));

        Assert.Empty(Find(index, Range(0, Block - 1)));
    }

    [Fact]
    public void FindCandidates_StoredTokensDifferAfterMatchingBlocks_TrimmedToExactLength()
    {
        var index = new PrefixIndex<Entry>(Block, 0);
        var entry = new Entry("a");
        var prompt = Range(0, 16);
        var stored = (int[])prompt.Clone();
        stored[9] = -9; // Blocks 0 and 1 match, block 2 differs at its second token.
        index.Set(entry, stored);

        var candidate = Assert.Single(Find(index, prompt));

        Assert.Equal(9, candidate.CommonPrefixLength);
    }

    [Fact]
    public void FindCandidates_ForgedHashCollisions_OnlyVerifiedEntriesWithExactLengths()
    {
        // A zero mask sends every first block to the same bucket: every hash "matches".
        var index = new PrefixIndex<Entry>(Block, 0, hashMask: 0);
        var prompt = Range(0, 12);
        var real = new Entry("real");
        var forgedFirstBlock = new Entry("forged-first-block");
        var forgedPartial = new Entry("forged-partial");
        index.Set(real, Concat(prompt[..6], [77, 77]));
        index.Set(forgedFirstBlock, Range(500, 12));
        index.Set(forgedPartial, Concat(prompt[..3], Range(600, 9))); // Shares 3 < Block tokens.

        var results = Find(index, prompt);

        var candidate = Assert.Single(results);
        Assert.Same(real, candidate.Entry);
        Assert.Equal(6, candidate.CommonPrefixLength);
    }

    [Fact]
    public void Remove_Entry_NoLongerFoundAndTokensForgotten()
    {
        var index = new PrefixIndex<Entry>(Block, 0);
        var a = new Entry("a");
        var b = new Entry("b");
        index.Set(a, Range(0, 12));
        index.Set(b, Range(0, 8));

        Assert.True(index.Remove(a));

        var candidate = Assert.Single(Find(index, Range(0, 12)));
        Assert.Same(b, candidate.Entry);
        Assert.Equal(1, index.Count);
        Assert.False(index.Contains(a));
        Assert.False(index.Remove(a));
        Assert.Throws<ArgumentException>(() => index.GetCommonPrefixLength(a, Range(0, 12)));
    }

    [Fact]
    public void Remove_LastEntryOfBucket_ThenSetAgain_Found()
    {
        var index = new PrefixIndex<Entry>(Block, 0);
        var a = new Entry("a");
        index.Set(a, Range(0, 8));
        index.Remove(a);

        index.Set(a, Range(0, 8));

        Assert.Equal(8, Assert.Single(Find(index, Range(0, 8))).CommonPrefixLength);
    }

    [Fact]
    public void Set_ShorterTokensReplaceLonger_ReportsOnlyNewTokens()
    {
        var index = new PrefixIndex<Entry>(Block, 0);
        var a = new Entry("a");
        index.Set(a, Range(0, 40));

        index.Set(a, Range(0, 9));

        Assert.Equal(9, Assert.Single(Find(index, Range(0, 40))).CommonPrefixLength);
        Assert.Equal(Range(0, 9), index.GetTokens(a).ToArray());
        Assert.Equal(1, index.Count);
    }

    [Fact]
    public void Set_FirstBlockChanged_MovesToNewBucket()
    {
        var index = new PrefixIndex<Entry>(Block, 0);
        var a = new Entry("a");
        index.Set(a, Range(0, 12));

        index.Set(a, Range(100, 12));

        Assert.Empty(Find(index, Range(0, 12)));
        Assert.Equal(12, Assert.Single(Find(index, Range(100, 12))).CommonPrefixLength);
    }

    [Fact]
    public void Set_BelowOneBlockThenAboveAgain_TracksIndexing()
    {
        var index = new PrefixIndex<Entry>(Block, 0);
        var a = new Entry("a");
        index.Set(a, Range(0, 12));
        index.Set(a, Range(0, 2));

        Assert.Empty(Find(index, Range(0, 12)));
        Assert.True(index.Contains(a));

        index.Set(a, Range(0, 6));
        Assert.Equal(6, Assert.Single(Find(index, Range(0, 12))).CommonPrefixLength);
    }

    [Fact]
    public void Set_AppendedTurnByTurn_MatchesFreshRegistration()
    {
        var index = new PrefixIndex<Entry>(Block, 0);
        var fresh = new PrefixIndex<Entry>(Block, 0);
        var a = new Entry("a");
        var random = new Random(5);
        var tokens = new List<int>();
        for (var turn = 0; turn < 50; turn++)
        {
            if (turn % 7 == 3 && tokens.Count > 5)
            {
                tokens.RemoveRange(tokens.Count - 5, 5); // Rewind, as a regenerated reply does.
            }

            for (var i = random.Next(1, 30); i > 0; i--)
            {
                tokens.Add(random.Next(0, 50));
            }

            index.Set(a, tokens.ToArray());
        }

        fresh.Set(a, tokens.ToArray());
        var prompt = tokens.Concat([7, 7, 7]).ToArray();

        Assert.Equal(tokens, index.GetTokens(a).ToArray());
        Assert.Equal(tokens.Count, Assert.Single(Find(index, prompt)).CommonPrefixLength);
        Assert.Equal(Find(fresh, prompt).Single().CommonPrefixLength, Find(index, prompt).Single().CommonPrefixLength);
    }

    [Fact]
    public void Set_TokensViewOfOwnBuffer_IsSafe()
    {
        var index = new PrefixIndex<Entry>(Block, 0);
        var a = new Entry("a");
        index.Set(a, Range(0, 20));

        index.Set(a, index.GetTokens(a)[..10]);

        Assert.Equal(Range(0, 10), index.GetTokens(a).ToArray());
    }

    [Fact]
    public void Set_EmptyTokens_RegisteredButNeverCandidate()
    {
        var index = new PrefixIndex<Entry>(Block, 0);
        var a = new Entry("a");

        index.Set(a, []);

        Assert.Equal(1, index.Count);
        Assert.Contains(a, index.Entries);
        Assert.Equal(0, index.GetCommonPrefixLength(a, Range(0, 8)));
        Assert.Empty(Find(index, Range(0, 8)));
    }

    [Fact]
    public void GetCommonPrefixLength_ComparesExactly()
    {
        var index = new PrefixIndex<Entry>(Block, 0);
        var a = new Entry("a");
        index.Set(a, [1, 2, 3, 4, 5]);

        Assert.Equal(3, index.GetCommonPrefixLength(a, [1, 2, 3, 9]));
        Assert.Equal(2, index.GetCommonPrefixLength(a, [1, 2]));
        Assert.Equal(5, index.GetCommonPrefixLength(a, [1, 2, 3, 4, 5, 6]));
        Assert.Equal(0, index.GetCommonPrefixLength(a, [9]));
    }

    [Fact]
    public void FindCandidates_SixtyFourEntriesShareSystemPrompt_AllFoundWithOwnLengths()
    {
        var index = new PrefixIndex<Entry>(16, 42);
        var system = Range(0, 100);
        var entries = new Entry[64];
        for (var i = 0; i < entries.Length; i++)
        {
            entries[i] = new Entry($"conversation {i}");
            // Conversation i continues the system prompt with i tokens shared with the prompt below.
            index.Set(entries[i], Concat(system, Range(10_000, i), [-1 - i], Range(20_000, 30)));
        }

        var prompt = Concat(system, Range(10_000, 63), [123]);

        var results = Find(index, prompt);

        Assert.Equal(64, results.Count);
        Assert.Equal(Enumerable.Range(0, 64).Reverse().Select(i => (entries[i], 100 + i)), results.Select(r => (r.Entry, r.CommonPrefixLength)));
        Assert.Equal(64, index.Entries.Count);
    }

    [Fact]
    public void FindCandidates_SixtyFourEntriesShareSystemPrompt_NewConversationSeesSystemPromptLength()
    {
        var index = new PrefixIndex<Entry>(16, 42);
        var system = Range(0, 100);
        for (var i = 0; i < 64; i++)
        {
            index.Set(new Entry($"c{i}"), Concat(system, Range(1000 * (i + 1), 50)));
        }

        var results = Find(index, Concat(system, [-7, -8]));

        Assert.Equal(64, results.Count);
        Assert.All(results, r => Assert.Equal(100, r.CommonPrefixLength));
    }
}
