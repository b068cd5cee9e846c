using System.Collections.Concurrent;
using System.Diagnostics.Metrics;

namespace KvChat.Tests;

/// <summary>Records the measurements of chosen instruments with a <see cref="MeterListener"/>.</summary>
internal sealed class MetricRecorder : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly Func<IReadOnlyDictionary<string, object?>, bool> _measurementFilter;
    private readonly ConcurrentQueue<Recorded> _recorded = new();

    private MetricRecorder(Func<Instrument, bool> instrumentFilter, Func<IReadOnlyDictionary<string, object?>, bool> measurementFilter)
    {
        _measurementFilter = measurementFilter;
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrumentFilter(instrument))
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>((i, v, t, _) => Add(i, v, t));
        _listener.SetMeasurementEventCallback<int>((i, v, t, _) => Add(i, v, t));
        _listener.SetMeasurementEventCallback<double>((i, v, t, _) => Add(i, v, t));
        _listener.Start();
    }

    /// <summary>The KvChat meter created by <paramref name="factory"/> (a meter the client made itself has no scope).</summary>
    public static MetricRecorder ForFactory(IMeterFactory factory) =>
        new(i => i.Meter.Name == "KvChat" && ReferenceEquals(i.Meter.Scope, factory), _ => true);

    /// <summary>Every KvChat meter, measurements of the model <paramref name="modelId"/> only (tests run in parallel).</summary>
    public static MetricRecorder ForModel(string modelId) =>
        new(i => i.Meter.Name == "KvChat", tags => tags.TryGetValue("kvchat.model", out var m) && (string?)m == modelId);

    /// <summary>Any meter and instrument the filter picks.</summary>
    public static MetricRecorder For(Func<Instrument, bool> instrumentFilter) => new(instrumentFilter, _ => true);

    public IReadOnlyList<Recorded> Measurements => [.. _recorded];

    public IReadOnlyList<Recorded> Of(string instrument) => [.. _recorded.Where(r => r.Instrument == instrument)];

    public double Sum(string instrument) => Of(instrument).Sum(r => r.Value);

    /// <summary>Reads the observable instruments now and returns what they reported.</summary>
    public IReadOnlyList<Recorded> Observe(string instrument)
    {
        var before = _recorded.Count;
        _listener.RecordObservableInstruments();
        return [.. _recorded.Skip(before).Where(r => r.Instrument == instrument)];
    }

    public void Dispose() => _listener.Dispose();

    private void Add<T>(Instrument instrument, T value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        where T : struct, IConvertible
    {
        var dictionary = new Dictionary<string, object?>();
        foreach (var tag in tags)
        {
            dictionary[tag.Key] = tag.Value;
        }

        if (_measurementFilter(dictionary))
        {
            _recorded.Enqueue(new Recorded(instrument.Name, instrument.Unit, value.ToDouble(System.Globalization.CultureInfo.InvariantCulture), dictionary));
        }
    }

    internal sealed record Recorded(string Instrument, string? Unit, double Value, IReadOnlyDictionary<string, object?> Tags);
}
