using System.ClientModel;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using OpenAI;
using Xunit;
using OpenAIChat = OpenAI.Chat;

namespace KvChat.AspNetCore.Tests;

/// <summary>
/// A reasoning model (Qwen3's tokenizer and template) behind the endpoint: the reasoning is <c>reasoning_content</c>,
/// never part of the text, streamed and not; <c>reasoning_content</c> sent back in the history is rendered as the
/// template renders it; and what the OpenAI .NET SDK, MEAI's OpenAI client and the npm package make of it.
/// </summary>
[Collection(nameof(NodeClients))]
public sealed class ReasoningTests(ReasoningOpenAIServer server) : IClassFixture<ReasoningOpenAIServer>
{
    private const string Model = OpenAIServer.ModelName;

    private const string Tools = """[{"type":"function","function":{"name":"get_weather","description":"Weather.","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]""";

    private static CancellationToken Cancel => TestContext.Current.CancellationToken;

    private static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");

    private static async Task<JsonElement> CompleteAsync(HttpClient http, string body)
    {
        using var response = await http.PostAsync("chat/completions", Json(body), Cancel);
        var text = await response.Content.ReadAsStringAsync(Cancel);
        Assert.True(response.StatusCode == HttpStatusCode.OK, text);
        return JsonDocument.Parse(text).RootElement;
    }

    [Fact]
    public async Task Completion_ReasoningModel_ReasoningIsReasoningContentAndTheAnswerIsContent()
    {
        using var http = server.Http();

        var json = await CompleteAsync(http, $$"""{"model":"{{Model}}","messages":[{"role":"user","content":"Hi!"}]}""");

        var choice = json.GetProperty("choices")[0];
        var message = choice.GetProperty("message");
        Assert.Equal(ReasoningOpenAIServer.Thought, message.GetProperty("reasoning_content").GetString());
        Assert.Equal(ReasoningOpenAIServer.Answer, message.GetProperty("content").GetString());
        Assert.Equal("stop", choice.GetProperty("finish_reason").GetString());
        Assert.Equal(JsonValueKind.Null, message.GetProperty("refusal").ValueKind);
    }

    [Fact]
    public async Task Stream_ReasoningModel_ReasoningArrivesAsReasoningContentDeltasBeforeTheAnswer()
    {
        using var http = server.Http();
        var body = $$"""{"model":"{{Model}}","messages":[{"role":"user","content":"Hi!"}],"stream":true}""";
        using var request = new HttpRequestMessage(HttpMethod.Post, "chat/completions") { Content = Json(body) };
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, Cancel);

        var deltas = ServerSentEvents.Chunks(await response.Content.ReadAsStringAsync(Cancel))
            .Select(c => c.GetProperty("choices")[0].GetProperty("delta")).ToList();

        string? Field(JsonElement delta, string name) => delta.TryGetProperty(name, out var value) ? value.GetString() : null;
        var reasoning = deltas.Select(d => Field(d, "reasoning_content")).ToList();
        var content = deltas.Select(d => Field(d, "content")).ToList();
        Assert.Equal(ReasoningOpenAIServer.Thought, string.Concat(reasoning));
        Assert.Equal(ReasoningOpenAIServer.Answer, string.Concat(content));
        Assert.True(reasoning.Count(r => r is not null) > 1, "the reasoning streams in pieces");
        Assert.True(reasoning.FindLastIndex(r => r is not null) < content.FindIndex(c => c is { Length: > 0 }), "the reasoning comes before the answer");
        Assert.DoesNotContain(deltas, d => Field(d, "reasoning_content") is not null && Field(d, "content") is not null);
    }

    [Fact]
    public async Task History_ReasoningContentOfAToolCallTurn_IsRenderedBack_SoTheWholeTurnComesFromTheCache()
    {
        using var http = server.Http();
        const string Question = """{"role":"system","content":"You are a travel agent."},{"role":"user","content":"Weather in Paris?"}""";
        var call = await CompleteAsync(http, $$"""{"model":"{{Model}}","tools":{{Tools}},"messages":[{{Question}}]}""");
        var message = call.GetProperty("choices")[0].GetProperty("message");
        Assert.Equal("tool_calls", call.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        Assert.Equal(ReasoningOpenAIServer.Thought, message.GetProperty("reasoning_content").GetString());
        Assert.Equal(JsonValueKind.Null, message.GetProperty("content").ValueKind);
        var callId = Assert.Single(message.GetProperty("tool_calls").EnumerateArray()).GetProperty("id").GetString();

        async Task<JsonElement> ToolStepAsync(string assistant) => (await CompleteAsync(http, $$"""
            {"model":"{{Model}}","tools":{{Tools}},"messages":[{{Question}},{{assistant}},
              {"role":"tool","tool_call_id":"{{callId}}","content":"18C"}]}
            """)).GetProperty("usage");

        // Qwen3's template keeps the reasoning of a turn after the last user query: sent back, the call turn is
        // rendered as it was generated, and all of it is served from the cache.
        var withReasoning = await ToolStepAsync(message.GetRawText());
        var usage = call.GetProperty("usage");
        var generated = usage.GetProperty("prompt_tokens").GetInt32() + usage.GetProperty("completion_tokens").GetInt32();
        Assert.Equal(generated, withReasoning.GetProperty("prompt_tokens_details").GetProperty("cached_tokens").GetInt32());

        // Without it the template renders the call turn without its reasoning: the prompt is shorter and parts from
        // the cache at the start of the call turn.
        var bare = JsonNode.Parse(message.GetRawText())!.AsObject();
        Assert.True(bare.Remove("reasoning_content"));
        var withoutReasoning = await ToolStepAsync(bare.ToJsonString());
        Assert.True(withoutReasoning.GetProperty("prompt_tokens").GetInt32() < withReasoning.GetProperty("prompt_tokens").GetInt32());
        Assert.True(withoutReasoning.GetProperty("prompt_tokens_details").GetProperty("cached_tokens").GetInt32() < generated);
    }

#pragma warning disable SCME0001 // JsonPatch, the OpenAI SDK's view of fields it has no property for, is experimental.
    [Fact]
    public async Task OpenAISdk_TextIsTheAnswer_TheReasoningIsInThePatch_StreamedAndNot()
    {
        var chat = new OpenAIChat.ChatClient(Model, new ApiKeyCredential("not-needed"), new OpenAIClientOptions { Endpoint = server.Endpoint, RetryPolicy = null });
        List<OpenAIChat.ChatMessage> history = [new OpenAIChat.UserChatMessage("Hi!")];

        var result = await chat.CompleteChatAsync(history, new OpenAIChat.ChatCompletionOptions(), Cancel);
        Assert.Equal(ReasoningOpenAIServer.Answer, Assert.Single(result.Value.Content).Text);
        Assert.True(result.Value.Patch.TryGetValue("$.choices[0].message.reasoning_content"u8, out string? reasoning));
        Assert.Equal(ReasoningOpenAIServer.Thought, reasoning);
        var raw = JsonDocument.Parse(result.GetRawResponse().Content.ToString()).RootElement;
        Assert.Equal(ReasoningOpenAIServer.Thought, raw.GetProperty("choices")[0].GetProperty("message").GetProperty("reasoning_content").GetString());

        var text = new StringBuilder();
        var streamedReasoning = new StringBuilder();
        await foreach (var update in chat.CompleteChatStreamingAsync(history, new OpenAIChat.ChatCompletionOptions(), Cancel))
        {
            text.AppendJoin(string.Empty, update.ContentUpdate.Select(p => p.Text));
            if (update.Patch.TryGetValue("$.choices[0].delta.reasoning_content"u8, out string? piece))
            {
                streamedReasoning.Append(piece);
            }
        }

        Assert.Equal(ReasoningOpenAIServer.Answer, text.ToString());
        Assert.Equal(ReasoningOpenAIServer.Thought, streamedReasoning.ToString());
    }
#pragma warning restore SCME0001

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task MeaiOpenAIClient_ReasoningIsTextReasoningContent(bool streamed)
    {
        using var client = new OpenAIClient(new ApiKeyCredential("not-needed"), new OpenAIClientOptions { Endpoint = server.Endpoint, RetryPolicy = null })
            .GetChatClient(Model)
            .AsIChatClient();
        List<ChatMessage> history = [new(ChatRole.User, "Hi!")];

        var response = streamed
            ? await client.GetStreamingResponseAsync(history, cancellationToken: Cancel).ToChatResponseAsync(Cancel)
            : await client.GetResponseAsync(history, cancellationToken: Cancel);

        var contents = response.Messages.SelectMany(m => m.Contents).ToList();
        Assert.Equal(ReasoningOpenAIServer.Thought, string.Concat(contents.OfType<TextReasoningContent>().Select(r => r.Text)));
        Assert.Equal(ReasoningOpenAIServer.Answer, response.Text);
    }

    [Fact]
    public async Task NodeOpenAIPackage_SeesReasoningContent_StreamedAndNot_AndSendsItBackInAToolLoop()
    {
        await NodeOpenAIClientTests.InstallAsync();

        var run = await NodeOpenAIClientTests.RunAsync("node", ["reasoning.mjs"],
        [
            new("KVCHAT_BASE_URL", server.Endpoint.ToString()),
            new("KVCHAT_MODEL", Model),
            new("KVCHAT_THOUGHT", ReasoningOpenAIServer.Thought),
            new("KVCHAT_ANSWER", ReasoningOpenAIServer.Answer),
        ], TimeSpan.FromMinutes(2));

        Assert.True(run.ExitCode == 0, $"node reasoning.mjs failed:\n{run.Output}");
        var line = run.Output.Split('\n').Single(l => l.StartsWith("RESULT ", StringComparison.Ordinal));
        TestContext.Current.TestOutputHelper?.WriteLine($"npm openai, reasoning: {line}");
        var result = JsonDocument.Parse(line["RESULT ".Length..]).RootElement;
        Assert.True(result.GetProperty("reasoningPieces").GetInt32() > 1);
        Assert.Equal(result.GetProperty("toolStep2").GetProperty("expected").GetInt32(), result.GetProperty("toolStep2").GetProperty("cached").GetInt32());
    }
}
