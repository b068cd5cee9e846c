using KvChat.ConsoleChat;
using KvChat.ModelKit;
using KvChat.Samples;
using Xunit;

namespace KvChat.Samples.Tests;

[CollectionDefinition(nameof(EnvironmentVariables), DisableParallelization = true)]
public sealed class EnvironmentVariables;

/// <summary>Where the demo model goes: these tests set process environment variables, so they run alone.</summary>
[Collection(nameof(EnvironmentVariables))]
public sealed class DemoModelCacheTests
{
    [Fact]
    public async Task NoModel_CacheFolderFromTheEnvironment()
    {
        var cache = ConsoleChatTests.TemporaryDirectory();
        using (new EnvironmentVariable(DemoModel.CacheDirectoryVariable, cache))
        {
            var (code, output) = await ConsoleChatTests.RunAsync(["--demo", "tiny", "--max-tokens", "4"], new StringReader("Hi\n"));

            Assert.Equal(0, code);
            Assert.Equal(DemoModel.FolderName(ModelKitOptions.Tiny), Path.GetFileName(Assert.Single(Directory.GetDirectories(cache))));
            Assert.Single(ConsoleChatTests.CacheLines(output));
        }
    }

    [Fact]
    public void CacheRoot_OptionThenOwnVariableThenXdgThenHome()
    {
        var option = ConsoleChatTests.TemporaryDirectory();
        var own = ConsoleChatTests.TemporaryDirectory();
        var xdg = ConsoleChatTests.TemporaryDirectory();
        using (new EnvironmentVariable("XDG_CACHE_HOME", xdg))
        {
            using (new EnvironmentVariable(DemoModel.CacheDirectoryVariable, own))
            {
                Assert.Equal(option, DemoModel.CacheRoot(option));
                Assert.Equal(own, DemoModel.CacheRoot(null));
            }

            using (new EnvironmentVariable(DemoModel.CacheDirectoryVariable, null))
            {
                Assert.Equal(Path.Combine(xdg, "kvchat"), DemoModel.CacheRoot(null));
            }
        }
    }

    [Fact]
    public void FolderName_DependsOnTheOptions()
    {
        Assert.StartsWith("demo-model-", DemoModel.FolderName(DemoModel.Small), StringComparison.Ordinal);
        Assert.Equal(DemoModel.FolderName(DemoModel.Small), DemoModel.FolderName(DemoModel.Small with { }));
        Assert.NotEqual(DemoModel.FolderName(DemoModel.Small), DemoModel.FolderName(DemoModel.Small with { Seed = 7 }));
    }

    [Fact]
    public void FolderName_IsTheKitFormatAndAHashOfTheOptions_NotOfTheKitBuild()
    {
        var name = DemoModel.FolderName(ModelKitOptions.Tiny);
        Assert.Matches($"^demo-model-v{KvChat.ModelKit.ModelKit.FormatVersion}-[0-9a-f]{{12}}$", name);

        // A build of the kit that writes the same format for the same options keeps the name: it hashes nothing else.
        var key = System.Text.Encoding.UTF8.GetBytes(ModelKitOptions.Tiny.ToString());
        Assert.EndsWith(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(key).AsSpan(0, 6)), name, StringComparison.Ordinal);
    }

    [Fact]
    public void Ensure_PrunesFoldersOfOlderFormatsAndLayouts_KeepsEverySizeOfThisFormat()
    {
        var cache = ConsoleChatTests.TemporaryDirectory();
        var small = Directory.CreateDirectory(Path.Combine(cache, DemoModel.FolderName(DemoModel.Small))).FullName;
        var byBuild = Directory.CreateDirectory(Path.Combine(cache, "demo-model-0123456789ab")).FullName; // Named by a kit build.
        var oldFormat = Directory.CreateDirectory(Path.Combine(cache, "demo-model-v0-0123456789ab")).FullName;
        var writing = Directory.CreateDirectory(Path.Combine(cache, "demo-model-v0-0123456789ab.tmp-0000")).FullName;
        var unrelated = Directory.CreateDirectory(Path.Combine(cache, "my-own-model")).FullName;

        var (path, written) = DemoModel.Ensure(ModelKitOptions.Tiny, cache);

        Assert.NotNull(written);
        Assert.True(DemoModel.IsComplete(path));
        Assert.True(Directory.Exists(small));
        Assert.False(Directory.Exists(byBuild));
        Assert.False(Directory.Exists(oldFormat));
        Assert.True(Directory.Exists(writing), "a folder being written is left alone");
        Assert.True(Directory.Exists(unrelated));
        Assert.Null(DemoModel.Ensure(ModelKitOptions.Tiny, cache).Written);
    }

    private sealed class EnvironmentVariable : IDisposable
    {
        private readonly string _name;
        private readonly string? _before;

        public EnvironmentVariable(string name, string? value)
        {
            _name = name;
            _before = Environment.GetEnvironmentVariable(name);
            Environment.SetEnvironmentVariable(name, value);
        }

        public void Dispose() => Environment.SetEnvironmentVariable(_name, _before);
    }
}
