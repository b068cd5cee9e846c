using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using KvChat.AspNetCore;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Xunit;

namespace KvChat.AspNetCore.Tests;

/// <summary>What no model can be made to do on purpose: a chat client that fails, and clients on other machines.</summary>
public sealed class ServerFaultAndAccessTests
{
    private static CancellationToken Cancel => TestContext.Current.CancellationToken;

    private const string Body = """{"model":"fake","messages":[{"role":"user","content":"Hi"}]}""";

    private const string StreamBody = """{"model":"fake","stream":true,"messages":[{"role":"user","content":"Hi"}]}""";

    private static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");

    [Fact]
    public async Task ChatClientFault_Is500ServerError_WithoutItsMessage()
    {
        await using var app = await StartAsync(new FailingChatClient(updatesBeforeFault: 0), "127.0.0.1");
        using var http = Http(app);

        foreach (var body in new[] { Body, StreamBody })
        {
            using var response = await http.PostAsync("v1/chat/completions", Json(body), Cancel);
            var text = await response.Content.ReadAsStringAsync(Cancel);

            Assert.Equal(HttpStatusCode.InternalServerError, response.StatusCode);
            var error = JsonDocument.Parse(text).RootElement.GetProperty("error");
            Assert.Equal("server_error", error.GetProperty("type").GetString());
            Assert.DoesNotContain(FailingChatClient.Secret, text, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task FaultAfterTheStreamStarted_IsAnErrorEvent_AndNoDone()
    {
        await using var app = await StartAsync(new FailingChatClient(updatesBeforeFault: 2), "127.0.0.1");
        using var http = Http(app);

        using var response = await http.PostAsync("v1/chat/completions", Json(StreamBody), Cancel);
        var events = (await response.Content.ReadAsStringAsync(Cancel)).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(4, events.Length); // role, two pieces of text, the error
        Assert.Equal("server_error", JsonDocument.Parse(events[^1]["data: ".Length..]).RootElement.GetProperty("error").GetProperty("type").GetString());
        Assert.DoesNotContain("[DONE]", events[^1], StringComparison.Ordinal);
    }

    [Fact]
    public async Task RemoteClient_Is403UnlessAllowed()
    {
        var address = NetworkInterface.GetAllNetworkInterfaces()
            .Where(n => n.OperationalStatus == OperationalStatus.Up)
            .SelectMany(n => n.GetIPProperties().UnicastAddresses)
            .Select(a => a.Address)
            .FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork && !IPAddress.IsLoopback(a));
        Assert.SkipWhen(address is null, "This machine has no non-loopback IPv4 address to call from.");

        await using (var closed = await StartAsync(new FailingChatClient(0), address.ToString()))
        {
            using var http = Http(closed);
            using var response = await http.GetAsync("v1/models", Cancel);
            Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
            Assert.Equal("permission_error", JsonDocument.Parse(await response.Content.ReadAsStringAsync(Cancel)).RootElement.GetProperty("error").GetProperty("type").GetString());
        }

        await using var open = await StartAsync(new FailingChatClient(0), address.ToString(), o => o.AllowRemoteClients = true);
        using var allowed = Http(open);
        var models = JsonDocument.Parse(await allowed.GetStringAsync("v1/models", Cancel)).RootElement;
        Assert.Equal("fake", models.GetProperty("data")[0].GetProperty("id").GetString());
    }

    private static async Task<WebApplication> StartAsync(IChatClient client, string host, Action<OpenAIChatCompletionsOptions>? configure = null)
    {
        var builder = WebApplication.CreateBuilder();
        builder.WebHost.UseUrls($"http://{host}:0");
        builder.Logging.ClearProviders();
        builder.Services.AddChatClient(client);
        var app = builder.Build();
        app.MapOpenAIChatCompletions(o =>
        {
            o.ModelId = "fake";
            configure?.Invoke(o);
        });
        await app.StartAsync(Cancel);
        return app;
    }

    private static HttpClient Http(WebApplication app) => new() { BaseAddress = new Uri(app.Urls.Single() + "/"), Timeout = TimeSpan.FromSeconds(30) };

    /// <summary>A chat client that says a few words and then fails as a bug would (pure logic: no model involved).</summary>
    private sealed class FailingChatClient(int updatesBeforeFault) : IChatClient
    {
        public const string Secret = "internal detail";

        public Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default) =>
            throw new InvalidOperationException(Secret);

        public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(
            IEnumerable<ChatMessage> messages, ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            for (var i = 0; i < updatesBeforeFault; i++)
            {
                await Task.Yield();
                yield return new ChatResponseUpdate(ChatRole.Assistant, $"word{i} ");
            }

            throw new InvalidOperationException(Secret);
        }

        public object? GetService(Type serviceType, object? serviceKey = null) => null;

        public void Dispose()
        {
        }
    }
}
