using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Xunit;

namespace KvChat.AspNetCore.Tests;

/// <summary>
/// A real server for OpenAI clients: <c>MapOpenAIChatCompletions()</c> over KvChatClient on a scripted kit model, on a
/// free loopback port. The model answers every prompt with <see cref="Reply"/>, except a prompt of two messages
/// (a system message, which a tools block always renders, and the question), which it answers with a call of
/// <c>get_weather</c> for Paris. A derived fixture serves another model the same way.
/// </summary>
public class OpenAIServer : IAsyncLifetime
{
    /// <summary>What the model says: JSON, so that a JSON-schema request gets exactly it under constrained decoding.</summary>
    public const string Reply = """{"city":"Paris","celsius":18}""";

    /// <summary>The schema <see cref="Reply"/> follows.</summary>
    public const string ReplySchema = """{"type":"object","properties":{"city":{"type":"string"},"celsius":{"type":"integer"}},"required":["city","celsius"],"additionalProperties":false}""";

    /// <summary>The name the hosting sample serves its demo model under, so that the README's code runs as it is.</summary>
    public const string ModelName = "kvchat-demo";

    public static ModelKitOptions Model { get; } = ModelKitOptions.Tiny with
    {
        Script = Reply,
        ScriptByMessageCount = new Dictionary<int, string>
        {
            [2] = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
        },
    };

    private readonly Func<ModelKitOptions> _model;
    private WebApplication? _app;

    public OpenAIServer()
        : this(() => Model)
    {
    }

    /// <summary>A server over a model of the given kit options (created when the server starts).</summary>
    protected OpenAIServer(Func<ModelKitOptions> model) => _model = model;

    /// <summary>The base address OpenAI clients take: <c>http://127.0.0.1:PORT/v1</c>.</summary>
    public Uri Endpoint { get; private set; } = null!;

    /// <summary>The chat client under the endpoint, observed.</summary>
    public ObservedChatClient Observed { get; private set; } = null!;

    public async ValueTask InitializeAsync()
    {
        var builder = WebApplication.CreateBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        builder.Services.AddKvChatClient(TestModels.PathOf(_model()), o =>
        {
            o.ModelId = ModelName;
            o.MaxSessions = 2;
        }).Use(inner => Observed = new ObservedChatClient(inner));
        _app = builder.Build();
        _app.MapOpenAIChatCompletions();
        await _app.StartAsync(TestContext.Current.CancellationToken);
        _ = _app.Services.GetRequiredService<IChatClient>();
        Endpoint = new Uri(_app.Urls.Single() + "/v1");
    }

    public async ValueTask DisposeAsync()
    {
        if (_app is not null)
        {
            await _app.StopAsync(CancellationToken.None);
            await _app.DisposeAsync();
        }

        GC.SuppressFinalize(this);
    }

    /// <summary>Plain HTTP to the server, for what no SDK shows (status codes, raw events).</summary>
    public HttpClient Http() => new() { BaseAddress = new Uri(Endpoint + "/"), Timeout = TimeSpan.FromSeconds(60) };
}

/// <summary>
/// Passes calls through to the real client and records how each stream ended; <see cref="StreamDelay"/> slows the
/// stream down, so that a test can cancel a reply while it is being generated.
/// </summary>
public sealed class ObservedChatClient(IChatClient inner) : DelegatingChatClient(inner)
{
    private readonly ConcurrentQueue<StreamRecord> _streams = new();

    public TimeSpan StreamDelay { get; set; }

    public IReadOnlyCollection<StreamRecord> Streams => _streams;

    /// <summary>
    /// Checks that the one stream begun after the first <paramref name="before"/> ended cancelled, after at least 2
    /// updates and well before the reply's end; returns what the server saw, for the test's log.
    /// </summary>
    public async Task<string> AssertOneStreamCancelledAsync(int before, CancellationToken cancellationToken)
    {
        var record = _streams.Skip(before).Single();
        var end = await record.Ended.Task.WaitAsync(TimeSpan.FromSeconds(30), cancellationToken);
        Assert.Equal(StreamEnd.Cancelled, end);
        Assert.InRange(record.Updates, 2, OpenAIServer.Reply.Length - 5);
        return $"server side: {end} after {record.Updates} updates";
    }

    public override async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(
        IEnumerable<ChatMessage> messages, ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var record = new StreamRecord();
        _streams.Enqueue(record);
        var completed = false;
        try
        {
            await foreach (var update in base.GetStreamingResponseAsync(messages, options, cancellationToken))
            {
                record.Updates++;
                yield return update;
                if (StreamDelay > TimeSpan.Zero)
                {
                    await Task.Delay(StreamDelay, cancellationToken);
                }
            }

            completed = true;
        }
        finally
        {
            record.Ended.TrySetResult(completed ? StreamEnd.Completed : cancellationToken.IsCancellationRequested ? StreamEnd.Cancelled : StreamEnd.Abandoned);
        }
    }
}

public enum StreamEnd
{
    Completed,
    Cancelled,
    Abandoned,
}

public sealed class StreamRecord
{
    public int Updates { get; set; }

    public TaskCompletionSource<StreamEnd> Ended { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
}
