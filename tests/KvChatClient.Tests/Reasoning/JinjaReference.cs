using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace KvChatClient.Tests.Reasoning;

/// <summary>
/// Renders a chat template with Python's Jinja2 as Hugging Face's <c>apply_chat_template</c> does (a sandboxed
/// environment with <c>trim_blocks</c> and <c>lstrip_blocks</c>, loop controls, its <c>tojson</c> that keeps non-ASCII
/// and key order, <c>raise_exception</c>): the reference the client's rendering is compared with.
/// </summary>
internal static class JinjaReference
{
    private const string Script = """
        import json, sys
        from jinja2.sandbox import ImmutableSandboxedEnvironment
        from jinja2.ext import loopcontrols
        from jinja2.exceptions import TemplateError
        def raise_exception(message):
            raise TemplateError(message)
        def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
        request = json.load(sys.stdin)
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        template = env.from_string(request["template"])
        sys.stdout.write(json.dumps(template.render(**request["variables"])))
        """;

    /// <summary>Renders <paramref name="template"/> over Hugging Face-shaped messages.</summary>
    public static string Render(string template, JsonArray messages, bool addGenerationPrompt, JsonObject? extraVariables = null)
    {
        var variables = new JsonObject { ["messages"] = messages.DeepClone(), ["add_generation_prompt"] = addGenerationPrompt };
        foreach (var (key, value) in extraVariables ?? [])
        {
            variables[key] = value?.DeepClone();
        }

        var request = new JsonObject { ["template"] = template, ["variables"] = variables };
        var start = new ProcessStartInfo("python3", ["-c", Script])
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        using var python = Process.Start(start) ?? throw new InvalidOperationException("python3 did not start.");
        python.StandardInput.Write(request.ToJsonString());
        python.StandardInput.Close();
        var error = python.StandardError.ReadToEndAsync();
        var output = python.StandardOutput.ReadToEnd();
        if (!python.WaitForExit(TimeSpan.FromMinutes(1)) || python.ExitCode != 0)
        {
            throw new InvalidOperationException($"The Jinja2 reference renderer failed (python3 with jinja2 is required): {error.Result}");
        }

        return JsonSerializer.Deserialize<string>(output)!;
    }
}
