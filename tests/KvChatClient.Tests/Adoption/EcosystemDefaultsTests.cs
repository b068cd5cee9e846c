using KvChat.ModelKit;
using KvChat.Testing;
using KvChat.Tests.RealFamilies;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;
using Xunit;

namespace KvChat.Tests;

/// <summary>
/// Defaults that let callers written for other providers work unchanged: unknown <c>AdditionalProperties</c> keys are
/// logged at debug and ignored (strictness is opt-in), keys other providers honour are honoured or named in the log,
/// and a trailing or repeated system message goes to the template, which decides.
/// </summary>
public sealed class EcosystemDefaultsTests
{
    private static string TinyPath => TestModels.PathOf(ModelKitOptions.Tiny);

    private static List<ChatMessage> Ask() => [new(ChatRole.User, "Hello there")];

    [Fact]
    public async Task UnknownAndForeignKeys_ByDefault_AreLoggedAtDebugAndIgnored()
    {
        var logs = new CapturingLoggerProvider();
        using var factory = LoggerFactory.Create(b => b.AddProvider(logs).SetMinimumLevel(LogLevel.Debug));
        using var client = new KvChatClient(TinyPath, new KvChatClientOptions { LoggerFactory = factory });
        var options = new ChatOptions
        {
            MaxOutputTokens = 3,
            AdditionalProperties = new() { ["stream_options"] = new Dictionary<string, object> { ["include_usage"] = true }, ["mystery_knob"] = 1, ["repetition_penalty"] = 1.1 },
        };

        var response = await client.GetResponseAsync(Ask(), options, TestContext.Current.CancellationToken);

        Assert.NotNull(response.Usage);
        var debug = logs.Entries.Where(e => e.Level == LogLevel.Debug).Select(e => e.Message).ToList();
        Assert.Contains(debug, m => m.Contains("'mystery_knob'", StringComparison.Ordinal) && m.Contains("not known", StringComparison.Ordinal));
        Assert.Contains(debug, m => m.Contains("'stream_options'", StringComparison.Ordinal) && m.Contains("usage is always reported", StringComparison.Ordinal));
        Assert.Contains(debug, m => m.Contains("'repetition_penalty'", StringComparison.Ordinal) && m.Contains("FrequencyPenalty", StringComparison.Ordinal));
        Assert.DoesNotContain(logs.Entries, e => e.Level >= LogLevel.Warning);
    }

    [Fact]
    public void UnknownKey_WithStrictness_IsRejectedNamingTheKey_ForeignKeysStillPass()
    {
        using var client = new KvChatClient(TinyPath, new KvChatClientOptions { RejectUnknownAdditionalProperties = true });
        var unknown = new ChatOptions { AdditionalProperties = new() { ["mystery_knob"] = 1 } };
        Assert.Contains("mystery_knob", Assert.Throws<NotSupportedException>(() => client.GetStreamingResponseAsync(Ask(), unknown)).Message, StringComparison.Ordinal);

        var known = new ChatOptions { MaxOutputTokens = 1, AdditionalProperties = new() { ["stream_options"] = null, ["top_k"] = 2.0, ["seed"] = 3L } };
        _ = client.GetStreamingResponseAsync(Ask(), known); // Validated eagerly: no exception.
    }

    [Fact]
    public async Task TopKAndSeed_InAdditionalProperties_AreHonouredLikeTheTypedOptions()
    {
        using var client = new KvChatClient(TinyPath);
        var token = TestContext.Current.CancellationToken;

        async Task<string> Say(ChatOptions options) => (await client.GetResponseAsync(Ask(), options, token)).Text;

        // top_k 1 at temperature 1 is greedy; Semantic Kernel sends numbers as doubles.
        var greedy = await Say(new ChatOptions { MaxOutputTokens = 12, Temperature = 0 });
        Assert.Equal(greedy, await Say(new ChatOptions { MaxOutputTokens = 12, Temperature = 1, AdditionalProperties = new() { ["top_k"] = 1.0 } }));

        // seed in AdditionalProperties samples what ChatOptions.Seed samples.
        var typed = await Say(new ChatOptions { MaxOutputTokens = 12, Temperature = 1.5f, Seed = 1234 });
        Assert.Equal(typed, await Say(new ChatOptions { MaxOutputTokens = 12, Temperature = 1.5f, AdditionalProperties = new() { ["seed"] = 1234 } }));
        Assert.Equal(typed, await Say(new ChatOptions { MaxOutputTokens = 12, Temperature = 1.5f, AdditionalProperties = new() { ["seed"] = "1234" } }));
    }

    [Fact]
    public void TrailingAndRepeatedSystemMessages_GoToTheTemplate_Qwen3RendersThem()
    {
        // MEAI's SummarizingChatReducer puts a summary in a system message after others; Qwen3's template renders it in place.
        var family = RealFamily.Get("qwen3");
        var messages = new List<ChatMessage>
        {
            new(ChatRole.System, "You help."),
            new(ChatRole.System, "Summary of earlier turns: the user likes tea."),
            new(ChatRole.User, "What do I like?"),
            new(ChatRole.System, "Answer in one word."),
        };
        var tokens = family.Renderer.Render(messages, null, true).Tokens;

        Assert.Equal(family.Canonical(RealFamily.Json(messages.Select(m => (m.Role.Value, m.Text)))), tokens);
        var text = family.Decode(tokens);
        Assert.Contains("system\nSummary of earlier turns: the user likes tea.", text, StringComparison.Ordinal);
        Assert.EndsWith("system\nAnswer in one word.\nassistant\n", text, StringComparison.Ordinal);
    }

    [Fact]
    public void RepeatedSystemMessage_ATemplateThatRejectsIt_SaysSoInItsOwnWords()
    {
        using var client = new KvChatClient(TinyPath);
        List<ChatMessage> messages = [new(ChatRole.System, "One."), new(ChatRole.User, "Hi"), new(ChatRole.System, "Two.")];
        var error = Assert.Throws<ArgumentException>(() => client.GetStreamingResponseAsync(messages));
        Assert.Contains("A system message must come first", error.Message, StringComparison.Ordinal);
    }
}
