using Xunit;

namespace KvChat.ModelKit.Tests;

public sealed class CommandLineTests
{
    [Fact]
    public void Run_TinyPresetWithOut_WritesAllFiles()
    {
        var directory = Path.Combine(KvChat.Testing.TestModels.RunDirectory, "cli-tiny");
        using var output = new StringWriter();
        using var error = new StringWriter();

        var code = ModelKitCommandLine.Run(["--preset", "tiny", "--out", directory], output, error);

        Assert.Equal(0, code);
        Assert.All(ModelKit.FileNames, f => Assert.True(File.Exists(Path.Combine(directory, f)), f));
        Assert.Contains("parameters", output.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_Overrides_ApplyOnTopOfThePreset()
    {
        var (options, directory) = ModelKitCommandLine.Parse(
            ["--out", "x", "--layers", "3", "--preset", "bench", "--variant", "concat", "--template", "llama3", "--seed", "9", "--script", "hi"]);

        Assert.Equal("x", directory);
        Assert.Equal(3, options.NumLayers);
        Assert.Equal(768, options.HiddenSize);
        Assert.Equal(ModelVariant.Concat, options.Variant);
        Assert.Equal(ChatTemplateFamily.Llama3, options.TemplateFamily);
        Assert.Equal(9UL, options.Seed);
        Assert.Equal("hi", options.Script);
    }

    [Theory]
    [InlineData("--preset", "huge", "--out", "x")]
    [InlineData("--layers", "two", "--out", "x")]
    [InlineData("--variant", "mamba", "--out", "x")]
    [InlineData("--bogus", "--out", "x")]
    [InlineData("--layers", "2")]
    [InlineData("--out")]
    public void Run_BadArguments_ExitTwoAndNameTheProblem(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        Assert.Equal(2, ModelKitCommandLine.Run(args, output, error));
        Assert.StartsWith("error: ", error.ToString(), StringComparison.Ordinal);
    }
}
