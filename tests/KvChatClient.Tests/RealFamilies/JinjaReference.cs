using System.Diagnostics;
using System.Text;
using System.Text.Json;

namespace KvChat.Tests.RealFamilies;

/// <summary>
/// Hugging Face's <c>apply_chat_template</c> rendering, as a reference: python3 with jinja2, a sandboxed environment
/// with <c>trim_blocks</c>, <c>lstrip_blocks</c> and loop controls, <c>tojson</c> as <c>json.dumps(ensure_ascii=False)</c>,
/// <c>raise_exception</c>, and the tokenizer's special tokens as variables (transformers' own setup).
/// </summary>
internal static class JinjaReference
{
    private const string Script = """
        import json, sys
        import jinja2, jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment
        requests = json.loads(sys.stdin.read())
        def raise_exception(message):
            raise jinja2.exceptions.TemplateError(message)
        def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        results = []
        compiled = {}
        for request in requests:
            template = compiled.get(request["template"]) or compiled.setdefault(request["template"], env.from_string(request["template"]))
            variables = dict(request["special"])
            if request.get("tools") is not None:
                variables["tools"] = request["tools"]
            results.append(template.render(messages=request["messages"], add_generation_prompt=request["add_generation_prompt"], **variables))
        sys.stdout.buffer.write(json.dumps(results).encode("utf-8"))
        """;

    private static readonly Lazy<string?> Python = new(() =>
        new[] { Environment.GetEnvironmentVariable("KVCHAT_PYTHON"), "python3", "/usr/bin/python3" }
            .FirstOrDefault(p => !string.IsNullOrEmpty(p) && Run(p, "import jinja2", string.Empty, out _) == 0));

    /// <summary>Whether python3 with jinja2 is on this machine (<c>KVCHAT_PYTHON</c>, else <c>python3</c>; <c>.ci/run</c> installs it for CI).</summary>
    public static bool IsAvailable => Python.Value is not null;

    /// <summary>Renders a template over messages (and tools) as JSON, with the tokenizer's special tokens as variables.</summary>
    public static string Render(string template, string messagesJson, string? toolsJson, bool addGenerationPrompt, IReadOnlyDictionary<string, string?> special)
        => RenderMany(template, [messagesJson], toolsJson, addGenerationPrompt, special)[0];

    /// <summary>Renders several conversations in one python process.</summary>
    public static string[] RenderMany(string template, IReadOnlyList<string> messagesJson, string? toolsJson, bool addGenerationPrompt, IReadOnlyDictionary<string, string?> special)
    {
        var requests = messagesJson.Select(messages =>
            $$"""{"template": {{JsonSerializer.Serialize(template)}}, "messages": {{messages}}, "tools": {{toolsJson ?? "null"}}, "add_generation_prompt": {{(addGenerationPrompt ? "true" : "false")}}, "special": {{JsonSerializer.Serialize(special)}}}""");
        var status = Run(Python.Value ?? "python3", Script, "[" + string.Join(",", requests) + "]", out var output);
        return status == 0
            ? JsonSerializer.Deserialize<string[]>(output)!
            : throw new InvalidOperationException($"jinja2 failed ({status}): {output}");
    }

    private static int Run(string python, string script, string input, out string output)
    {
        var start = new ProcessStartInfo(python)
        {
            ArgumentList = { "-c", script },
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            StandardOutputEncoding = Encoding.UTF8,
            StandardInputEncoding = new UTF8Encoding(false),
        };
        try
        {
            using var process = Process.Start(start)!;
            process.StandardInput.Write(input);
            process.StandardInput.Close();
            var stderr = process.StandardError.ReadToEndAsync();
            output = process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            if (process.ExitCode != 0)
            {
                output = stderr.Result;
            }

            return process.ExitCode;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            output = e.Message;
            return -1;
        }
    }
}
