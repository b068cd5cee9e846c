using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntimeGenAI;
using Xunit;

namespace KvChat.Tests.Hardening;

/// <summary>
/// Calls racing <see cref="KvChatClient.Dispose"/> end with an <see cref="ObjectDisposedException"/> naming the client
/// or, when they were in flight, an <see cref="OperationCanceledException"/>; the in-flight count never leaks. Guarded by
/// a timeout, so a regression fails instead of hanging the run.
/// </summary>
public sealed class DisposeRaceTests
{
    private static readonly TimeSpan Guard = TimeSpan.FromMinutes(2);

    private static string LongPath => TestModels.PathOf(ModelKitOptions.Tiny with { Script = new string('r', 40) });

    [Fact]
    public async Task StreamCreatedBeforeDispose_EnumeratedAfter_ThrowsObjectDisposedNamingTheClient()
    {
        var client = new KvChatClient(LongPath);
        var stream = client.GetStreamingResponseAsync([new(ChatRole.User, "before dispose")], cancellationToken: TestContext.Current.CancellationToken);
        client.Dispose();

        var error = await Assert.ThrowsAsync<ObjectDisposedException>(async () =>
        {
            await foreach (var _ in stream)
            {
            }
        }).WaitAsync(Guard, TestContext.Current.CancellationToken);
        Assert.Equal(typeof(KvChatClient).FullName, error.ObjectName);
        Assert.Equal(0, client.InFlightCalls);

        var late = Assert.Throws<ObjectDisposedException>(() => client.GetStreamingResponseAsync([new(ChatRole.User, "after")]));
        Assert.Equal(typeof(KvChatClient).FullName, late.ObjectName);
        var prefill = await Assert.ThrowsAsync<ObjectDisposedException>(() => client.PrefillAsync([new(ChatRole.System, "after")]));
        Assert.Equal(typeof(KvChatClient).FullName, prefill.ObjectName);
        Assert.Equal(0, client.InFlightCalls);
    }

    [Fact]
    public async Task ManyThreadsCreatingEnumeratingAndDisposingAtRandom_EndCleanly_NeverLeakTheCount()
    {
        using var model = new Model(LongPath);
        var failures = new List<string>();
        var outcomes = new int[4]; // completed, disposed, cancelled, other
        var work = Task.Run(async () =>
        {
            for (var round = 0; round < 12; round++)
            {
                var random = new Random(round);
                var client = new KvChatClient(model, LongPath);
                var calls = new List<Task>();
                for (var i = 0; i < 6; i++)
                {
                    var seed = random.Next();
                    calls.Add(Task.Run(() => CallAsync(client, new Random(seed), outcomes, failures)));
                }

                var disposeAfter = random.Next(0, 40);
                calls.Add(Task.Run(async () =>
                {
                    await Task.Delay(disposeAfter);
                    client.Dispose();
                }));
                await Task.WhenAll(calls);
                Assert.Equal(0, client.InFlightCalls);
            }
        });

        await work.WaitAsync(Guard, TestContext.Current.CancellationToken);
        lock (failures)
        {
            Assert.Empty(failures);
        }

        Assert.True(outcomes[1] > 0, "no call met a disposed client");
        Assert.True(outcomes[0] + outcomes[2] > 0, "no call got under way");
    }

    private static async Task CallAsync(KvChatClient client, Random random, int[] outcomes, List<string> failures)
    {
        for (var n = 0; n < 4; n++)
        {
            try
            {
                switch (random.Next(4))
                {
                    case 0:
                        await client.GetResponseAsync([new(ChatRole.User, $"ask {n}")], new ChatOptions { MaxOutputTokens = 6 });
                        break;
                    case 1:
                        // Created now, enumerated later: maybe after Dispose.
                        var stream = client.GetStreamingResponseAsync([new(ChatRole.User, $"stream {n}")], new ChatOptions { MaxOutputTokens = 6 });
                        await Task.Delay(random.Next(0, 20));
                        await foreach (var _ in stream)
                        {
                        }

                        break;
                    case 2:
                        await client.PrefillAsync([new(ChatRole.System, $"prefix {random.Next(3)}")]);
                        break;
                    default:
                        _ = client.GetService<KvCacheStatistics>();
                        await Task.Delay(random.Next(0, 5));
                        break;
                }

                Interlocked.Increment(ref outcomes[0]);
            }
            catch (ObjectDisposedException e) when (e.ObjectName == typeof(KvChatClient).FullName)
            {
                Interlocked.Increment(ref outcomes[1]);
            }
            catch (OperationCanceledException)
            {
                Interlocked.Increment(ref outcomes[2]);
            }
#pragma warning disable CA1031 // Every other outcome is a failure to report.
            catch (Exception e)
#pragma warning restore CA1031
            {
                Interlocked.Increment(ref outcomes[3]);
                lock (failures)
                {
                    failures.Add(e.ToString());
                }
            }
        }
    }
}
