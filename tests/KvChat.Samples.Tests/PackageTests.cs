using System.Diagnostics;
using System.IO.Compression;
using System.Reflection;
using System.Text.RegularExpressions;
using System.Xml.Linq;
using KvChat.Testing;
using Xunit;

namespace KvChat.Samples.Tests;

/// <summary>
/// <c>dotnet pack KvChatClient.sln</c> gives both packages, as a package user needs them; and the README's quick start
/// compiles and runs as written in a new console app that references the package.
/// </summary>
public sealed partial class PackageTests(PackageTests.Packed packed) : IClassFixture<PackageTests.Packed>
{
    private static readonly string Root = typeof(PackageTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
        .Single(a => a.Key == "RepositoryRoot").Value!;

    private static CancellationToken Cancel => TestContext.Current.CancellationToken;

    [Fact]
    public void PackSolution_GivesBothPackages_OneVersion_WithReadmeTagsAndSymbols()
    {
        var core = packed.Nuspec("KvChatClient");
        var companion = packed.Nuspec("KvChatClient.SemanticKernel");
        var ids = Directory.GetFiles(packed.Directory, "*.nupkg").Select(f => Path.GetFileName(f)[..^$".{packed.Version}.nupkg".Length]).Order(StringComparer.Ordinal).ToList();
        Assert.Contains("KvChatClient", ids);
        Assert.Contains("KvChatClient.SemanticKernel", ids);
        Assert.Equal(Value(core, "version"), Value(companion, "version"));
        foreach (var (id, nuspec) in ids.Select(i => (i, packed.Nuspec(i))))
        {
            Assert.Equal(packed.Version, Value(nuspec, "version"));
            Assert.Equal("README.md", Value(nuspec, "readme"));
            Assert.Contains("kv-cache", Value(nuspec, "tags"), StringComparison.Ordinal);
            Assert.True(File.Exists(Path.Combine(packed.Directory, $"{id}.{packed.Version}.snupkg")), $"{id} has no symbol package");
            using var symbols = ZipFile.OpenRead(Path.Combine(packed.Directory, $"{id}.{packed.Version}.snupkg"));
            Assert.Contains(symbols.Entries, e => e.FullName == $"lib/net10.0/{id}.pdb");

            // Written for a package user: no links into the repository, no steps that need a clone.
            var readme = packed.Read(id, "README.md");
            Assert.StartsWith($"# {id}\n", readme.ReplaceLineEndings("\n"), StringComparison.Ordinal);
            Assert.DoesNotContain("samples/", readme, StringComparison.Ordinal);
            Assert.DoesNotContain("tests/", readme, StringComparison.Ordinal);
            Assert.DoesNotContain("--project", readme, StringComparison.Ordinal);
            Assert.DoesNotMatch(@"\]\((?!https?://)", readme);
        }

        // The companion's one version is the core's: its dependency names it.
        Assert.Contains(Dependencies(companion), d => d.Id == "KvChatClient" && d.Version == packed.Version);
    }

    [Fact]
    public void Nuspecs_ListOnlyDirectDependencies()
    {
        Assert.Equal(
            ["KvChatClient", "Microsoft.SemanticKernel.Abstractions"],
            Dependencies(packed.Nuspec("KvChatClient.SemanticKernel")).Select(d => d.Id).Order(StringComparer.Ordinal));
        var references = PackageReferences(Path.Combine(Root, "src", "KvChatClient", "KvChatClient.csproj"));
        Assert.Equal(references, Dependencies(packed.Nuspec("KvChatClient")).Select(d => d.Id).Order(StringComparer.Ordinal));
    }

    [Theory]
    [InlineData("KvChatClient")]
    [InlineData("KvChatClient.SemanticKernel")]
    public void PackedXmlDocs_DescribeThePublicApiOnly(string id)
    {
        var docs = XDocument.Parse(packed.Read(id, $"lib/net10.0/{id}.xml"));
        var names = docs.Root!.Element("members")!.Elements("member").Select(m => (string)m.Attribute("name")!).ToList();
        Assert.NotEmpty(names);
        var assembly = Assembly.LoadFrom(Path.Combine(AppContext.BaseDirectory, id + ".dll"));
        var publicTypes = assembly.GetExportedTypes().Select(t => t.FullName!.Replace('+', '.')).ToHashSet(StringComparer.Ordinal);
        foreach (var name in names)
        {
            var body = name[2..];
            var type = name[0] == 'T' ? body : body.Split('(')[0][..body.Split('(')[0].LastIndexOf('.')];
            Assert.True(publicTypes.Contains(type), $"{id}.xml documents {name}, of a type that is not public");
        }

        Assert.DoesNotContain("T:KvChat.SessionPool`1", names);
        Assert.DoesNotContain("P:KvChat.KvChatClient.Trace", names);
        Assert.Contains(names, n => n.StartsWith("M:KvChat.KvChatClient.GetResponseAsync(", StringComparison.Ordinal) || id != "KvChatClient");
        Assert.Contains(names, n => n.StartsWith("M:Microsoft.", StringComparison.Ordinal));
    }

    /// <summary>
    /// The README's quick start: the model from the kit command, the library from the packed local source, and the
    /// README's <c>Program.cs</c> as written (no <c>OgaHandle</c>), run with the model folder as its argument.
    /// </summary>
    [Fact]
    public async Task ReadmeQuickStart_CompilesAndRunsAsWritten_InANewConsoleAppReferencingThePackage()
    {
        var readme = File.ReadAllText(Path.Combine(Root, "README.md")).ReplaceLineEndings("\n");
        var quickStart = readme[readme.IndexOf("## Quick start", StringComparison.Ordinal)..];
        var commands = BashBlock().Match(quickStart).Groups[1].Value;
        Assert.Contains("--project src/KvChat.ModelKit -- --out ", commands, StringComparison.Ordinal);
        Assert.Contains("dotnet pack KvChatClient.sln", commands, StringComparison.Ordinal);
        Assert.Contains("dotnet add package KvChatClient --source ", commands, StringComparison.Ordinal);
        var program = CSharpBlock().Match(quickStart).Groups[1].Value;
        Assert.Contains("args[0]", program, StringComparison.Ordinal);

        // The kit command, as the README runs it (the kit's command line, in process).
        var app = ConsoleChatTests.TemporaryDirectory();
        var model = Path.Combine(app, "kvchat-model");
        Assert.Equal(0, KvChat.ModelKit.ModelKitCommandLine.Run(["--out", model], TextWriter.Null, TextWriter.Null));

        // What `dotnet new console` and `dotnet add package KvChatClient --source DIR` leave, with a private packages
        // folder so that this run's package is the one restored (everything else comes from the machine's cache).
        var globalPackages = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } p
            ? p : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        File.WriteAllText(Path.Combine(app, "MyChat.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <ImplicitUsings>enable</ImplicitUsings>
                <Nullable>enable</Nullable>
                <RestorePackagesPath>{Path.Combine(app, "packages")}</RestorePackagesPath>
                <RestoreFallbackFolders>{globalPackages}</RestoreFallbackFolders>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="KvChatClient" Version="{packed.Version}" />
              </ItemGroup>
            </Project>
            """);
        File.WriteAllText(Path.Combine(app, "nuget.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <packageSources>
                <add key="kvchat-local" value="{packed.Directory}" />
              </packageSources>
            </configuration>
            """);
        File.WriteAllText(Path.Combine(app, "Program.cs"), program);
        File.WriteAllText(Path.Combine(app, "Directory.Build.props"), "<Project />"); // Not the repository's settings.
        File.WriteAllText(Path.Combine(app, "Directory.Packages.props"), "<Project />");

        var build = await Dotnet.RunAsync(app, Cancel, "build", "-c", "Release", "-nologo");
        Assert.True(build.ExitCode == 0, build.Output);
        var run = await Dotnet.RunAsync(app, Cancel, Path.Combine(app, "bin", "Release", "net10.0", "MyChat.dll"), model);
        Assert.True(run.ExitCode == 0, run.Output + run.Error);
        Assert.Equal("", run.Error); // Without an OgaHandle: nothing on standard error.

        var cached = CachedLine().Matches(run.Output).Select(m => (Cached: int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture), Input: int.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture))).ToList();
        Assert.Equal(2, cached.Count);
        Assert.Equal(0, cached[0].Cached);
        Assert.True(cached[1].Cached > cached[1].Input / 2, run.Output);
    }

    private static string Value(XElement nuspec, string name) =>
        nuspec.Descendants().Single(e => e.Name.LocalName == name).Value;

    private static List<(string Id, string Version)> Dependencies(XElement nuspec) =>
        [.. nuspec.Descendants().Where(e => e.Name.LocalName == "dependency").Select(e => ((string)e.Attribute("id")!, (string)e.Attribute("version")!))];

    private static List<string> PackageReferences(string project) =>
        [.. XDocument.Load(project).Descendants("PackageReference").Select(e => (string)e.Attribute("Include")!).Order(StringComparer.Ordinal)];

    [GeneratedRegex(@"```csharp\n(.*?)```", RegexOptions.Singleline)]
    private static partial Regex CSharpBlock();

    [GeneratedRegex(@"```bash\n(.*?)```", RegexOptions.Singleline)]
    private static partial Regex BashBlock();

    [GeneratedRegex(@"^cached (\d+) of (\d+) prompt tokens$", RegexOptions.Multiline)]
    private static partial Regex CachedLine();

    /// <summary>Packs the solution once for the class (<c>--no-build</c>: the test run has just built it).</summary>
    public sealed class Packed : IAsyncLifetime
    {
        public string Directory { get; } = ConsoleChatTests.TemporaryDirectory();

        public string Version { get; private set; } = "";

        public async ValueTask InitializeAsync()
        {
#if DEBUG
            const string configuration = "Debug";
#else
            const string configuration = "Release";
#endif
            var pack = await Dotnet.RunAsync(Root, CancellationToken.None, "pack", "KvChatClient.sln", "-c", configuration, "--no-build", "-nologo", "-o", Directory);
            Assert.True(pack.ExitCode == 0, pack.Output + pack.Error);
            // KvChatClient.0.1.0.nupkg: the core's name is followed by its version, the companions' by another word.
            var core = System.IO.Directory.GetFiles(Directory, "KvChatClient.*.nupkg").Select(Path.GetFileNameWithoutExtension)
                .Single(name => char.IsAsciiDigit(name!["KvChatClient.".Length]));
            Version = core!["KvChatClient.".Length..];
        }

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;

        public XElement Nuspec(string id) => XElement.Parse(Read(id, $"{id}.nuspec"));

        public string Read(string id, string entry)
        {
            using var zip = ZipFile.OpenRead(Path.Combine(Directory, $"{id}.{Version}.nupkg"));
            using var reader = new StreamReader(zip.GetEntry(entry)?.Open() ?? throw new FileNotFoundException($"{id} has no {entry}."));
            return reader.ReadToEnd();
        }
    }

    /// <summary>Runs the dotnet host.</summary>
    private static class Dotnet
    {
        public static async Task<(int ExitCode, string Output, string Error)> RunAsync(string directory, CancellationToken cancellationToken, params string[] args)
        {
            var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host : "dotnet")
            {
                WorkingDirectory = directory,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            foreach (var arg in args)
            {
                start.ArgumentList.Add(arg);
            }

            start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
            start.Environment["DOTNET_NOLOGO"] = "1";
            using var process = Process.Start(start)!;
            var output = process.StandardOutput.ReadToEndAsync(cancellationToken);
            var error = process.StandardError.ReadToEndAsync(cancellationToken);
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(TimeSpan.FromMinutes(5));
            try
            {
                await process.WaitForExitAsync(timeout.Token);
            }
            catch (OperationCanceledException)
            {
                process.Kill(entireProcessTree: true);
                throw;
            }

            return (process.ExitCode, await output, await error);
        }
    }
}
