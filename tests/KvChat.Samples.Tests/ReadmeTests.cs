using System.Reflection;
using System.Text.RegularExpressions;
using KvChat.HostingSample;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Xunit;

namespace KvChat.Samples.Tests;

/// <summary>
/// The README's code cannot rot: its quick start is the code below (run on a kit model), its other C# blocks are the
/// samples' code, and its test command is the one <c>.ci/run</c> runs. Runs alone: it redirects <see cref="Console.Out"/>.
/// </summary>
[Collection(nameof(EnvironmentVariables))]
public sealed partial class ReadmeTests
{
    private const string TestCommand = "dotnet test KvChatClient.sln -c Release";

    private static readonly string Root = typeof(ReadmeTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
        .Single(a => a.Key == "RepositoryRoot").Value!;

    [Fact]
    public async Task QuickStart_RunsOnAKitModel()
    {
        var modelPath = TestModels.PathOf(TestModels.Tiny);
        var output = new StringWriter();
        var console = Console.Out;
        Console.SetOut(output);
        try
        {
            // README quick start: begin
            using var client = new KvChatClient(modelPath); // a GenAI model folder (see "Use a real model")

            List<ChatMessage> history = [new(ChatRole.System, "You are a concise assistant.")];
            foreach (var question in new[] { "What is a KV cache?", "Why does reusing it help?" })
            {
                history.Add(new(ChatRole.User, question));
                var response = await client.GetResponseAsync(history, new ChatOptions { MaxOutputTokens = 64 });
                history.AddMessages(response);
                Console.WriteLine(response.Text);
                Console.WriteLine($"cached {response.Usage?.CachedInputTokenCount} of {response.Usage?.InputTokenCount} prompt tokens");
            }
            // README quick start: end
        }
        finally
        {
            Console.SetOut(console);
        }

        var cached = CachedLine().Matches(output.ToString()).Select(m => int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)).ToList();
        Assert.Equal(2, cached.Count);
        Assert.Equal(0, cached[0]);
        Assert.True(cached[1] > 0, output.ToString());
    }

    /// <summary>
    /// Each C# block of the README is code that compiles and runs: the quick start is in this file (run above), the
    /// dependency-injection block in the hosting sample and the Semantic Kernel block in its sample (both run by their
    /// tests). The block's lines, using directives aside, are the region's; its using directives are the file's (or
    /// name a namespace the file is in).
    /// </summary>
    [Theory]
    [InlineData("using var client = new KvChatClient(modelPath);", "tests/KvChat.Samples.Tests/ReadmeTests.cs", "README quick start")]
    [InlineData("builder.Services.AddKvChatClient(", "samples/KvChat.HostingSample/HostingApp.cs", "README dependency injection")]
    [InlineData("Kernel.CreateBuilder().AddKvChatClient(", "samples/KvChat.SemanticKernelSample/SemanticKernelChat.cs", "README Semantic Kernel")]
    [InlineData(".UseFunctionInvocation().Build();", "tests/KvChatClient.Tests/Tools/AgentLoopTests.cs", "README tools")]
    [InlineData("app.MapOpenAIChatCompletions();", "samples/KvChat.HostingSample/HostingApp.cs", "README OpenAI endpoint")]
    [InlineData("new ChatClient(\"kvchat-demo\"", "tests/KvChatClient.AspNetCore.Tests/OpenAISdkTests.cs", "README OpenAI client")]
    public void CSharpBlock_IsTheCodeOfAProjectThatBuilds(string blockHolds, string sourcePath, string region)
    {
        var readme = File.ReadAllText(Path.Combine(Root, "README.md")).ReplaceLineEndings("\n");
        var block = Assert.Single(CSharpBlock().Matches(readme), b => b.Groups[1].Value.Contains(blockHolds, StringComparison.Ordinal)).Groups[1].Value;
        var fromReadme = Lines(string.Join('\n', block.Split('\n').Where(l => !UsingDirective().IsMatch(l))));

        var source = File.ReadAllText(Path.Combine(Root, sourcePath)).ReplaceLineEndings("\n");
        var begin = $"// {region}: begin\n";
        var from = source.IndexOf(begin, StringComparison.Ordinal);
        var to = source.IndexOf($"// {region}: end", StringComparison.Ordinal);
        Assert.True(from >= 0 && to > from, $"{sourcePath} has no region '{region}'");
        var lines = source[(from + begin.Length)..to].Split('\n');
        var indent = lines.Where(l => l.Trim().Length > 0).Min(l => l.Length - l.TrimStart().Length);
        var fromSource = Lines(string.Join('\n', lines.Select(l => l.Length >= indent ? l[indent..] : l.TrimStart())));
        Assert.Equal(fromSource, fromReadme);

        var fileNamespace = FileNamespace().Match(source).Groups[1].Value;
        foreach (var directive in block.Split('\n').Where(l => UsingDirective().IsMatch(l)))
        {
            var name = directive["using ".Length..^1];
            Assert.True(
                source.Contains(directive + "\n", StringComparison.Ordinal) || fileNamespace.StartsWith(name + ".", StringComparison.Ordinal),
                $"README's '{directive}' is not in {sourcePath}");
        }
    }

    /// <summary>
    /// The README's curl calls of the OpenAI endpoint, run as they are against the hosting sample (on a kit model
    /// served under the demo model's name), with only the address changed to the test's free port.
    /// </summary>
    [Fact]
    public async Task CurlBlocks_CallTheOpenAIEndpointOfTheHostingSample()
    {
        var readme = File.ReadAllText(Path.Combine(Root, "README.md")).ReplaceLineEndings("\n");
        var blocks = BashBlock().Matches(readme).Select(m => m.Groups[1].Value).Where(b => b.Contains("/v1/chat/completions", StringComparison.Ordinal)).ToList();
        Assert.Equal(2, blocks.Count);
        await using var app = HostingApp.Build(
            ["--urls", "http://127.0.0.1:0", "--Logging:Console:LogLevel:Default=None", $"--KvChat:ModelPath={TestModels.PathOf(TestModels.Tiny)}", $"--KvChat:ModelId={DemoModel.ModelId}"]);
        await app.StartAsync(TestContext.Current.CancellationToken);

        var outputs = new List<string>();
        foreach (var block in blocks)
        {
            Assert.Contains("http://127.0.0.1:5077/v1/", block, StringComparison.Ordinal);
            outputs.Add(await BashAsync(block.Replace("http://127.0.0.1:5077", app.Urls.Single(), StringComparison.Ordinal)));
        }

        var completion = System.Text.Json.JsonDocument.Parse(outputs[0]).RootElement;
        Assert.Equal("chat.completion", completion.GetProperty("object").GetString());
        Assert.Equal(DemoModel.ModelId, completion.GetProperty("model").GetString());
        Assert.True(completion.GetProperty("usage").GetProperty("prompt_tokens").GetInt32() > 0);
        var events = outputs[1].Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("data: [DONE]", events[^1].Trim());
        var usage = System.Text.Json.JsonDocument.Parse(events[^2]["data: ".Length..]).RootElement.GetProperty("usage");
        Assert.True(usage.GetProperty("prompt_tokens_details").GetProperty("cached_tokens").GetInt32() > 0, "the same question again is served from the cache");
        await app.StopAsync(TestContext.Current.CancellationToken);
    }

    private static async Task<string> BashAsync(string script)
    {
        var start = new System.Diagnostics.ProcessStartInfo("bash") { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        using var process = System.Diagnostics.Process.Start(start)!;
        await process.StandardInput.WriteAsync(script);
        process.StandardInput.Close();
        var output = await process.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken);
        var error = await process.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
        await process.WaitForExitAsync(TestContext.Current.CancellationToken).WaitAsync(TimeSpan.FromSeconds(60), TestContext.Current.CancellationToken);
        Assert.True(process.ExitCode == 0, $"bash exited with {process.ExitCode}: {error}");
        return output;
    }

    [Fact]
    public void FirstScreen_RunsTheChatAndTheTestsThatCiRuns()
    {
        var readme = File.ReadAllText(Path.Combine(Root, "README.md")).ReplaceLineEndings("\n");
        var first = BashBlock().Match(readme);
        Assert.True(first.Success, "README.md has no ```bash block");
        Assert.Equal(["dotnet run -c Release --project samples/KvChat.ConsoleChat", TestCommand], Lines(first.Groups[1].Value));
        Assert.Contains(TestCommand + " ", File.ReadAllText(Path.Combine(Root, ".ci", "run")), StringComparison.Ordinal);
        Assert.Contains("services.AddKvChatClient(", readme, StringComparison.Ordinal);
        Assert.Contains("Kernel.CreateBuilder().AddKvChatClient(", readme, StringComparison.Ordinal);
    }

    /// <summary>The lines of a block, right-trimmed, with no blank lines at either end.</summary>
    private static string[] Lines(string text) =>
        [.. text.Split('\n').Select(l => l.TrimEnd()).SkipWhile(l => l.Length == 0).Reverse().SkipWhile(l => l.Length == 0).Reverse()];

    [GeneratedRegex(@"```csharp\n(.*?)```", RegexOptions.Singleline)]
    private static partial Regex CSharpBlock();

    [GeneratedRegex(@"```bash\n(.*?)```", RegexOptions.Singleline)]
    private static partial Regex BashBlock();

    [GeneratedRegex(@"^using [A-Za-z0-9_.]+;$")]
    private static partial Regex UsingDirective();

    [GeneratedRegex(@"^namespace ([A-Za-z0-9_.]+);$", RegexOptions.Multiline)]
    private static partial Regex FileNamespace();

    [GeneratedRegex(@"^cached (\d+) of \d+ prompt tokens$", RegexOptions.Multiline)]
    private static partial Regex CachedLine();
}
