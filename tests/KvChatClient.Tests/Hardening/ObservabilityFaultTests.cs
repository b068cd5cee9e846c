using System.Diagnostics.Metrics;
using System.Text.Json;
using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;
using Xunit;

namespace KvChat.Tests.Hardening;

/// <summary>
/// A logger or a metrics listener that throws never fails, hangs or changes a request, and never discards a session.
/// Every call runs under a timeout, so a regression that leaves a reply pending fails instead of hanging the run.
/// </summary>
public sealed class ObservabilityFaultTests
{
    private static readonly TimeSpan Guard = TimeSpan.FromSeconds(60);

    private static string ScriptedPath => TestModels.PathOf(ModelKitOptions.Tiny with { Script = "Observed." });

    public static TheoryData<int> LogEvents => [1, 3, 4, 5];

    [Theory]
    [MemberData(nameof(LogEvents))]
    public async Task LoggerThrowingOnAnEvent_RepliesAsWithoutIt_KeepsTheSession(int eventId)
    {
        using var loggers = new ThrowingLoggerFactory(eventId);
        using var client = new KvChatClient(ScriptedPath, new KvChatClientOptions
        {
            LoggerFactory = loggers,
            RejectUnknownAdditionalProperties = false,
            MaxSessions = 1,
        });
        var options = new ChatOptions { MaxOutputTokens = 32, AdditionalProperties = new() { ["unknown_knob"] = 1 } };
        List<ChatMessage> history = [new(ChatRole.System, "A system prompt worth caching."), new(ChatRole.User, "One")];
        await client.PrefillAsync(history[..1], cancellationToken: TestContext.Current.CancellationToken).WaitAsync(Guard, TestContext.Current.CancellationToken);

        var first = await client.GetResponseAsync(history, options, TestContext.Current.CancellationToken).WaitAsync(Guard, TestContext.Current.CancellationToken);
        Assert.Equal("Observed.", first.Text);
        history.AddRange(first.Messages);
        history.Add(new ChatMessage(ChatRole.User, "Two"));
        var streamed = await CollectAsync(client.GetStreamingResponseAsync(history, options, TestContext.Current.CancellationToken)).WaitAsync(Guard, TestContext.Current.CancellationToken);
        Assert.Equal("Observed.", streamed);
        Assert.True(loggers.Thrown > 0, $"event {eventId} was never logged");
        var stats = client.GetService<KvCacheStatistics>()!;
        Assert.Equal(0, stats.Discards);
        Assert.Equal(1, stats.Sessions);
        Assert.True(stats.CachedInputTokens > 0);
        Assert.Equal(0, client.InFlightCalls);
    }

    [Theory]
    [MemberData(nameof(TestBackends.Both), MemberType = typeof(TestBackends))]
    public async Task LoggerThrowingOnEverything_StructuredReplyStillCompletes(KvSessionBackend backend)
    {
        using var loggers = new ThrowingLoggerFactory(eventId: null);
        using var client = new KvChatClient(TestModels.PathOf(ModelKitOptions.Tiny with { Script = "{\"a\":1}" }), new KvChatClientOptions { LoggerFactory = loggers, SessionBackend = backend });
        var response = await client.GetResponseAsync(
            [new(ChatRole.User, "json")],
            new ChatOptions { ResponseFormat = ChatResponseFormat.Json, MaxOutputTokens = 40 },
            TestContext.Current.CancellationToken).WaitAsync(Guard, TestContext.Current.CancellationToken);
        using var document = JsonDocument.Parse(response.Text);
        Assert.True(loggers.Thrown > 0);
        Assert.Equal(0, client.InFlightCalls);
    }

    [Fact]
    public async Task MetricsListenerThatThrows_RepliesAsWithoutIt_KeepsTheSession()
    {
        var modelId = "throwing-listener-" + Guid.NewGuid().ToString("N")[..8];
        var thrown = 0;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == KvChatMetricNames.MeterName)
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        void Throw(ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            foreach (var tag in tags)
            {
                if (tag.Key == KvChatMetricNames.ModelTag && (string?)tag.Value == modelId)
                {
                    Interlocked.Increment(ref thrown);
                    throw new InvalidOperationException("listener failure"); // Only for this test's client: tests run in parallel.
                }
            }
        }

        listener.SetMeasurementEventCallback<long>((_, _, tags, _) => Throw(tags));
        listener.SetMeasurementEventCallback<double>((_, _, tags, _) => Throw(tags));
        listener.Start();

        using var client = new KvChatClient(ScriptedPath, new KvChatClientOptions { ModelId = modelId, MaxSessions = 1 });
        List<ChatMessage> history = [new(ChatRole.System, "Metered system prompt."), new(ChatRole.User, "One")];
        var first = await client.GetResponseAsync(history, new ChatOptions { MaxOutputTokens = 32 }, TestContext.Current.CancellationToken).WaitAsync(Guard, TestContext.Current.CancellationToken);
        Assert.Equal("Observed.", first.Text);
        history.AddRange(first.Messages);
        history.Add(new ChatMessage(ChatRole.User, "Two"));
        var second = await client.GetResponseAsync(history, new ChatOptions { MaxOutputTokens = 32 }, TestContext.Current.CancellationToken).WaitAsync(Guard, TestContext.Current.CancellationToken);
        Assert.Equal("Observed.", second.Text);
        Assert.True(second.Usage!.CachedInputTokenCount > 0);
        Assert.True(thrown > 0);
        Assert.Equal(0, client.GetService<KvCacheStatistics>()!.Discards);
        Assert.Equal(0, client.InFlightCalls);
    }

    private static async Task<string> CollectAsync(IAsyncEnumerable<ChatResponseUpdate> updates)
    {
        var text = new System.Text.StringBuilder();
        await foreach (var update in updates)
        {
            text.Append(update.Text);
        }

        return text.ToString();
    }

    /// <summary>A logger factory whose loggers throw on one event id (or on every entry).</summary>
    private sealed class ThrowingLoggerFactory(int? eventId) : ILoggerFactory
    {
        private int _thrown;

        public int Thrown => Volatile.Read(ref _thrown);

        public int? EventId => eventId;

        public void AddProvider(ILoggerProvider provider)
        {
        }

        public ILogger CreateLogger(string categoryName) => new Logger(this);

        public void Dispose()
        {
        }

        private sealed class Logger(ThrowingLoggerFactory owner) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state)
                where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => true;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            {
                if (owner.EventId is null || owner.EventId == eventId.Id)
                {
                    Interlocked.Increment(ref owner._thrown);
                    throw new InvalidOperationException($"logger failure on event {eventId.Id}");
                }
            }
        }
    }
}
