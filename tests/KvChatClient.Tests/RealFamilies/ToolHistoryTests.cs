using System.Text.Json;
using Microsoft.Extensions.AI;
using Xunit;

namespace KvChat.Tests.RealFamilies;

/// <summary>
/// Tool histories through real templates: calls in the Hugging Face shape (<c>tool_calls: [{type: "function",
/// function: {name, arguments}}]</c>), results as <c>tool</c> messages, no content (null) for an assistant message that
/// only calls tools where the template takes null; a template that cannot render a call or result is an error.
/// </summary>
public sealed class ToolHistoryTests
{
    private static readonly AIFunction Weather = AIFunctionFactory.Create((string city, int days) => $"{city}: sunny", "get_weather", "Gets the weather for a city.");
    private static readonly AIFunction Time = AIFunctionFactory.Create((string zone) => "12:00", "get_time", "Gets the time in a zone.");

    private static List<ChatMessage> History() =>
    [
        new(ChatRole.System, "You are a helpful assistant."),
        new(ChatRole.User, "Weather in Paris for 2 days, and the time in Tokyo?"),
        new(ChatRole.Assistant,
        [
            new FunctionCallContent("call_1", "get_weather", new Dictionary<string, object?> { ["city"] = "Paris", ["days"] = 2 }),
            new FunctionCallContent("call_2", "get_time", new Dictionary<string, object?> { ["zone"] = "Asia/Tokyo" }),
        ]),
        new(ChatRole.Tool, [new FunctionResultContent("call_1", "Paris: sunny, 21 °C")]),
        new(ChatRole.Tool, [new FunctionResultContent("call_2", "12:00")]),
        new(ChatRole.Assistant, "Sunny in Paris; it is noon in Tokyo."),
        new(ChatRole.User, "Thanks! And tomorrow?"),
    ];

    /// <summary>The same history as Hugging Face users write it for Qwen3 (content "" beside calls: its template fails on null).</summary>
    private const string HistoryJson = """
        [{"role":"system","content":"You are a helpful assistant."},
         {"role":"user","content":"Weather in Paris for 2 days, and the time in Tokyo?"},
         {"role":"assistant","content":"","tool_calls":[
           {"id":"call_1","type":"function","function":{"name":"get_weather","arguments":{"city":"Paris","days":2}}},
           {"id":"call_2","type":"function","function":{"name":"get_time","arguments":{"zone":"Asia/Tokyo"}}}]},
         {"role":"tool","tool_call_id":"call_1","content":"Paris: sunny, 21 °C"},
         {"role":"tool","tool_call_id":"call_2","content":"12:00"},
         {"role":"assistant","content":"Sunny in Paris; it is noon in Tokyo."},
         {"role":"user","content":"Thanks! And tomorrow?"}]
        """;

    private static string ToolsJson() => JsonSerializer.Serialize(new[] { Weather, Time }.Select(t => new
    {
        type = "function",
        function = new { name = t.Name, description = t.Description, parameters = t.JsonSchema },
    }));

    [Fact]
    public void Qwen3_ToolHistory_RendersEveryCallAndResult_AsTheCanonicalEncoding()
    {
        var family = RealFamily.Get("qwen3");
        var tokens = family.Renderer.Render(History(), new ChatOptions { Tools = [Weather, Time] }, true).Tokens;

        Assert.Equal(family.Canonical(HistoryJson, ToolsJson()), tokens);
        var text = family.Decode(tokens);
        Assert.Contains("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 2}}\n</tool_call>", text, StringComparison.Ordinal);
        Assert.Contains("<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"zone\": \"Asia/Tokyo\"}}\n</tool_call>", text, StringComparison.Ordinal);
        Assert.Contains("<tool_response>\nParis: sunny, 21 °C\n</tool_response>\n<tool_response>\n12:00\n</tool_response>", text, StringComparison.Ordinal);
        Assert.DoesNotContain("None", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Qwen3_ToolHistory_EqualsHuggingFaceJinja2Rendering()
    {
        Assert.True(JinjaReference.IsAvailable, "python3 with jinja2 is required (.ci/run installs it).");
        var family = RealFamily.Get("qwen3");
        var reference = JinjaReference.Render(family.Folder.ChatTemplate!, HistoryJson, ToolsJson(), true, SpecialTokens(family));

        Assert.Equal(family.Render(HistoryJson, ToolsJson()), reference);
        Assert.Equal(family.Encode(reference), family.Renderer.Render(History(), new ChatOptions { Tools = [Weather, Time] }, true).Tokens);
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Corpus_GenAiTemplateRendering_EqualsHuggingFaceJinja2(string name)
    {
        // The renderer's canonical target (GenAI's template engine) agrees with Hugging Face's on this corpus.
        Assert.True(JinjaReference.IsAvailable, "python3 with jinja2 is required (.ci/run installs it).");
        var family = RealFamily.Get(name);
        var corpus = CanonicalPromptTests.Corpus;
        var conversations = corpus.Select(text => RealFamily.Json([("system", "Be brief."), ("user", text), ("assistant", text), ("user", "Next.")])).ToList();
        var references = JinjaReference.RenderMany(family.Folder.ChatTemplate!, conversations, null, true, SpecialTokens(family));
        for (var i = 0; i < corpus.Length; i++)
        {
            var text = corpus[i];
            var reference = references[i];
            Assert.Equal(reference, family.Render(conversations[i]));
            Assert.Equal(family.Encode(reference), family.Renderer.Render(
                [new(ChatRole.System, "Be brief."), new(ChatRole.User, text), new(ChatRole.Assistant, text), new(ChatRole.User, "Next.")], null, true).Tokens);
        }
    }

    public static TheoryData<string> Families() => [.. RealFamily.Names];

    [Fact]
    public void TemplateThatTestsContentIsNone_GetsNullBesideCalls()
    {
        const string template = """
            {%- for m in messages %}<|im_start|>{{ m.role }}
            {% if m.content is none %}(no content){% else %}{{ m.content }}{% endif %}
            {%- for c in m.tool_calls or [] %}<tool_call>{{ c.type }}:{{ c.function.name }}:{{ c.function.arguments | tojson }}</tool_call>{% endfor %}<|im_end|>
            {% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
            {% endif %}
            """;
        var family = RealFamily.Get("qwen3");
        var renderer = family.NewRenderer(template);
        var text = family.Decode(renderer.Render(History(), new ChatOptions { Tools = [Weather, Time] }, true).Tokens);

        Assert.Contains("assistant\n(no content)<tool_call>function:get_weather:{\"city\": \"Paris\", \"days\": 2}</tool_call><tool_call>function:get_time:", text, StringComparison.Ordinal);
        Assert.Contains("tool\nParis: sunny, 21 °C", text, StringComparison.Ordinal);
    }

    [Fact]
    public void TemplateThatWritesResultsAsJson_IsAccepted()
    {
        // Llama 3.1's tool template writes results with tojson: quotes and newlines come out escaped.
        const string template = """
            {%- for m in messages %}<|im_start|>{{ m.role }}
            {% if m.role == 'tool' %}{{ m.content | tojson }}{% else %}{{ m.content }}{% endif %}
            {%- for c in m.tool_calls or [] %}<tool_call>{{ c.function.name }}</tool_call>{% endfor %}<|im_end|>
            {% endfor %}
            """;
        var family = RealFamily.Get("qwen3");
        var history = History();
        history[3] = new ChatMessage(ChatRole.Tool, [new FunctionResultContent("call_1", "line one\n\"quoted\" 21 °C")]);
        var text = family.Decode(family.NewRenderer(template).Render(history, null, true).Tokens);
        Assert.Contains("\"line one\\n\\\"quoted\\\" 21 °C\"", text, StringComparison.Ordinal);
    }

    [Fact]
    public void TemplateThatDropsCalls_IsAnError()
    {
        // Llama 3.1's published tokenizer_config.json carries the plain Llama 3 template: it prints content only.
        var family = RealFamily.Get("llama3_1");
        var error = Assert.Throws<NotSupportedException>(() => family.Renderer.Render(History(), null, true));
        Assert.Contains("get_weather", error.Message, StringComparison.Ordinal);
    }

    private static Dictionary<string, string?> SpecialTokens(RealFamily family)
    {
        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(family.Path, "tokenizer_config.json")));
        var result = new Dictionary<string, string?>();
        foreach (var name in new[] { "bos_token", "eos_token", "pad_token", "unk_token" })
        {
            result[name] = config.RootElement.TryGetProperty(name, out var value) ? value.ValueKind switch
            {
                JsonValueKind.String => value.GetString(),
                JsonValueKind.Object => value.GetProperty("content").GetString(),
                _ => null,
            } : null;
        }

        return result;
    }
}
