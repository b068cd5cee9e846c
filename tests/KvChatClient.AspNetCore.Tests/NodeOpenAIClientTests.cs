using System.Diagnostics;
using System.Reflection;
using System.Text.Json;
using Xunit;

namespace KvChat.AspNetCore.Tests;

/// <summary>
/// The npm <c>openai</c> package from node against the endpoint: <c>node/client.mjs</c> runs two turns streamed and
/// not, a tool call round trip, a JSON-schema response, typed errors and a cancelled stream, asserting each. npm
/// installs the package (pinned in <c>node/package.json</c>) into <c>node/node_modules</c>, which git ignores.
/// </summary>
[Collection(nameof(NodeClients))]
public sealed class NodeOpenAIClientTests(OpenAIServer server) : IClassFixture<OpenAIServer>
{
    private static readonly string Folder = typeof(NodeOpenAIClientTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
        .Single(a => a.Key == "NodeClientDirectory").Value!;

    private static CancellationToken Cancel => TestContext.Current.CancellationToken;

    [Fact]
    public async Task NodeOpenAIPackage_TwoTurnsToolsJsonSchemaAndCancel_AllWork()
    {
        await InstallAsync();

        var streamsBefore = server.Observed.Streams.Count;
        server.Observed.StreamDelay = TimeSpan.FromMilliseconds(30);
        (int ExitCode, string Output) run;
        try
        {
            run = await RunAsync("node", ["client.mjs"],
            [
                new("KVCHAT_BASE_URL", server.Endpoint.ToString()),
                new("KVCHAT_MODEL", OpenAIServer.ModelName),
                new("KVCHAT_REPLY", OpenAIServer.Reply),
                new("KVCHAT_SCHEMA", OpenAIServer.ReplySchema),
            ], TimeSpan.FromMinutes(2));
        }
        finally
        {
            server.Observed.StreamDelay = TimeSpan.Zero;
        }

        Assert.True(run.ExitCode == 0, $"node client.mjs failed:\n{run.Output}");
        var line = run.Output.Split('\n').Single(l => l.StartsWith("RESULT ", StringComparison.Ordinal));
        TestContext.Current.TestOutputHelper?.WriteLine($"npm openai: {line}");
        var result = JsonDocument.Parse(line["RESULT ".Length..]).RootElement;
        Assert.True(result.GetProperty("turn2").GetProperty("cached").GetInt32() > 0);
        Assert.True(result.GetProperty("streamedTurn2").GetProperty("cached").GetInt32() > 0);
        Assert.Equal(2, result.GetProperty("cancelledAfterPieces").GetInt32());

        // The aborted request is the last stream the server saw: its generation was cancelled, not run to the end.
        var last = server.Observed.Streams.Skip(streamsBefore).Last();
        Assert.Equal(StreamEnd.Cancelled, await last.Ended.Task.WaitAsync(TimeSpan.FromSeconds(30), Cancel));
        Assert.InRange(last.Updates, 2, OpenAIServer.Reply.Length - 5);
    }

    /// <summary>Installs the npm <c>openai</c> package into <c>node/node_modules</c> (a no-op when it is there).</summary>
    /// <remarks>One install at a time: test classes that run node in parallel share the folder.</remarks>
    internal static async Task InstallAsync()
    {
        await InstallLock.WaitAsync(Cancel);
        try
        {
            var install = await RunAsync("npm", ["install", "--no-audit", "--no-fund", "--no-package-lock", "--loglevel=error"], [], TimeSpan.FromMinutes(3));
            Assert.True(install.ExitCode == 0, $"npm install failed:\n{install.Output}");
        }
        finally
        {
            InstallLock.Release();
        }
    }

    private static readonly SemaphoreSlim InstallLock = new(1, 1);

    /// <summary>Runs a program in the node client's folder; returns its exit code and its output.</summary>
    internal static async Task<(int ExitCode, string Output)> RunAsync(
        string program, string[] arguments, KeyValuePair<string, string>[] environment, TimeSpan timeout)
    {
        var start = new ProcessStartInfo(program) { WorkingDirectory = Folder, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        foreach (var (key, value) in environment)
        {
            start.Environment[key] = value;
        }

        using var process = Process.Start(start) ?? throw new InvalidOperationException($"{program} did not start.");
        var output = process.StandardOutput.ReadToEndAsync(Cancel);
        var error = process.StandardError.ReadToEndAsync(Cancel);
        using var timer = CancellationTokenSource.CreateLinkedTokenSource(Cancel);
        timer.CancelAfter(timeout);
        try
        {
            await process.WaitForExitAsync(timer.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw;
        }

        return (process.ExitCode, await output + await error);
    }
}

/// <summary>
/// The test classes that run node, one at a time: the cancelled stream counts the pieces that arrive before the abort,
/// which a second node process on the same cores makes late.
/// </summary>
[CollectionDefinition(nameof(NodeClients))]
public sealed class NodeClients;
