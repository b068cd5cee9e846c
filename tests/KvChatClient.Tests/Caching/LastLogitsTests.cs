using KvChat;
using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.ML.OnnxRuntimeGenAI;
using Xunit;

namespace KvChatClient.Tests.Caching;

/// <summary>
/// The last position's logits after a prefill: the native read (<see cref="GeneratorLastLogits"/>) against the managed
/// wrapper's full copy, and the session's fallback (the prompt's last token appended on its own) against a fresh
/// prefill.
/// </summary>
public sealed class LastLogitsTests
{
    private static readonly ModelKitOptions Options = ModelKitOptions.Tiny;

    private static int[] Prompt(int length, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, length).Select(_ => random.Next(256)).ToArray();
    }

    [Fact]
    public void NativeRead_IsOnForThePinnedGenAiVersion()
    {
        // The guard (handle field, exports, type and shape) passes on the GenAI version the repository pins: if an
        // upgrade breaks it, this fails rather than the client silently taking the slower fallback.
        Assert.True(GeneratorLastLogits.IsAvailable, GeneratorLastLogits.UnavailableReason);
        Assert.Null(GeneratorLastLogits.UnavailableReason);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(300)]
    public void NativeRead_EqualsTheLastRowOfGetOutput_AfterPrefillStepsAndRewind(int promptLength)
    {
        using var model = new Model(TestModels.PathOf(Options));
        using var generator = RawGeneration.NewGenerator(model, 1024);
        var vocab = Options.VocabSize;
        var native = new float[vocab];
        var prompt = Prompt(promptLength, promptLength);

        generator.AppendTokens(prompt);
        Assert.True(GeneratorLastLogits.TryRead(generator, native));
        Assert.Equal(RawGeneration.LastLogits(generator), native);

        for (var step = 0; step < 3; step++)
        {
            generator.AppendTokens([RawGeneration.ArgMax(native)]);
            Assert.True(GeneratorLastLogits.TryRead(generator, native));
            Assert.Equal(RawGeneration.LastLogits(generator), native);
        }

        generator.RewindTo((ulong)(promptLength / 2));
        generator.AppendTokens(Prompt(5, 99));
        Assert.True(GeneratorLastLogits.TryRead(generator, native));
        Assert.Equal(RawGeneration.LastLogits(generator), native);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void KvSession_LastLogitsAfterPrefill_EqualAFreshPrefill(bool native)
    {
        using var model = new Model(TestModels.PathOf(Options));
        var folder = ModelFolder.Read(TestModels.PathOf(Options));
        using var session = new KvSession(model, 1024, folder.KvBytesPerToken, folder.SharedBuffer) { UseNativeLogits = native };
        var vocab = folder.VocabSize;
        var logits = new float[vocab];
        var prompt = Prompt(200, 3);

        session.Prefill(prompt, 0);
        session.ReadLastLogits(logits);
        using (var fresh = RawGeneration.NewGenerator(model, 1024))
        {
            fresh.AppendTokens(prompt);
            var expected = RawGeneration.LastLogits(fresh);
            if (native)
            {
                Assert.Equal(expected, logits); // The same forward pass, read natively: bit for bit.
            }
            else
            {
                // The fallback computes the last token in a pass of its own: the same values up to summation order.
                Assert.True(RawGeneration.MaxAbsDifference(expected, logits) < 1e-4f, $"differ by {RawGeneration.MaxAbsDifference(expected, logits)}");
                Assert.Equal(RawGeneration.ArgMax(expected), RawGeneration.ArgMax(logits));
            }
        }

        Assert.Equal(prompt, session.Tokens);

        // A cached turn: keep 150, append 60 new tokens; then a decode step.
        var second = prompt[..150].Concat(Prompt(60, 4)).ToArray();
        session.Prefill(second, 150);
        session.ReadLastLogits(logits);
        var next = RawGeneration.ArgMax(logits);
        session.Append(next);
        session.ReadLastLogits(logits);
        using (var fresh = RawGeneration.NewGenerator(model, 1024))
        {
            fresh.AppendTokens([.. second, next]);
            var expected = RawGeneration.LastLogits(fresh);
            Assert.True(RawGeneration.MaxAbsDifference(expected, logits) < 1e-4f, $"differ by {RawGeneration.MaxAbsDifference(expected, logits)}");
        }

        Assert.Equal([.. second, next], session.Tokens);
    }

    [Fact]
    public void KvSession_NativeRead_CrossChecksOnceAgainstTheManagedCopy()
    {
        using var model = new Model(TestModels.PathOf(Options));
        var folder = ModelFolder.Read(TestModels.PathOf(Options));
        using var session = new KvSession(model, 256, folder.KvBytesPerToken, folder.SharedBuffer);
        var logits = new float[folder.VocabSize];

        session.Prefill(Prompt(20, 5), 0);
        session.ReadLastLogits(logits);
        session.Append(RawGeneration.ArgMax(logits));
        session.ReadLastLogits(logits);

        Assert.True(GeneratorLastLogits.IsCrossChecked);
        Assert.True(GeneratorLastLogits.IsAvailable, GeneratorLastLogits.UnavailableReason);
    }
}
