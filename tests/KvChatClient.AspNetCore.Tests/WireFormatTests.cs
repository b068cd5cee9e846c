using System.Net;
using System.Text;
using System.Text.Json;
using Xunit;

namespace KvChat.AspNetCore.Tests;

/// <summary>The bytes on the wire, read with plain HTTP: the events of a stream, the reply object, the errors.</summary>
public sealed class WireFormatTests(OpenAIServer server) : IClassFixture<OpenAIServer>
{
    private static CancellationToken Cancel => TestContext.Current.CancellationToken;

    private const string Model = OpenAIServer.ModelName;

    private static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Stream_IsDataEventsWithTheRoleFirst_TheFinishReason_TheUsageChunkWhenAsked_ThenDone(bool includeUsage)
    {
        using var http = server.Http();
        var flag = includeUsage ? "true" : "false";
        var body = $$$"""{"model":"{{{Model}}}","messages":[{"role":"user","content":"Stream it."}],"stream":true,"stream_options":{"include_usage":{{{flag}}}}}""";
        using var request = new HttpRequestMessage(HttpMethod.Post, "chat/completions") { Content = Json(body) };
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, Cancel);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        var chunks = ServerSentEvents.Chunks(await response.Content.ReadAsStringAsync(Cancel));

        Assert.All(chunks, c => Assert.Equal("chat.completion.chunk", c.GetProperty("object").GetString()));
        Assert.Single(chunks.Select(c => c.GetProperty("id").GetString()).Distinct());
        Assert.All(chunks, c => Assert.Equal(Model, c.GetProperty("model").GetString()));
        var first = chunks[0].GetProperty("choices")[0];
        Assert.Equal("assistant", first.GetProperty("delta").GetProperty("role").GetString());
        Assert.Equal(JsonValueKind.Null, first.GetProperty("finish_reason").ValueKind);

        var usageChunks = includeUsage ? 1 : 0;
        var content = chunks.Skip(1).SkipLast(1 + usageChunks).Select(c => c.GetProperty("choices")[0]).ToList();
        Assert.True(content.Count > 1);
        Assert.Equal(OpenAIServer.Reply, string.Concat(content.Select(c => c.GetProperty("delta").GetProperty("content").GetString())));
        Assert.All(content, c => Assert.False(c.GetProperty("delta").TryGetProperty("role", out _)));

        var last = chunks[^(1 + usageChunks)].GetProperty("choices")[0];
        Assert.Equal("stop", last.GetProperty("finish_reason").GetString());
        Assert.Empty(last.GetProperty("delta").EnumerateObject());
        if (includeUsage)
        {
            Assert.Equal(0, chunks[^1].GetProperty("choices").GetArrayLength());
            var usage = chunks[^1].GetProperty("usage");
            Assert.True(usage.GetProperty("prompt_tokens").GetInt32() > 0);
            Assert.InRange(usage.GetProperty("completion_tokens").GetInt32(), content.Count, content.Count + 1);
            Assert.True(usage.GetProperty("prompt_tokens_details").GetProperty("cached_tokens").GetInt32() >= 0);
        }

        Assert.All(chunks.SkipLast(usageChunks), c => Assert.False(c.TryGetProperty("usage", out _)));
    }

    [Fact]
    public async Task Completion_IsAChatCompletionObjectWithCachedTokens()
    {
        using var http = server.Http();
        var body = $$"""{"model":"{{Model}}","messages":[{"role":"user","content":[{"type":"text","text":"Hi, "},{"type":"text","text":"there"}]}],"max_tokens":48,"seed":7,"stop":["never"]}""";

        using var response = await http.PostAsync("chat/completions", Json(body), Cancel);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync(Cancel)).RootElement;
        Assert.Equal("chat.completion", json.GetProperty("object").GetString());
        var choice = Assert.Single(json.GetProperty("choices").EnumerateArray());
        Assert.Equal("assistant", choice.GetProperty("message").GetProperty("role").GetString());
        Assert.Equal(OpenAIServer.Reply, choice.GetProperty("message").GetProperty("content").GetString());
        Assert.Equal("stop", choice.GetProperty("finish_reason").GetString());
        var usage = json.GetProperty("usage");
        Assert.Equal(usage.GetProperty("prompt_tokens").GetInt32() + usage.GetProperty("completion_tokens").GetInt32(), usage.GetProperty("total_tokens").GetInt32());
        Assert.Equal(JsonValueKind.Number, usage.GetProperty("prompt_tokens_details").GetProperty("cached_tokens").ValueKind);
    }

    [Theory]
    [InlineData("not json", 400, null)]
    [InlineData("""{"messages":[{"role":"user","content":"Hi"}]}""", 400, "model")]
    [InlineData("""{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]}""", 404, "model")]
    [InlineData("""{"model":"M"}""", 400, "messages")]
    [InlineData("""{"model":"M","messages":[]}""", 400, "messages")]
    [InlineData("""{"model":"M","messages":[{"role":"robot","content":"Hi"}]}""", 400, "messages[0].role")]
    [InlineData("""{"model":"M","messages":[{"role":"user"}]}""", 400, "messages[0].content")]
    [InlineData("""{"model":"M","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}""", 400, "messages[0].content[0].type")]
    [InlineData("""{"model":"M","messages":[{"role":"user","content":"Hi"},{"role":"assistant","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{oops"}}]}]}""", 400, "messages[1].tool_calls[0].function.arguments")]
    [InlineData("""{"model":"M","messages":[{"role":"tool","content":"18C"}]}""", 400, "messages[0].tool_call_id")]
    [InlineData("""{"model":"M","messages":[{"role":"user","content":"Hi","colour":"red"}]}""", 400, "messages[0].colour")]
    [InlineData("""{"model":"M","messages":[{"role":"user","content":"Hi","reasoning_content":"Hmm."}]}""", 400, "messages[0].reasoning_content")]
    [InlineData("""{"model":"M","messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello","reasoning_content":7},{"role":"user","content":"Hi"}]}""", 400, "messages[1].reasoning_content")]
    [InlineData("""{"model":"M","messages":[{"role":"user","content":"Hi"}],"temperature":3}""", 400, "temperature")]
    [InlineData("""{"model":"M","messages":[{"role":"user","content":"Hi"}],"temperature":"hot"}""", 400, "temperature")]
    [InlineData("""{"model":"M","messages":[{"role":"user","content":"Hi"}],"top_p":1.5}""", 400, "top_p")]
    [InlineData("""{"model":"M","messages":[{"role":"user","content":"Hi"}],"presence_penalty":-3}""", 400, "presence_penalty")]
    [InlineData("""{"model":"M","messages":[{"role":"user","content":"Hi"}],"max_tokens":0}""", 400, "max_tokens")]
    [InlineData("""{"model":"M","messages":[{"role":"user","content":"Hi"}],"max_completion_tokens":-1}""", 400, "max_completion_tokens")]
    [InlineData("""{"model":"M","messages":[{"role":"user","content":"Hi"}],"n":2}""", 400, "n")]
    [InlineData("""{"model":"M","messages":[{"role":"user","content":"Hi"}],"stop":[""]}""", 400, "stop[0]")]
    [InlineData("""{"model":"M","messages":[{"role":"user","content":"Hi"}],"stream_options":{"include_usage":true}}""", 400, "stream_options")]
    [InlineData("""{"model":"M","messages":[{"role":"user","content":"Hi"}],"response_format":{"type":"xml"}}""", 400, "response_format.type")]
    [InlineData("""{"model":"M","messages":[{"role":"user","content":"Hi"}],"response_format":{"type":"json_schema"}}""", 400, "response_format.json_schema.name")]
    [InlineData("""{"model":"M","messages":[{"role":"user","content":"Hi"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"g"}}}""", 400, "tool_choice.function.name")]
    [InlineData("""{"model":"M","messages":[{"role":"user","content":"Hi"}],"tool_choice":"required"}""", 400, "tool_choice")]
    [InlineData("""{"model":"M","messages":[{"role":"user","content":"Hi"}],"tools":[{"type":"retrieval"}]}""", 400, "tools[0].type")]
    [InlineData("""{"model":"M","messages":[{"role":"user","content":"Hi"}],"logprobs":true}""", 400, "logprobs")]
    [InlineData("""{"model":"M","messages":[{"role":"user","content":"Hi"}],"frobnicate":1}""", 400, "frobnicate")]
    public async Task BadRequest_IsOpenAIsErrorShape_WithTheStatusAndTheField(string body, int status, string? param)
    {
        using var http = server.Http();
        foreach (var stream in new[] { false, true })
        {
            var sent = body.Replace("\"M\"", $"\"{Model}\"", StringComparison.Ordinal);
            if (stream && sent.StartsWith('{'))
            {
                sent = sent.Replace("\"stream_options\"", "\"stream\":false,\"stream_options\"", StringComparison.Ordinal);
                sent = sent.Contains("\"stream\":false", StringComparison.Ordinal) ? sent : "{\"stream\":true," + sent[1..];
            }

            using var response = await http.PostAsync("chat/completions", Json(sent), Cancel);
            var text = await response.Content.ReadAsStringAsync(Cancel);
            Assert.True(status == (int)response.StatusCode, $"{(int)response.StatusCode} for {sent}: {text}");
            Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
            var error = JsonDocument.Parse(text).RootElement.GetProperty("error");
            Assert.Equal(["message", "type", "param", "code"], error.EnumerateObject().Select(p => p.Name));
            Assert.Equal("invalid_request_error", error.GetProperty("type").GetString());
            Assert.False(string.IsNullOrWhiteSpace(error.GetProperty("message").GetString()));
            Assert.Equal(param, error.GetProperty("param").GetString());
        }
    }

    [Fact]
    public async Task PromptLongerThanTheContext_Is400OnMessages_StreamedOrNot()
    {
        using var http = server.Http();
        var question = string.Concat(Enumerable.Repeat("a long question ", 200));
        foreach (var stream in new[] { "false", "true" })
        {
            using var response = await http.PostAsync(
                "chat/completions", Json($$"""{"model":"{{Model}}","stream":{{stream}},"messages":[{"role":"user","content":"{{question}}"}]}"""), Cancel);

            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            var error = JsonDocument.Parse(await response.Content.ReadAsStringAsync(Cancel)).RootElement.GetProperty("error");
            Assert.Equal("messages", error.GetProperty("param").GetString());
            Assert.Contains("tokens", error.GetProperty("message").GetString(), StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Models_ListsTheServedModel_AndAnOtherNameIs404()
    {
        using var http = server.Http();

        var list = JsonDocument.Parse(await http.GetStringAsync("models", Cancel)).RootElement;
        using var other = await http.GetAsync("models/gpt-4o", Cancel);
        var one = JsonDocument.Parse(await http.GetStringAsync($"models/{Model}", Cancel)).RootElement;

        Assert.Equal("list", list.GetProperty("object").GetString());
        var model = Assert.Single(list.GetProperty("data").EnumerateArray());
        Assert.Equal(Model, model.GetProperty("id").GetString());
        Assert.Equal("model", model.GetProperty("object").GetString());
        Assert.Equal(Model, one.GetProperty("id").GetString());
        Assert.Equal(HttpStatusCode.NotFound, other.StatusCode);
        Assert.Equal("model_not_found", JsonDocument.Parse(await other.Content.ReadAsStringAsync(Cancel)).RootElement.GetProperty("error").GetProperty("code").GetString());
    }

    [Fact]
    public async Task AssistantToolCallsAndToolResults_InTheHistory_AreRenderedAndCached()
    {
        using var http = server.Http();
        const string Tools = """[{"type":"function","function":{"name":"get_weather","description":"Weather.","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]""";
        var first = $$"""{"model":"{{Model}}","tools":{{Tools}},"messages":[{"role":"developer","content":"You are a travel agent."},{"role":"user","content":"Weather?"}]}""";
        using var call = await http.PostAsync("chat/completions", Json(first), Cancel);
        var message = JsonDocument.Parse(await call.Content.ReadAsStringAsync(Cancel)).RootElement.GetProperty("choices")[0].GetProperty("message");
        Assert.Equal(JsonValueKind.Null, message.GetProperty("content").ValueKind);
        var toolCall = Assert.Single(message.GetProperty("tool_calls").EnumerateArray());

        var second = $$"""
            {"model":"{{Model}}","tools":{{Tools}},"tool_choice":"auto","parallel_tool_calls":false,"messages":[
              {"role":"developer","content":"You are a travel agent."},{"role":"user","content":"Weather?"},
              {{message.GetRawText()}},
              {"role":"tool","tool_call_id":"{{toolCall.GetProperty("id").GetString()}}","content":"18C"}]}
            """;
        using var answer = await http.PostAsync("chat/completions", Json(second), Cancel);
        var json = JsonDocument.Parse(await answer.Content.ReadAsStringAsync(Cancel)).RootElement;

        Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
        Assert.Equal(OpenAIServer.Reply, json.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());
        Assert.True(json.GetProperty("usage").GetProperty("prompt_tokens_details").GetProperty("cached_tokens").GetInt32() > 0);
    }
}
