namespace KvChat.ModelKit;

/// <summary>An added token of a template family.</summary>
/// <param name="Content">The token text.</param>
/// <param name="Special">
/// Whether the runtime treats it as a control token (dropped by decode). Tool-call delimiters are not special, as in
/// Qwen2.5, so they reach the decoded text where a parser can find them.
/// </param>
internal readonly record struct AddedToken(string Content, bool Special);

/// <summary>What the kit writes for one template family: added tokens, stop tokens, template and model type.</summary>
internal sealed class TemplateFamilySpec
{
    public required ChatTemplateFamily Family { get; init; }

    public required string ModelType { get; init; }

    public required AddedToken[] AddedTokens { get; init; }

    /// <summary>End-of-sequence tokens, the first being the end-of-turn token replies end with.</summary>
    public required string[] EosTokens { get; init; }

    public required string? BosToken { get; init; }

    public required string PadToken { get; init; }

    /// <summary>Tokens that start a message (one per rendered message and one for the generation prompt).</summary>
    public required string[] MessageStartTokens { get; init; }

    /// <summary>The generation prompt as pieces (added tokens and text), starting with a message-start token.</summary>
    public required string[] GenerationPrompt { get; init; }

    public required string ChatTemplate { get; init; }

    public static TemplateFamilySpec For(ChatTemplateFamily family) => family switch
    {
        ChatTemplateFamily.ChatML => ChatMl,
        ChatTemplateFamily.Phi => Phi,
        ChatTemplateFamily.Llama3 => Llama3,
        _ => throw new ArgumentOutOfRangeException(nameof(family), family, "Unknown template family."),
    };

    private static readonly TemplateFamilySpec ChatMl = new()
    {
        Family = ChatTemplateFamily.ChatML,
        ModelType = "qwen2",
        AddedTokens =
        [
            new("<|endoftext|>", true),
            new("<|im_start|>", true),
            new("<|im_end|>", true),
            new("<tool_call>", false),
            new("</tool_call>", false),
        ],
        EosTokens = ["<|im_end|>", "<|endoftext|>"],
        BosToken = null,
        PadToken = "<|endoftext|>",
        MessageStartTokens = ["<|im_start|>"],
        GenerationPrompt = ["<|im_start|>", "assistant\n"],
        ChatTemplate = """
            {%- if tools %}
            {{- '<|im_start|>system\n' }}
            {%- if messages[0].role == 'system' %}{{- messages[0].content }}{%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}
            {{- '\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}
            {%- for tool in tools %}{{- '\n' }}{{- tool | tojson }}{%- endfor %}
            {{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' }}
            {%- elif messages[0].role == 'system' %}
            {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
            {%- endif %}
            {%- for message in messages %}
            {%- if message.role == 'system' %}
            {%- if not loop.first %}{{- raise_exception('A system message must come first.') }}{%- endif %}
            {%- elif message.role == 'user' or message.role == 'tool' %}
            {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
            {%- elif message.role == 'assistant' %}
            {{- '<|im_start|>assistant\n' }}
            {%- if message.content %}{{- message.content }}{%- endif %}
            {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}{%- set call = tool_call.function %}{%- else %}{%- set call = tool_call %}{%- endif %}
            {%- if (loop.first and message.content) or not loop.first %}{{- '\n' }}{%- endif %}
            {{- '<tool_call>\n{"name": "' + call.name + '", "arguments": ' }}
            {%- if call.arguments is string %}{{- call.arguments }}{%- else %}{{- call.arguments | tojson }}{%- endif %}
            {{- '}\n</tool_call>' }}
            {%- endfor %}
            {%- endif %}
            {{- '<|im_end|>\n' }}
            {%- else %}
            {{- raise_exception('Unknown role: ' + message.role) }}
            {%- endif %}
            {%- endfor %}
            {%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}
            """,
    };

    private static readonly TemplateFamilySpec Phi = new()
    {
        Family = ChatTemplateFamily.Phi,
        ModelType = "phi3",
        AddedTokens =
        [
            new("<|endoftext|>", true),
            new("<|system|>", true),
            new("<|user|>", true),
            new("<|assistant|>", true),
            new("<|end|>", true),
            new("<|tool|>", true),
            new("<|/tool|>", true),
            new("<|tool_response|>", true),
            new("<|tool_call|>", false),
            new("<|/tool_call|>", false),
        ],
        EosTokens = ["<|end|>", "<|endoftext|>"],
        BosToken = null,
        PadToken = "<|endoftext|>",
        MessageStartTokens = ["<|system|>", "<|user|>", "<|assistant|>", "<|tool_response|>"],
        GenerationPrompt = ["<|assistant|>"],
        ChatTemplate = """
            {%- if tools and messages[0].role != 'system' %}
            {{- '<|system|><|tool|>' + (tools | tojson) + '<|/tool|><|end|>' }}
            {%- endif %}
            {%- for message in messages %}
            {%- if message.role == 'system' %}
            {%- if not loop.first %}{{- raise_exception('A system message must come first.') }}{%- endif %}
            {{- '<|system|>' + message.content }}
            {%- if tools %}{{- '<|tool|>' + (tools | tojson) + '<|/tool|>' }}{%- endif %}
            {{- '<|end|>' }}
            {%- elif message.role == 'user' %}
            {{- '<|user|>' + message.content + '<|end|>' }}
            {%- elif message.role == 'tool' %}
            {{- '<|tool_response|>' + message.content + '<|end|>' }}
            {%- elif message.role == 'assistant' %}
            {{- '<|assistant|>' }}
            {%- if message.content %}{{- message.content }}{%- endif %}
            {%- if message.tool_calls %}
            {{- '<|tool_call|>[' }}
            {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}{%- set call = tool_call.function %}{%- else %}{%- set call = tool_call %}{%- endif %}
            {%- if not loop.first %}{{- ', ' }}{%- endif %}
            {{- '{"name": "' + call.name + '", "arguments": ' }}
            {%- if call.arguments is string %}{{- call.arguments }}{%- else %}{{- call.arguments | tojson }}{%- endif %}
            {{- '}' }}
            {%- endfor %}
            {{- ']<|/tool_call|>' }}
            {%- endif %}
            {{- '<|end|>' }}
            {%- else %}
            {{- raise_exception('Unknown role: ' + message.role) }}
            {%- endif %}
            {%- endfor %}
            {%- if add_generation_prompt %}{{- '<|assistant|>' }}{%- endif %}
            """,
    };

    private static readonly TemplateFamilySpec Llama3 = new()
    {
        Family = ChatTemplateFamily.Llama3,
        ModelType = "llama",
        AddedTokens =
        [
            new("<|begin_of_text|>", true),
            new("<|end_of_text|>", true),
            new("<|start_header_id|>", true),
            new("<|end_header_id|>", true),
            new("<|eot_id|>", true),
            new("<|eom_id|>", true),
            new("<|python_tag|>", true),
        ],
        EosTokens = ["<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"],
        BosToken = "<|begin_of_text|>",
        PadToken = "<|end_of_text|>",
        MessageStartTokens = ["<|start_header_id|>"],
        GenerationPrompt = ["<|start_header_id|>", "assistant", "<|end_header_id|>", "\n\n"],
        ChatTemplate = """
            {{- bos_token }}
            {%- if tools %}
            {{- '<|start_header_id|>system<|end_header_id|>\n\n' }}
            {%- if messages[0].role == 'system' %}{{- messages[0].content + '\n\n' }}{%- endif %}
            {{- 'You have access to the following functions. To call a function, respond with JSON of the form {"name": function name, "parameters": dictionary of argument name and its value}.\n\n' }}
            {%- for tool in tools %}{{- tool | tojson }}{{- '\n\n' }}{%- endfor %}
            {{- '<|eot_id|>' }}
            {%- elif messages[0].role == 'system' %}
            {{- '<|start_header_id|>system<|end_header_id|>\n\n' + messages[0].content + '<|eot_id|>' }}
            {%- endif %}
            {%- for message in messages %}
            {%- if message.role == 'system' %}
            {%- if not loop.first %}{{- raise_exception('A system message must come first.') }}{%- endif %}
            {%- elif message.role == 'user' %}
            {{- '<|start_header_id|>user<|end_header_id|>\n\n' + message.content + '<|eot_id|>' }}
            {%- elif message.role == 'tool' %}
            {{- '<|start_header_id|>ipython<|end_header_id|>\n\n' + message.content + '<|eot_id|>' }}
            {%- elif message.role == 'assistant' %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
            {%- if message.content %}{{- message.content }}{%- endif %}
            {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}{%- set call = tool_call.function %}{%- else %}{%- set call = tool_call %}{%- endif %}
            {{- '{"name": "' + call.name + '", "parameters": ' }}
            {%- if call.arguments is string %}{{- call.arguments }}{%- else %}{{- call.arguments | tojson }}{%- endif %}
            {{- '}' }}
            {%- endfor %}
            {%- endif %}
            {{- '<|eot_id|>' }}
            {%- else %}
            {{- raise_exception('Unknown role: ' + message.role) }}
            {%- endif %}
            {%- endfor %}
            {%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}
            """,
    };
}
