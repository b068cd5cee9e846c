using System.Text.RegularExpressions;
using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Xunit;

namespace KvChat.Tests.Hardening;

/// <summary>
/// Every rejected option gets one clean sentence that names the option and the value it was given (before .NET's
/// own "(Parameter 'options')" suffix), never a message wrapped in another or an "Actual value was" line.
/// </summary>
public sealed partial class OptionMessageTests
{
    private static readonly string TinyPath = TestModels.PathOf(ModelKitOptions.Tiny);

    /// <summary>Unknown AdditionalProperties keys are an error only when asked for.</summary>
    private static KvChatClientOptions Strict => new() { RejectUnknownAdditionalProperties = true };

    public static TheoryData<string, string, string> ChatOptionCases => new()
    {
        { "temperature-negative", "ChatOptions.Temperature", "-1" },
        { "temperature-nan", "ChatOptions.Temperature", "NaN" },
        { "topp-zero", "ChatOptions.TopP", " 0;" },
        { "topp-above-one", "ChatOptions.TopP", "1.5" },
        { "topk-zero", "ChatOptions.TopK", " 0;" },
        { "topk-negative", "ChatOptions.TopK", "-3" },
        { "frequency-infinite", "ChatOptions.FrequencyPenalty", "Infinity" },
        { "presence-nan", "ChatOptions.PresencePenalty", "NaN" },
        { "max-output-zero", "ChatOptions.MaxOutputTokens", " 0;" },
        { "stop-empty", "ChatOptions.StopSequences[1]", "''" },
        { "model-id", "ChatOptions.ModelId", "'other-model'" },
        { "raw-representation", "ChatOptions.RawRepresentationFactory", "Object" },
        { "additional-property", "ChatOptions.AdditionalProperties", "'mystery_knob'" },
        { "top-k-knob-zero", "ChatOptions.AdditionalProperties['top_k']", " 0." },
        { "seed-knob-text", "ChatOptions.AdditionalProperties['seed']", "abc" },
        { "tool-mode-without-tools", "ChatOptions.ToolMode", "RequireAny" },
        { "tool-mode-unknown-tool", "ChatOptions.ToolMode", "'nope'" },
        { "conversation-id-off", "ChatOptions.ConversationId", "'conv-1'" },
    };

    public static TheoryData<string, string, string> ClientOptionCases => new()
    {
        { "max-sessions", "KvChatClientOptions.MaxSessions", " 0;" },
        { "context-tokens", "KvChatClientOptions.ContextTokens", " 8;" },
        { "max-cache-bytes", "KvChatClientOptions.MaxCacheBytes", "-1" },
        { "block-size", "KvChatClientOptions.BlockSize", "5000" },
        { "max-conversations", "KvChatClientOptions.MaxConversations", " 0;" },
        { "reply-memo", "KvChatClientOptions.ReplyMemoCapacity", "-3" },
        { "context-above-model", "KvChatClientOptions.ContextTokens", "100000" },
    };

    [Theory]
    [MemberData(nameof(ChatOptionCases))]
    public void BadChatOption_OneSentenceNamingTheOptionAndTheValue(string scenario, string option, string value)
    {
        using var client = new KvChatClient(TinyPath, Strict);
        var error = Assert.ThrowsAny<Exception>(() => client.GetStreamingResponseAsync([new(ChatRole.User, "Hi")], ChatOptionsFor(scenario)));
        Assert.True(error is ArgumentException or NotSupportedException, error.GetType().Name);
        AssertOneSentence(error.Message, option, value);
    }

    [Theory]
    [MemberData(nameof(ChatOptionCases))]
    public void BadChatOption_SameMessageFromGetResponseAsync(string scenario, string option, string value)
    {
        using var client = new KvChatClient(TinyPath, Strict);
        // Validated eagerly: the call itself throws, before any task exists.
        var error = Assert.ThrowsAny<Exception>(() => { _ = client.GetResponseAsync([new(ChatRole.User, "Hi")], ChatOptionsFor(scenario)); });
        AssertOneSentence(error.Message, option, value);
    }

    [Theory]
    [MemberData(nameof(ClientOptionCases))]
    public void BadClientOption_OneSentenceNamingTheOptionAndTheValue(string scenario, string option, string value)
    {
        var error = Assert.ThrowsAny<ArgumentException>(() =>
        {
            var options = new KvChatClientOptions();
            switch (scenario)
            {
                case "max-sessions": options.MaxSessions = 0; break;
                case "context-tokens": options.ContextTokens = 8; break;
                case "max-cache-bytes": options.MaxCacheBytes = -1; break;
                case "block-size": options.BlockSize = 5000; break;
                case "max-conversations": options.MaxConversations = 0; break;
                case "reply-memo": options.ReplyMemoCapacity = -3; break;
                default:
                    options.ContextTokens = 100000;
                    using (new KvChatClient(TinyPath, options))
                    {
                    }

                    break;
            }
        });
        AssertOneSentence(error.Message, option, value);
    }

    private static ChatOptions ChatOptionsFor(string scenario)
    {
        var tool = AIFunctionFactory.Create(() => 1, "known");
        return scenario switch
        {
            "temperature-negative" => new() { Temperature = -1 },
            "temperature-nan" => new() { Temperature = float.NaN },
            "topp-zero" => new() { TopP = 0 },
            "topp-above-one" => new() { TopP = 1.5f },
            "topk-zero" => new() { TopK = 0 },
            "topk-negative" => new() { TopK = -3 },
            "frequency-infinite" => new() { FrequencyPenalty = float.PositiveInfinity },
            "presence-nan" => new() { PresencePenalty = float.NaN },
            "max-output-zero" => new() { MaxOutputTokens = 0 },
            "stop-empty" => new() { StopSequences = ["ok", ""] },
            "model-id" => new() { ModelId = "other-model" },
            "raw-representation" => new() { RawRepresentationFactory = _ => new object() },
            "additional-property" => new() { AdditionalProperties = new() { ["mystery_knob"] = 1 } },
            "top-k-knob-zero" => new() { AdditionalProperties = new() { ["top_k"] = 0 } },
            "seed-knob-text" => new() { AdditionalProperties = new() { ["seed"] = "abc" } },
            "tool-mode-without-tools" => new() { ToolMode = ChatToolMode.RequireAny },
            "tool-mode-unknown-tool" => new() { Tools = [tool], ToolMode = ChatToolMode.RequireSpecific("nope") },
            "conversation-id-off" => new() { ConversationId = "conv-1" },
            _ => throw new ArgumentOutOfRangeException(nameof(scenario), scenario, "Unknown scenario."),
        };
    }

    private static void AssertOneSentence(string message, string option, string value)
    {
        var text = ParameterSuffix().Replace(message, "");
        Assert.DoesNotContain('\n', text);
        Assert.DoesNotContain("Actual value", text, StringComparison.Ordinal);
        Assert.DoesNotContain("(Parameter", text, StringComparison.Ordinal);
        Assert.Single(SentenceEnd().Matches(text));
        Assert.EndsWith(".", text, StringComparison.Ordinal);
        Assert.StartsWith(option + " ", text, StringComparison.Ordinal);
        Assert.Contains(value, text, StringComparison.Ordinal);
    }

    [GeneratedRegex(@" \(Parameter '\w+'\)$")]
    private static partial Regex ParameterSuffix();

    [GeneratedRegex(@"[.!?](\s|$)")]
    private static partial Regex SentenceEnd();
}
