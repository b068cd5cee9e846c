using KvChat.ModelKit;
using KvChat.Testing;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Xunit;

namespace KvChat.Tests;

public sealed class ConfigurationTests
{
    private static string TinyPath => TestModels.PathOf(ModelKitOptions.Tiny);

    private static IConfigurationSection Section(params (string Key, string? Value)[] settings) =>
        new ConfigurationBuilder()
            .AddInMemoryCollection(settings.Select(s => new KeyValuePair<string, string?>("KvChat:" + s.Key, s.Value)))
            .Build()
            .GetSection("KvChat");

    [Fact]
    public async Task AddKvChatClient_FromConfiguration_BindsEverySetting()
    {
        var services = new ServiceCollection();
        services.AddKvChatClient(Section(
            ("ModelPath", TinyPath),
            ("MaxSessions", "2"),
            ("contextTokens", "256"),
            ("MaxCacheBytes", "1000000000"),
            ("BlockSize", "8"),
            ("BusySessionBehavior", "wait"),
            ("SessionBackend", "generator"),
            ("EnableConversationIds", "true"),
            ("MaxConversations", "7"),
            ("ReplyMemoCapacity", "0"),
            ("TwoRowDecodeSteps", "false"),
            ("ModelId", "configured-model"),
            ("RejectUnknownAdditionalProperties", "True"),
            ("ConstrainToolArguments", "true"),
            ("IntraOpThreads", "1")));
        await using var provider = services.BuildServiceProvider();

        var options = provider.GetRequiredService<IOptions<KvChatClientOptions>>().Value;
        Assert.Equal(TinyPath, options.ModelPath);
        Assert.Equal(2, options.MaxSessions);
        Assert.Equal(256, options.ContextTokens);
        Assert.Equal(1_000_000_000, options.MaxCacheBytes);
        Assert.Equal(8, options.BlockSize);
        Assert.Equal(BusySessionBehavior.Wait, options.BusySessionBehavior);
        Assert.Equal(KvSessionBackend.Generator, options.SessionBackend);
        Assert.True(options.EnableConversationIds);
        Assert.Equal(7, options.MaxConversations);
        Assert.Equal(0, options.ReplyMemoCapacity);
        Assert.False(options.TwoRowDecodeSteps);
        Assert.Equal("configured-model", options.ModelId);
        Assert.True(options.RejectUnknownAdditionalProperties);
        Assert.True(options.ConstrainToolArguments);
        Assert.Equal(1, options.IntraOpThreads);

        var client = provider.GetRequiredService<IChatClient>();
        Assert.Equal(256, client.GetService<KvChatClient>()!.ContextTokens);
        Assert.Equal("configured-model", client.GetService<ChatClientMetadata>()!.DefaultModelId);
        var response = await client.GetResponseAsync([new(ChatRole.User, "Hi")], new ChatOptions { MaxOutputTokens = 2 }, TestContext.Current.CancellationToken);
        Assert.NotNull(response.ConversationId); // EnableConversationIds came from configuration.
    }

    [Fact]
    public async Task AddKvChatClient_ConfigureRunsAfterBinding()
    {
        var services = new ServiceCollection();
        services.AddKvChatClient(Section(("ModelPath", "/not/used"), ("MaxSessions", "2"), ("ContextTokens", "")), o => o.ModelPath = TinyPath);
        await using var provider = services.BuildServiceProvider();

        var options = provider.GetRequiredService<IOptions<KvChatClientOptions>>().Value;
        Assert.Equal(TinyPath, options.ModelPath);
        Assert.Equal(2, options.MaxSessions);
        Assert.Null(options.ContextTokens);
        Assert.NotNull(provider.GetRequiredService<IChatClient>());
    }

    public static TheoryData<string, string?, string> InvalidSettings => new()
    {
        { "MaxSessions", "0", "KvChat:MaxSessions = '0' is out of range: it must be at least 1." },
        { "BlockSize", "5000", "KvChat:BlockSize = '5000' is out of range: it must be from 1 to 4096." },
        { "ContextTokens", "8", "KvChat:ContextTokens = '8' is out of range: it must be at least 16, or null." },
        { "MaxCacheBytes", "-1", "KvChat:MaxCacheBytes = '-1' is out of range: it must be at least 1." },
        { "ReplyMemoCapacity", "-3", "KvChat:ReplyMemoCapacity = '-3' is out of range: it must be at least 0." },
        { "IntraOpThreads", "0", "KvChat:IntraOpThreads = '0' is out of range: it must be from 1 to 1024, or null." },
        { "IntraOpThreads", "2000", "KvChat:IntraOpThreads = '2000' is out of range: it must be from 1 to 1024, or null." },
        { "MaxSessions", "many", "KvChat:MaxSessions = 'many' is not an integer (Int32)." },
        { "MaxSessions", "99999999999", "KvChat:MaxSessions = '99999999999' is out of range for an integer (Int32)." },
        { "EnableConversationIds", "yes", "KvChat:EnableConversationIds = 'yes' is not true or false." },
        { "BusySessionBehavior", "Sometimes", "KvChat:BusySessionBehavior = 'Sometimes' is not one of TakeOther, Wait." },
        { "BusySessionBehavior", "7", "KvChat:BusySessionBehavior = '7' is not one of TakeOther, Wait." },
        { "SessionBackend", "GenAI", "KvChat:SessionBackend = 'GenAI' is not one of Auto, Generator, Owned." },
        { "MaxSesions", "2", "KvChat:MaxSesions is not a KvChatClientOptions setting; the settings are " },
        { "LoggerFactory", "console", "KvChat:LoggerFactory is not a KvChatClientOptions setting" },
    };

    [Theory]
    [MemberData(nameof(InvalidSettings))]
    public async Task ValidateOnStart_InvalidSetting_FailsNamingIt(string key, string? value, string expected)
    {
        var services = new ServiceCollection();
        services.AddKvChatClient(Section(("ModelPath", TinyPath), (key, value)));
        await using var provider = services.BuildServiceProvider();

        var error = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IStartupValidator>().Validate());
        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
        Assert.Equal(typeof(KvChatClientOptions), error.OptionsType);

        // Resolving the client fails the same way (no host to validate at start).
        Assert.Contains(expected, Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IChatClient>()).Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ValidateOnStart_SeveralInvalidSettings_NamesThemAll()
    {
        var services = new ServiceCollection();
        services.AddKvChatClient(Section(("ModelPath", TinyPath), ("MaxSessions", "0"), ("BlockSize", "x")));
        await using var provider = services.BuildServiceProvider();

        var error = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IStartupValidator>().Validate());
        Assert.Equal(2, error.Failures.Count());
        Assert.Contains(error.Failures, f => f.StartsWith("KvChat:MaxSessions", StringComparison.Ordinal));
        Assert.Contains(error.Failures, f => f.StartsWith("KvChat:BlockSize", StringComparison.Ordinal));
    }

    [Fact]
    public async Task ValidateOnStart_MissingModelPath_NamesTheSetting()
    {
        var services = new ServiceCollection();
        services.AddKvChatClient(Section(("MaxSessions", "2")));
        await using var provider = services.BuildServiceProvider();

        var error = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IStartupValidator>().Validate());
        Assert.StartsWith("KvChat:ModelPath is missing: set it to a GenAI model folder", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ValidateOnStart_ModelPathNotAFolder_NamesTheSettingAndThePath()
    {
        var missing = Path.Combine(TestModels.RunDirectory, "no-such-model");
        var services = new ServiceCollection();
        services.AddKvChatClient(Section(("ModelPath", missing)));
        await using var provider = services.BuildServiceProvider();

        var error = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IStartupValidator>().Validate());
        Assert.Equal($"KvChat:ModelPath '{missing}' is not a folder that exists.", error.Message);
    }

    [Fact]
    public async Task ValidateOnStart_FolderWithoutGenAiConfig_SaysItIsNotAModelFolder()
    {
        var empty = Directory.CreateDirectory(Path.Combine(TestModels.RunDirectory, "empty-" + Guid.NewGuid().ToString("N")[..8])).FullName;
        var services = new ServiceCollection();
        services.AddKvChatClient(empty);
        await using var provider = services.BuildServiceProvider();

        var error = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IStartupValidator>().Validate());
        Assert.Equal($"KvChatClientOptions.ModelPath '{empty}' holds no genai_config.json: it is not a GenAI model folder.", error.Message);
    }

    [Fact]
    public async Task ValidateOnStart_ValidOptions_Passes_AndKeyedRegistrationsAreValidatedByTheirName()
    {
        var services = new ServiceCollection();
        services.AddKvChatClient(Section(("ModelPath", TinyPath)));
        services.AddKeyedKvChatClient("broken", Section(("ModelPath", TinyPath), ("MaxSessions", "0")));
        await using var provider = services.BuildServiceProvider();

        var error = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IStartupValidator>().Validate());
        Assert.Equal("broken", error.OptionsName);
        Assert.NotNull(provider.GetRequiredService<IChatClient>());
    }

    [Fact]
    public async Task ValidateOnStart_ConfigurationRoot_IgnoresOtherKeys()
    {
        var root = new ConfigurationBuilder()
            .AddInMemoryCollection([new("ModelPath", TinyPath), new("Logging:LogLevel:Default", "Information"), new("AllowedHosts", "*")])
            .Build();
        var services = new ServiceCollection();
        services.AddKvChatClient(root);
        await using var provider = services.BuildServiceProvider();

        provider.GetRequiredService<IStartupValidator>().Validate();
        Assert.Equal(TinyPath, provider.GetRequiredService<IOptions<KvChatClientOptions>>().Value.ModelPath);
    }
}
