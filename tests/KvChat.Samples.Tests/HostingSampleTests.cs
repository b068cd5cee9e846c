using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using KvChat.HostingSample;
using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Options;
using Xunit;

namespace KvChat.Samples.Tests;

/// <summary>
/// Starts the hosting sample in process, as <c>Main</c> builds it, on a free loopback port (<c>--urls http://127.0.0.1:0</c>),
/// and calls it over HTTP.
/// </summary>
public sealed class HostingSampleTests
{
    /// <summary>Console logging off: other tests in this assembly redirect <see cref="Console.Out"/>.</summary>
    private static readonly string[] Quiet = ["--urls", "http://127.0.0.1:0", "--Logging:Console:LogLevel:Default=None"];

    private static CancellationToken Cancel => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Chat_TwiceWithAGrowingHistory_TheSecondComesFromTheCache_StreamArrivesInChunks_StatsCountIt()
    {
        await using var app = await StartAsync($"--KvChat:ModelPath={TestModels.PathOf(TestModels.Tiny)}", "--KvChat:MaxSessions=1");
        using var http = Client(app);

        List<object> history = [new { role = "system", content = "You are a concise assistant." }, new { role = "user", content = "What is a KV cache?" }];
        var first = await ChatAsync(http, history, maxTokens: 16);
        Assert.Equal(0, first.Usage.CachedInputTokens);
        Assert.Equal(first.Usage.InputTokens, first.Usage.PrefilledInputTokens);
        Assert.InRange(first.Usage.OutputTokens, 1, 16);

        history.Add(new { role = "assistant", content = first.Reply });
        history.Add(new { role = "user", content = "Why does reusing it help?" });
        var second = await ChatAsync(http, history, maxTokens: 16);
        Assert.True(second.Usage.CachedInputTokens > 0, $"cached {second.Usage.CachedInputTokens}");
        Assert.True(second.Usage.CachedInputTokens >= first.Usage.InputTokens, "the whole first prompt is served from the cache");
        Assert.Equal(second.Usage.InputTokens, second.Usage.CachedInputTokens + second.Usage.PrefilledInputTokens);

        // The same conversation streamed: the same text (greedy), in several events, then the usage.
        var (chunks, done) = await StreamAsync(http, history, maxTokens: 16);
        Assert.True(chunks.Count > 1, $"{chunks.Count} text event(s)");
        Assert.Equal(second.Reply, string.Concat(chunks));
        Assert.Equal(second.Usage.InputTokens, done.Usage.InputTokens);
        Assert.True(done.Usage.CachedInputTokens > second.Usage.CachedInputTokens, "the streamed request found the second prompt cached");

        var stats = await http.GetFromJsonAsync<JsonElement>("/stats", Cancel);
        Assert.Equal(3, stats.GetProperty("requests").GetInt64());
        Assert.Equal(1, stats.GetProperty("sessions").GetInt32());
        Assert.Equal(second.Usage.CachedInputTokens + done.Usage.CachedInputTokens, stats.GetProperty("cachedInputTokens").GetInt64());
        await app.StopAsync(Cancel);
    }

    [Fact]
    public async Task EmptyModelPath_WritesTheDemoModelAtStartUp_AndServesIt()
    {
        var cache = ConsoleChatTests.TemporaryDirectory();
        await using var app = await StartAsync("--KvChat:ModelPath=", "--DemoModel:Size=tiny", $"--DemoModel:CacheDirectory={cache}");
        using var http = Client(app);

        var reply = await ChatAsync(http, [new { role = "user", content = "Hello" }], maxTokens: 4);

        Assert.Equal(DemoModel.FolderName(ModelKitOptions.Tiny), Path.GetFileName(Assert.Single(Directory.GetDirectories(cache))));
        Assert.InRange(reply.Usage.OutputTokens, 1, 4);
        await app.StopAsync(Cancel);
    }

    [Theory]
    [InlineData("{}")]
    [InlineData("""{ "messages": [] }""")]
    [InlineData("""{ "messages": [{ "role": "robot", "content": "Hi" }] }""")]
    [InlineData("""{ "messages": [{ "role": "user" }] }""")]
    [InlineData("""{ "messages": [{ "role": "user", "content": "Hi" }], "maxTokens": 0 }""")]
    public async Task BadRequests_Are400WithTheReason(string body)
    {
        await using var app = await StartAsync($"--KvChat:ModelPath={TestModels.PathOf(TestModels.Tiny)}");
        using var http = Client(app);

        foreach (var path in new[] { "/chat", "/chat/stream" })
        {
            using var content = new StringContent(body, System.Text.Encoding.UTF8, "application/json");
            using var response = await http.PostAsync(path, content, Cancel);
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            Assert.Contains("\"detail\"", await response.Content.ReadAsStringAsync(Cancel), StringComparison.Ordinal);
        }

        await app.StopAsync(Cancel);
    }

    [Theory]
    [InlineData("{", "body")]
    [InlineData("", "body")]
    [InlineData("null", "body")]
    [InlineData("[1, 2]", "body")]
    [InlineData("""{ "messages": "hi" }""", "messages")]
    [InlineData("""{ "messages": [null] }""", "messages[0]")]
    [InlineData("""{ "messages": [{ "role": "user", "content": "Hi" }, null] }""", "messages[1]")]
    [InlineData("""{ "messages": [{ "role": "user", "content": 5 }] }""", "messages[0].content")]
    [InlineData("""{ "messages": [{ "role": 7, "content": "Hi" }] }""", "messages[0].role")]
    [InlineData("""{ "messages": [{ "role": "user", "content": "Hi", "name": "x" }] }""", "name")]
    [InlineData("""{ "messages": [{ "role": "user", "content": "Hi" }], "maxTokens": 1e20 }""", "maxTokens")]
    [InlineData("""{ "messages": [{ "role": "user", "content": "Hi" }], "maxTokens": 99999999999 }""", "maxTokens")]
    [InlineData("""{ "messages": [{ "role": "user", "content": "Hi" }], "maxTokens": "many" }""", "maxTokens")]
    [InlineData("""{ "messages": [{ "role": "user", "content": "Hi" }], "maxTokens": -4 }""", "maxTokens")]
    [InlineData("""{ "messages": [{ "role": "user", "content": "Hi" }], "temperature": -1 }""", "temperature")]
    [InlineData("""{ "messages": [{ "role": "user", "content": "Hi" }], "temperature": 1e50 }""", "temperature")]
    [InlineData("""{ "messages": [{ "role": "user", "content": "Hi" }], "temperature": "hot" }""", "temperature")]
    [InlineData("""{ "messages": [{ "role": "user", "content": "Hi" }], "max_tokens": 5 }""", "max_tokens")]
    [InlineData("""{ "messages": [{ "role": "user", "content": "a\u0000b" }] }""", "messages")]
    public async Task AnythingAClientSends_IsAnswered_BadBodiesAre400ProblemJsonNamingTheField(string body, string field)
    {
        await using var app = await StartAsync($"--KvChat:ModelPath={TestModels.PathOf(TestModels.Tiny)}");
        using var http = Client(app);

        foreach (var path in new[] { "/chat", "/chat/stream" })
        {
            using var content = new StringContent(body, System.Text.Encoding.UTF8, "application/json");
            using var response = await http.PostAsync(path, content, Cancel);
            var text = await response.Content.ReadAsStringAsync(Cancel);
            Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{path}: {(int)response.StatusCode} {text}");
            Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
            var problem = JsonDocument.Parse(text).RootElement;
            Assert.Equal(400, problem.GetProperty("status").GetInt32());
            Assert.Equal(field, problem.GetProperty("field").GetString());
            var detail = problem.GetProperty("detail").GetString()!;
            Assert.DoesNotContain("System.", detail, StringComparison.Ordinal);
            Assert.DoesNotContain("Dto", detail, StringComparison.Ordinal);
            Assert.DoesNotContain("(Parameter", detail, StringComparison.Ordinal);
            if (field != "body")
            {
                Assert.Contains(field is "messages" ? "essage" : field, detail, StringComparison.Ordinal);
            }
        }

        await app.StopAsync(Cancel);
    }

    [Fact]
    public async Task WrongMethodOrPath_IsProblemJsonToo()
    {
        await using var app = await StartAsync($"--KvChat:ModelPath={TestModels.PathOf(TestModels.Tiny)}");
        using var http = Client(app);
        using var wrongMethod = await http.GetAsync("/chat", Cancel);
        using var wrongPath = await http.PostAsync("/nothing", new StringContent("{}"), Cancel);
        Assert.Equal(HttpStatusCode.MethodNotAllowed, wrongMethod.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, wrongPath.StatusCode);
        Assert.Equal("application/problem+json", wrongMethod.Content.Headers.ContentType?.MediaType);
        Assert.Equal("application/problem+json", wrongPath.Content.Headers.ContentType?.MediaType);
        await app.StopAsync(Cancel);
    }

    [Fact]
    public async Task APromptLongerThanTheContext_Is400NotAStreamCutShort()
    {
        await using var app = await StartAsync($"--KvChat:ModelPath={TestModels.PathOf(TestModels.Tiny)}", "--KvChat:ContextTokens=64");
        using var http = Client(app);
        var history = new[] { new { role = "user", content = string.Concat(Enumerable.Repeat("a long question ", 40)) } };

        using var chat = await http.PostAsJsonAsync("/chat", new { messages = history }, Cancel);
        using var stream = await http.PostAsJsonAsync("/chat/stream", new { messages = history }, Cancel);

        Assert.Equal(HttpStatusCode.BadRequest, chat.StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, stream.StatusCode);
        await app.StopAsync(Cancel);
    }

    [Fact]
    public void InvalidSettings_FailAtStartUpNamingTheSetting()
    {
        var e = Assert.Throws<OptionsValidationException>(() =>
            HostingApp.Build([.. Quiet, $"--KvChat:ModelPath={TestModels.PathOf(TestModels.Tiny)}", "--KvChat:MaxSessions=0"]));
        Assert.Contains("KvChat:MaxSessions", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task DefaultAddress_IsLoopbackPort5077()
    {
        await using var app = HostingApp.Build(["--KvChat:ModelPath=" + TestModels.PathOf(TestModels.Tiny), "--Logging:Console:LogLevel:Default=None"]);
        Assert.Equal(HostingApp.DefaultUrl, app.Configuration["urls"]);
        Assert.StartsWith("http://127.0.0.1:", HostingApp.DefaultUrl, StringComparison.Ordinal);
    }

    private static async Task<WebApplication> StartAsync(params string[] settings)
    {
        var app = HostingApp.Build([.. Quiet, .. settings]);
        await app.StartAsync(Cancel);
        return app;
    }

    private static HttpClient Client(WebApplication app)
    {
        var address = Assert.Single(app.Urls);
        Assert.StartsWith("http://127.0.0.1:", address, StringComparison.Ordinal);
        return new HttpClient { BaseAddress = new Uri(address), Timeout = TimeSpan.FromSeconds(60) };
    }

    private static async Task<ChatAnswer> ChatAsync(HttpClient http, IEnumerable<object> messages, int maxTokens)
    {
        using var response = await http.PostAsJsonAsync("/chat", new { messages, maxTokens }, Cancel);
        response.EnsureSuccessStatusCode();
        return (await response.Content.ReadFromJsonAsync<ChatAnswer>(Cancel))!;
    }

    /// <summary>Reads the server-sent events of <c>/chat/stream</c>: the texts of the <c>text</c> events and the <c>done</c> event.</summary>
    private static async Task<(List<string> Chunks, ChatAnswer Done)> StreamAsync(HttpClient http, IEnumerable<object> messages, int maxTokens)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/chat/stream") { Content = JsonContent.Create(new { messages, maxTokens }) };
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, Cancel);
        response.EnsureSuccessStatusCode();
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(Cancel));
        var chunks = new List<string>();
        ChatAnswer? done = null;
        string? eventType = null;
        while (await reader.ReadLineAsync(Cancel) is { } line)
        {
            if (line.StartsWith("event: ", StringComparison.Ordinal))
            {
                eventType = line["event: ".Length..];
            }
            else if (line.StartsWith("data: ", StringComparison.Ordinal))
            {
                var data = JsonDocument.Parse(line["data: ".Length..]).RootElement;
                if (eventType == "text")
                {
                    chunks.Add(data.GetProperty("text").GetString()!);
                }
                else if (eventType == "done")
                {
                    done = data.Deserialize<ChatAnswer>(JsonSerializerOptions.Web);
                }
            }
        }

        Assert.NotNull(done);
        return (chunks, done);
    }

    private sealed record Usage(long InputTokens, long CachedInputTokens, long PrefilledInputTokens, long OutputTokens);

    private sealed record ChatAnswer(string? Reply, string? FinishReason, Usage Usage);
}
