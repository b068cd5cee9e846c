using System.Reflection;
using System.Text.RegularExpressions;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Xunit;

namespace KvChat.Samples.Tests;

/// <summary>
/// The README's code cannot rot: its quick start is the code below (run on a kit model), and its test command is the
/// one <c>.ci/run</c> runs. Runs alone: it redirects <see cref="Console.Out"/>.
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

    [Fact]
    public void QuickStart_IsTheReadmesCode()
    {
        var readme = File.ReadAllText(Path.Combine(Root, "README.md")).ReplaceLineEndings("\n");
        var block = CSharpBlock().Match(readme);
        Assert.True(block.Success, "README.md has no ```csharp block");
        var fromReadme = Lines(string.Join('\n', block.Groups[1].Value.Split('\n').Where(l => !UsingDirective().IsMatch(l))));

        var source = File.ReadAllText(Path.Combine(Root, "tests", "KvChat.Samples.Tests", "ReadmeTests.cs")).ReplaceLineEndings("\n");
        var region = source[(source.IndexOf("// README quick start: begin\n", StringComparison.Ordinal) + 29)..source.IndexOf("// README quick start: end", StringComparison.Ordinal)];
        var indent = region.Split('\n').Where(l => l.Trim().Length > 0).Min(l => l.Length - l.TrimStart().Length);
        var fromTest = Lines(string.Join('\n', region.Split('\n').Select(l => l.Length >= indent ? l[indent..] : l.TrimStart())));

        Assert.Equal(fromTest, fromReadme);
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

    [GeneratedRegex(@"^cached (\d+) of \d+ prompt tokens$", RegexOptions.Multiline)]
    private static partial Regex CachedLine();
}
