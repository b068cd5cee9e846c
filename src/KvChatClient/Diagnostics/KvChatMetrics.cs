using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;

namespace KvChat;

/// <summary>
/// One client's metrics on the meter <see cref="KvChatMetricNames.MeterName"/>: token counters, evictions, discards,
/// session gauges, time to first token and decode speed, all tagged with the client's model id.
/// </summary>
/// <remarks>
/// A meter from an <see cref="IMeterFactory"/> is shared by every client created through that factory (the factory
/// caches meters by name), so the instruments live once per meter and the session gauges sum the clients still alive.
/// Without a factory the client owns its meter and disposes it. Recording allocates nothing while nobody listens, and
/// never throws: a <see cref="MeterListener"/> callback runs inside <c>Add</c>/<c>Record</c>, and an exception from it
/// is dropped here, since metrics must never fail or change a request and a listener's own failure has nowhere else to go.
/// </remarks>
internal sealed class KvChatMetrics : IDisposable
{
    private static readonly ConditionalWeakTable<Meter, Instruments> InstrumentsByMeter = new();
    private static readonly Lock InstrumentsLock = new();

    private readonly Meter _meter;
    private readonly bool _ownsMeter;
    private readonly Instruments _instruments;
    private readonly KeyValuePair<string, object?> _model;
    private readonly Func<(int Active, int Busy)> _sessions;
    private readonly Func<DecodeStepStatistics>? _steps;
    private int _disposed;

    /// <summary>Creates the metrics of one client.</summary>
    /// <param name="meterFactory">The factory of the meter; <see langword="null"/> creates a meter this instance owns.</param>
    /// <param name="modelId">The client's model id, the value of the <see cref="KvChatMetricNames.ModelTag"/> tag.</param>
    /// <param name="sessions">Reads the client's alive and busy sessions, for the observable gauges.</param>
    /// <param name="steps">Reads the backend's decode-step counters, for the observable counters; <see langword="null"/> for none.</param>
    public KvChatMetrics(IMeterFactory? meterFactory, string modelId, Func<(int Active, int Busy)> sessions, Func<DecodeStepStatistics>? steps = null)
    {
        ArgumentNullException.ThrowIfNull(modelId);
        ArgumentNullException.ThrowIfNull(sessions);
        var options = new MeterOptions(KvChatMetricNames.MeterName);
        _ownsMeter = meterFactory is null;
        _meter = meterFactory?.Create(options) ?? new Meter(options);
        _model = new KeyValuePair<string, object?>(KvChatMetricNames.ModelTag, modelId);
        _sessions = sessions;
        _steps = steps;
        lock (InstrumentsLock)
        {
            _instruments = InstrumentsByMeter.GetValue(_meter, static meter => new Instruments(meter));
        }

        _instruments.Add(this);
    }

    /// <summary>Records that a request or prefill leased a session; counts an eviction when it took over another conversation's.</summary>
    public void RecordLease(bool evicted)
    {
        if (!evicted)
        {
            return;
        }

        try
        {
            _instruments.Evictions.Add(1, _model);
        }
        catch (Exception)
        {
            // A listener threw: contained (see the remarks).
        }
    }

    /// <summary>Records a prompt's cached and prefilled tokens.</summary>
    public void RecordPrompt(int cachedTokens, int prefilledTokens)
    {
        try
        {
            if (cachedTokens > 0)
            {
                _instruments.CachedTokens.Add(cachedTokens, _model);
            }

            _instruments.PrefilledTokens.Add(prefilledTokens, _model);
        }
        catch (Exception)
        {
            // A listener threw: contained (see the remarks).
        }
    }

    /// <summary>Records a completed reply.</summary>
    /// <param name="outputTokens">The tokens generated.</param>
    /// <param name="timeToFirstToken">Seconds from the start of the request to its first sampled token.</param>
    /// <param name="totalSeconds">Seconds from the start of the request to the end of the reply.</param>
    public void RecordReply(int outputTokens, double timeToFirstToken, double totalSeconds)
    {
        try
        {
            _instruments.OutputTokens.Add(outputTokens, _model);
            _instruments.TimeToFirstToken.Record(timeToFirstToken, _model);
            var decodeSeconds = totalSeconds - timeToFirstToken;
            if (outputTokens > 1 && decodeSeconds > 0)
            {
                _instruments.DecodeRate.Record((outputTokens - 1) / decodeSeconds, _model);
            }
        }
        catch (Exception)
        {
            // A listener threw: contained (see the remarks).
        }
    }

    /// <summary>Records a session that started from a copy of <paramref name="tokens"/> cached tokens.</summary>
    public void RecordFork(int tokens)
    {
        _instruments.Forks.Add(1, _model);
        _instruments.ForkedTokens.Add(tokens, _model);
    }

    /// <summary>Records a pinned prefix loaded from disk. Never throws (a listener's exception is contained).</summary>
    public void RecordPrefixLoaded()
    {
        try
        {
            _instruments.PrefixesLoaded.Add(1, _model);
        }
        catch (Exception)
        {
            // A listener threw: contained (see the remarks).
        }
    }

    /// <summary>Records a session discarded after a failure.</summary>
    public void RecordDiscard()
    {
        try
        {
            _instruments.Discards.Add(1, _model);
        }
        catch (Exception)
        {
            // A listener threw: contained (see the remarks).
        }
    }

    /// <summary>Stops reporting this client's sessions; disposes the meter when this instance owns it.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _instruments.Remove(this);
        if (_ownsMeter)
        {
            _meter.Dispose();
        }
    }

    /// <summary>The instruments of one meter, shared by the clients reporting to it.</summary>
    private sealed class Instruments
    {
        private static readonly double[] TimeToFirstTokenBuckets = [0.001, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96];
        private static readonly double[] DecodeRateBuckets = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];

        private readonly List<KvChatMetrics> _clients = [];

        public Instruments(Meter meter)
        {
            CachedTokens = meter.CreateCounter<long>(KvChatMetricNames.CachedTokens, "{token}", "Prompt tokens served from the KV cache.");
            PrefilledTokens = meter.CreateCounter<long>(KvChatMetricNames.PrefilledTokens, "{token}", "Prompt tokens computed (prefilled).");
            OutputTokens = meter.CreateCounter<long>(KvChatMetricNames.OutputTokens, "{token}", "Tokens generated by completed replies.");
            Evictions = meter.CreateCounter<long>(KvChatMetricNames.Evictions, "{eviction}", "Sessions taken over from another conversation.");
            Discards = meter.CreateCounter<long>(KvChatMetricNames.DiscardedSessions, "{session}", "Sessions discarded after a failure.");
            Forks = meter.CreateCounter<long>(KvChatMetricNames.Forks, "{fork}", "Sessions started from a copy of another session's cached prefix.");
            ForkedTokens = meter.CreateCounter<long>(KvChatMetricNames.ForkedTokens, "{token}", "Prompt tokens copied from another session's cached prefix.");
            PrefixesLoaded = meter.CreateCounter<long>(KvChatMetricNames.PrefixesLoaded, "{prefix}", "Pinned prefixes whose KV was loaded from the prefix cache directory instead of prefilled.");
            meter.CreateObservableCounter(KvChatMetricNames.DecodeSteps, () => ObserveSteps(rows: false), "{run}", "Decode Runs of the owned-KV backend.");
            meter.CreateObservableCounter(KvChatMetricNames.DecodeStepRows, () => ObserveSteps(rows: true), "{token}", "Session steps computed by those Runs.");
            TimeToFirstToken = meter.CreateHistogram(
                KvChatMetricNames.TimeToFirstToken,
                "s",
                "Time from the start of a request to its first sampled token.",
                tags: null,
                new InstrumentAdvice<double> { HistogramBucketBoundaries = TimeToFirstTokenBuckets });
            DecodeRate = meter.CreateHistogram(
                KvChatMetricNames.DecodeTokensPerSecond,
                "{token}/s",
                "Tokens after the first divided by the time from the first token to the end of the reply.",
                tags: null,
                new InstrumentAdvice<double> { HistogramBucketBoundaries = DecodeRateBuckets });
            meter.CreateObservableUpDownCounter(KvChatMetricNames.ActiveSessions, () => Observe(busy: false), "{session}", "Sessions alive (one GenAI generator and its KV cache each).");
            meter.CreateObservableUpDownCounter(KvChatMetricNames.BusySessions, () => Observe(busy: true), "{session}", "Sessions serving a request.");
        }

        public Counter<long> CachedTokens { get; }

        public Counter<long> PrefilledTokens { get; }

        public Counter<long> OutputTokens { get; }

        public Counter<long> Evictions { get; }

        public Counter<long> Discards { get; }

        public Counter<long> Forks { get; }

        public Counter<long> ForkedTokens { get; }

        public Counter<long> PrefixesLoaded { get; }

        public Histogram<double> TimeToFirstToken { get; }

        public Histogram<double> DecodeRate { get; }

        public void Add(KvChatMetrics client)
        {
            lock (_clients)
            {
                _clients.Add(client);
            }
        }

        public void Remove(KvChatMetrics client)
        {
            lock (_clients)
            {
                _clients.Remove(client);
            }
        }

        private List<Measurement<long>> ObserveSteps(bool rows)
        {
            KvChatMetrics[] clients;
            lock (_clients)
            {
                clients = [.. _clients];
            }

            var sums = new Dictionary<string, long>(StringComparer.Ordinal);
            foreach (var client in clients)
            {
                if (client._steps?.Invoke() is { } steps)
                {
                    var model = (string)client._model.Value!;
                    sums[model] = sums.GetValueOrDefault(model) + (rows ? steps.Rows : steps.Steps);
                }
            }

            return [.. sums.Select(p => new Measurement<long>(p.Value, new KeyValuePair<string, object?>(KvChatMetricNames.ModelTag, p.Key)))];
        }

        private List<Measurement<long>> Observe(bool busy)
        {
            KvChatMetrics[] clients;
            lock (_clients)
            {
                clients = [.. _clients];
            }

            // One measurement per model id: clients of the same model add up.
            var measurements = new List<Measurement<long>>(clients.Length);
            var sums = new Dictionary<string, long>(StringComparer.Ordinal);
            foreach (var client in clients)
            {
                var (active, busyCount) = client._sessions();
                var model = (string)client._model.Value!;
                sums[model] = sums.GetValueOrDefault(model) + (busy ? busyCount : active);
            }

            foreach (var (model, value) in sums)
            {
                measurements.Add(new Measurement<long>(value, new KeyValuePair<string, object?>(KvChatMetricNames.ModelTag, model)));
            }

            return measurements;
        }
    }
}
