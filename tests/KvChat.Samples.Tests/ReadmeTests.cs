using System.Reflection;
using System.Text.RegularExpressions;
using KvChat.HostingSample;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Xunit;

namespace KvChat.Samples.Tests;

/// <summary>
/// The README's code cannot rot: its quick start runs as written in a new console app (<see cref="PackageTests"/>), its
/// other C# blocks are the samples' code, and its test command is the one <c>.ci/run</c> runs.
/// </summary>
[Collection(nameof(EnvironmentVariables))]
public sealed partial class ReadmeTests
{
    private const string TestCommand = "dotnet test KvChatClient.sln -c Release";

    private static readonly string Root = typeof(ReadmeTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
        .Single(a => a.Key == "RepositoryRoot").Value!;

    /// <summary>
    /// Each C# block of the README is code that compiles and runs: the quick start is run as written by
    /// <see cref="PackageTests"/>, the dependency-injection block in the hosting sample, the Semantic Kernel block and the
    /// agent block in their samples (all run by their tests). The block's lines, using directives aside, are the region's;
    /// its using directives are the file's (or name a namespace the file is in).
    /// </summary>
    [Theory]
    [InlineData("builder.Services.AddKvChatClient(", "samples/KvChat.HostingSample/HostingApp.cs", "README dependency injection")]
    [InlineData("Kernel.CreateBuilder().AddKvChatClient(", "samples/KvChat.SemanticKernelSample/SemanticKernelChat.cs", "README Semantic Kernel")]
    [InlineData("AIAgent agent = new ChatClientAgent(calls,", "samples/KvChat.AgentSample/AgentChat.cs", "README agent")]
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
        Assert.Contains("new ChatClientAgent(", readme, StringComparison.Ordinal);
    }

    [Fact]
    public void SoakLengths_InTheReadme_AreTheMemoryTestsOwn()
    {
        var readme = File.ReadAllText(Path.Combine(Root, "README.md")).ReplaceLineEndings("\n");
        var test = File.ReadAllText(Path.Combine(Root, "tests", "KvChatClient.Tests", "Hardening", "MemoryTests.cs"));
        var said = Regex.Match(readme, @"memory soak runs (\d+) conversations there and longer with\s+`KVCHAT_SOAK_CONVERSATIONS=(\d+) ");
        Assert.True(said.Success, "README.md no longer says how long the memory soak runs");
        Assert.Equal(said.Groups[1].Value, Regex.Match(test, @"const int CiConversations = (\d+);").Groups[1].Value);
        Assert.Equal(said.Groups[2].Value, Regex.Match(test, @"const int SoakConversations = (\d+);").Groups[1].Value);
        var comments = Regex.Matches(test, @"KVCHAT_SOAK_CONVERSATIONS=(\d+)").Select(m => m.Groups[1].Value).Distinct().ToList();
        Assert.Equal([said.Groups[2].Value], comments);
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

}
