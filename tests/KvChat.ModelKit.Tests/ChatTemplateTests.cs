using KvChat.Testing;
using Microsoft.ML.OnnxRuntimeGenAI;
using Xunit;

namespace KvChat.ModelKit.Tests;

public sealed class ChatTemplateTests
{
    private const string Conversation = """
        [{"role":"system","content":"Be brief."},
         {"role":"user","content":"Weather in Paris?"},
         {"role":"assistant","content":"","tool_calls":[{"id":"c1","type":"function","function":{"name":"get_weather","arguments":{"city":"Paris"}}}]},
         {"role":"tool","content":"18C"},
         {"role":"assistant","content":"It is 18C."},
         {"role":"user","content":"Thanks"}]
        """;

    private const string Tools = """
        [{"type":"function","function":{"name":"get_weather","description":"Weather by city","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]
        """;

    private static string Render(ChatTemplateFamily family, string messages, string? tools, bool generationPrompt = true)
    {
        using var model = new Model(TestModels.PathOf(ModelKitOptions.Tiny with { TemplateFamily = family }));
        using var tokenizer = new Tokenizer(model);
        return tokenizer.ApplyChatTemplate(null, messages, tools, generationPrompt);
    }

    [Fact]
    public void ChatML_EveryRole_RendersExactly()
    {
        var text = Render(ChatTemplateFamily.ChatML, Conversation, null);
        Assert.Equal(
            "<|im_start|>system\nBe brief.<|im_end|>\n" +
            "<|im_start|>user\nWeather in Paris?<|im_end|>\n" +
            "<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n" +
            "<|im_start|>tool\n18C<|im_end|>\n" +
            "<|im_start|>assistant\nIt is 18C.<|im_end|>\n" +
            "<|im_start|>user\nThanks<|im_end|>\n" +
            "<|im_start|>assistant\n",
            text);
    }

    [Fact]
    public void ChatML_WithTools_ListsThemInTheSystemMessage()
    {
        var text = Render(ChatTemplateFamily.ChatML, Conversation, Tools);
        Assert.StartsWith("<|im_start|>system\nBe brief.\n\n# Tools\n", text, StringComparison.Ordinal);
        Assert.Contains("<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\"", text, StringComparison.Ordinal);
        Assert.Equal(1, Count(text, "<|im_start|>system"));
    }

    [Fact]
    public void ChatML_WithoutGenerationPrompt_EndsAfterLastMessage()
        => Assert.EndsWith("Thanks<|im_end|>\n", Render(ChatTemplateFamily.ChatML, Conversation, null, generationPrompt: false), StringComparison.Ordinal);

    [Fact]
    public void Phi_EveryRole_RendersExactly()
    {
        var text = Render(ChatTemplateFamily.Phi, Conversation, null);
        Assert.Equal(
            "<|system|>Be brief.<|end|>" +
            "<|user|>Weather in Paris?<|end|>" +
            "<|assistant|><|tool_call|>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]<|/tool_call|><|end|>" +
            "<|tool_response|>18C<|end|>" +
            "<|assistant|>It is 18C.<|end|>" +
            "<|user|>Thanks<|end|>" +
            "<|assistant|>",
            text);
        Assert.Contains("<|system|>Be brief.<|tool|>[{\"type\": \"function\"", Render(ChatTemplateFamily.Phi, Conversation, Tools), StringComparison.Ordinal);
    }

    [Fact]
    public void Llama3_EveryRole_RendersExactly()
    {
        var text = Render(ChatTemplateFamily.Llama3, Conversation, null);
        Assert.Equal(
            "<|begin_of_text|>" +
            "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" +
            "<|start_header_id|>user<|end_header_id|>\n\nWeather in Paris?<|eot_id|>" +
            "<|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}<|eot_id|>" +
            "<|start_header_id|>ipython<|end_header_id|>\n\n18C<|eot_id|>" +
            "<|start_header_id|>assistant<|end_header_id|>\n\nIt is 18C.<|eot_id|>" +
            "<|start_header_id|>user<|end_header_id|>\n\nThanks<|eot_id|>" +
            "<|start_header_id|>assistant<|end_header_id|>\n\n",
            text);
        Assert.Contains("You have access to the following functions.", Render(ChatTemplateFamily.Llama3, Conversation, Tools), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(ChatTemplateFamily.ChatML)]
    [InlineData(ChatTemplateFamily.Phi)]
    [InlineData(ChatTemplateFamily.Llama3)]
    public void Template_UnknownRoleOrLateSystem_Raises(ChatTemplateFamily family)
    {
        Assert.ThrowsAny<Exception>(() => Render(family, """[{"role":"narrator","content":"x"}]""", null));
        Assert.ThrowsAny<Exception>(() => Render(family, """[{"role":"user","content":"x"},{"role":"system","content":"y"}]""", null));
    }

    [Fact]
    public void Template_ArgumentsAsJsonString_AreRenderedVerbatim()
    {
        const string messages = """[{"role":"assistant","content":"","tool_calls":[{"function":{"name":"f","arguments":"{\"a\": [1, 2]}"}}]}]""";
        Assert.Contains("{\"name\": \"f\", \"arguments\": {\"a\": [1, 2]}}", Render(ChatTemplateFamily.ChatML, messages, null), StringComparison.Ordinal);
    }

    private static int Count(string text, string value)
    {
        var count = 0;
        for (var i = text.IndexOf(value, StringComparison.Ordinal); i >= 0; i = text.IndexOf(value, i + 1, StringComparison.Ordinal))
        {
            count++;
        }

        return count;
    }
}
