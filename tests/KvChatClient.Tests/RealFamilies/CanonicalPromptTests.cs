using System.Text.Json;
using Microsoft.Extensions.AI;
using Xunit;

namespace KvChat.Tests.RealFamilies;

/// <summary>
/// On real tokenizers and templates (Qwen3, Llama 3.1, Gemma 3): with no control-token string in any text, the prompt
/// ids equal GenAI's <c>Encode(ApplyChatTemplate(...))</c> of the same conversation, over a corpus of awkward text.
/// </summary>
public sealed class CanonicalPromptTests
{
    /// <summary>Leading/trailing spaces and newlines, tabs, blank lines, CJK, emoji, digits, code, HTML, JSON.</summary>
    public static readonly string[] Corpus =
    [
        "Hello there.",
        "  Tell me about Paris.  ",
        " leading space",
        "trailing space ",
        "\nstarts with a newline",
        "\n\nstarts with a blank line",
        "ends with a newline\n",
        "ends with blank lines\n\n\n",
        "tabs\tinside\t\tand at the end\t",
        "\tleading tab",
        "paragraph one.\n\nparagraph two.\n\n\nparagraph three.",
        "windows\r\nline\r\nends",
        "中文的句子，还有日本語のテキストと한국어.",
        "emoji 👩‍💻🎉 flags 🇫🇷🇯🇵 and skin tones 👍🏽",
        "digits 1234567890, 3.14159, -42, 1e10, 2026-12-01",
        "code:\n```python\ndef f(x):\n    return x * 2  # doubled\n```\n",
        "    indented four\n        indented eight\n",
        "Use <b>bold</b>, <i>italics</i> and a <table><tr><td>cell</td></tr></table>.",
        "<div class=\"note\">\n  <p>HTML &amp; entities</p>\n</div>",
        "{\"a\": [1, 2, {\"b\": null}], \"c\": \"text\\n\"}",
        "[\n  {\n    \"key\": \"value\"\n  }\n]",
        "System text ending in a period.",
        "naïve café, Ångström, Zürich; ﬁ ligature; e\u0301 combining",
        "mixed   spaces    and\u00a0non-breaking\u2003em",
        ".",
        " ",
        "a",
    ];

    public static TheoryData<string> Families() => [.. RealFamily.Names];

    private static List<(string Role, string Content)>[] Conversations(string text) =>
    [
        [("user", text)],
        [("system", text), ("user", "Hi.")],
        [("system", "Be brief."), ("user", text)],
        [("user", "Hi."), ("assistant", text), ("user", text)],
    ];

    private static List<ChatMessage> ToChat(IEnumerable<(string Role, string Content)> messages)
        => [.. messages.Select(m => new ChatMessage(new ChatRole(m.Role), m.Content))];

    [Theory]
    [MemberData(nameof(Families))]
    public void Corpus_EveryConversation_EqualsGenAiEncodingOfTheRenderedTemplate(string name)
    {
        var family = RealFamily.Get(name);
        var checkedCount = 0;
        foreach (var text in Corpus)
        {
            foreach (var conversation in Conversations(text))
            {
                var expected = family.Canonical(RealFamily.Json(conversation));
                var actual = family.Renderer.Render(ToChat(conversation), null, addGenerationPrompt: true).Tokens;
                Assert.True(expected.SequenceEqual(actual),
                    $"{name}, {JsonSerializer.Serialize(conversation)}:\n expected {string.Join(",", expected)}\n actual   {string.Join(",", actual)}");
                checkedCount++;
            }
        }

        Assert.Equal(Corpus.Length * 4, checkedCount);
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Corpus_WithoutGenerationPrompt_EqualsGenAiEncoding(string name)
    {
        var family = RealFamily.Get(name);
        foreach (var text in Corpus)
        {
            var conversation = new List<(string, string)> { ("user", "Question?"), ("assistant", text) };
            Assert.Equal(family.Canonical(RealFamily.Json(conversation), addGenerationPrompt: false),
                family.Renderer.Render(ToChat(conversation), null, addGenerationPrompt: false).Tokens);
        }
    }

    [Fact]
    public void Qwen3_SystemTextBeforeTheToolsBlock_MergesAcrossTheBoundary()
    {
        // The template writes "\n\n" after the system text: "." + "\n\n" is one token (382), as in the canonical encoding.
        var family = RealFamily.Get("qwen3");
        var tool = AIFunctionFactory.Create((string city) => city, "get_weather", "Gets the weather.");
        var options = new ChatOptions { Tools = [tool] };
        var tokens = family.Renderer.Render([new(ChatRole.System, "Be helpful."), new(ChatRole.User, "\nWeather in Paris?")], options, true).Tokens;

        Assert.Contains(382, tokens);
        Assert.Contains(271, tokens); // "\n" + the user text's leading "\n" is "\n\n".
        var text = family.Decode(tokens);
        Assert.Contains("Be helpful.\n\n# Tools", text, StringComparison.Ordinal);
        Assert.Contains("\"name\": \"get_weather\"", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Qwen3_WithTools_EqualsGenAiEncodingOfTheSameToolsJson()
    {
        var family = RealFamily.Get("qwen3");
        var tool = AIFunctionFactory.Create((string city, int days) => city, "get_weather", "Gets the weather <b>now</b>, 中文.");
        var options = new ChatOptions { Tools = [tool] };
        foreach (var text in Corpus)
        {
            var messages = new List<(string, string)> { ("system", text), ("user", text) };
            var toolsJson = JsonSerializer.Serialize(new[]
            {
                new { type = "function", function = new { name = tool.Name, description = tool.Description, parameters = tool.JsonSchema } },
            });
            Assert.Equal(family.Canonical(RealFamily.Json(messages), toolsJson), family.Renderer.Render(ToChat(messages), options, true).Tokens);
        }
    }

    [Fact]
    public void Gemma3_OrdinaryAddedTokens_AreOneIdEach()
    {
        // Gemma 3's 6,406 non-special added tokens ("\n\n", "<b>", "<table>"...) are vocabulary, not control tokens.
        var family = RealFamily.Get("gemma3");
        var text = "Use <b>bold</b> and <table><tr><td>x</td></tr></table>\n\nthen\t\tmore.";
        var tokens = family.Renderer.Render([new(ChatRole.User, text)], null, true).Tokens;

        Assert.Contains(family.IdOf("<b>"), tokens);
        Assert.Contains(family.IdOf("<table>"), tokens);
        Assert.Contains(family.IdOf("\n\n"), tokens);
        Assert.DoesNotContain("<b>", family.Renderer.ControlTokens);
        Assert.Contains("<start_of_turn>", family.Renderer.ControlTokens);
        Assert.Equal(family.Canonical(RealFamily.Json([("user", text)])), tokens);
    }

    [Fact]
    public void Qwen3_ControlTokens_AreSpecialOnesAndTheTagsTheTemplateWrites()
    {
        var control = RealFamily.Get("qwen3").Renderer.ControlTokens;
        foreach (var token in new[] { "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>" })
        {
            Assert.Contains(token, control);
        }

        Assert.DoesNotContain("<|fim_prefix|>", control); // Not special, not written by the template: vocabulary.
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Trim_InTheTemplate_ActsOnTheRealText(string name)
    {
        // Llama 3.1 and Gemma 3 trim message text; the renderer must let them (no placeholders).
        var family = RealFamily.Get(name);
        var text = family.Decode(family.Renderer.Render([new(ChatRole.User, "  Tell me about Paris.  ")], null, true).Tokens);
        var trims = family.Folder.ChatTemplate!.Contains("trim", StringComparison.Ordinal);
        Assert.Equal(!trims, text.Contains("  Tell me about Paris.  ", StringComparison.Ordinal));
        Assert.Contains("Tell me about Paris.", text, StringComparison.Ordinal);
    }
}
