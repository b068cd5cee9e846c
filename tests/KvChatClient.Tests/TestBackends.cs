using KvChat.ModelKit;
using Microsoft.Extensions.AI;
using Xunit;

namespace KvChat.Tests;

/// <summary>The session backends the cache suites run on.</summary>
public static class TestBackends
{
    /// <summary>Both backends, forced.</summary>
    public static TheoryData<KvSessionBackend> Both => new(KvSessionBackend.Generator, KvSessionBackend.Owned);

    /// <summary>Every value of <paramref name="rows"/> on both backends (the backend is the last argument).</summary>
    public static TheoryData<T, KvSessionBackend> OnBoth<T>(IEnumerable<T> rows)
    {
        var data = new TheoryData<T, KvSessionBackend>();
        foreach (var row in rows)
        {
            data.Add(row, KvSessionBackend.Generator);
            data.Add(row, KvSessionBackend.Owned);
        }

        return data;
    }

    /// <summary>Every pair of <paramref name="rows"/> on both backends (the backend is the last argument).</summary>
    public static TheoryData<T1, T2, KvSessionBackend> OnBoth<T1, T2>(IEnumerable<(T1, T2)> rows)
    {
        var data = new TheoryData<T1, T2, KvSessionBackend>();
        foreach (var (first, second) in rows)
        {
            data.Add(first, second, KvSessionBackend.Generator);
            data.Add(first, second, KvSessionBackend.Owned);
        }

        return data;
    }

    /// <summary>Both kit variants on both backends.</summary>
    public static TheoryData<ModelVariant, KvSessionBackend> VariantsOnBoth
    {
        get
        {
            var data = new TheoryData<ModelVariant, KvSessionBackend>();
            foreach (var variant in new[] { ModelVariant.GroupQueryAttention, ModelVariant.Concat })
            {
                data.Add(variant, KvSessionBackend.Generator);
                data.Add(variant, KvSessionBackend.Owned);
            }

            return data;
        }
    }

    /// <summary>
    /// The setting that runs <paramref name="backend"/> on <paramref name="variant"/>: the owned backend declines the
    /// Concat variant, so there it is asked for through <see cref="KvSessionBackend.Auto"/> (which falls back, saying why;
    /// <see cref="AssertBackend"/> checks it).
    /// </summary>
    public static KvSessionBackend For(ModelVariant variant, KvSessionBackend backend)
        => variant == ModelVariant.Concat && backend == KvSessionBackend.Owned ? KvSessionBackend.Auto : backend;

    /// <summary>Checks that the client runs the backend <see cref="For"/> meant, and that a fallback names its reason.</summary>
    public static void AssertBackend(KvChatClient client, ModelVariant variant, KvSessionBackend backend)
    {
        var stats = client.GetService<KvCacheStatistics>()!;
        if (For(variant, backend) == KvSessionBackend.Auto)
        {
            Assert.Equal(KvSessionBackend.Generator, stats.Backend);
            Assert.Contains("past_present_share_buffer", stats.BackendFallbackReason, StringComparison.Ordinal);
        }
        else
        {
            Assert.Equal(backend, stats.Backend);
            Assert.Null(stats.BackendFallbackReason);
        }
    }
}
