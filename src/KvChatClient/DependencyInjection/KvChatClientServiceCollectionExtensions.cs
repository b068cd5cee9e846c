using KvChat;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers a <see cref="KvChatClient"/> as the <see cref="IChatClient"/> of an <see cref="IServiceCollection"/>.</summary>
/// <remarks>
/// <para>
/// Each method returns the <see cref="ChatClientBuilder"/> of <c>AddChatClient</c> (or <c>AddKeyedChatClient</c>), so
/// middleware chains on: <c>.UseFunctionInvocation()</c>, <c>.UseLogging()</c>, <c>.UseOpenTelemetry()</c>.
/// </para>
/// <para>
/// <b>Options.</b> The registration configures the named <see cref="KvChatClientOptions"/> (the default name, or for a keyed
/// registration the service key's string form, so <c>services.Configure&lt;KvChatClientOptions&gt;(name, ...)</c> applies
/// too): first the configuration section, then <c>modelPath</c>, then <c>configure</c>. They are validated when the
/// host starts (<c>ValidateOnStart</c>) and when the client is first resolved: a missing <see cref="KvChatClientOptions.ModelPath"/>,
/// a folder that does not exist or holds no <c>genai_config.json</c>, a setting out of range, a value that does not
/// parse, or a key of the section that is no setting each fail with an <see cref="OptionsValidationException"/> naming the
/// setting (for example <c>KvChat:MaxSessions</c>).
/// </para>
/// <para>
/// <b>Warm-up.</b> Each registration adds an <see cref="IHostedService"/> that, when the host starts, prefills and pins
/// the options' <see cref="KvChatClientOptions.WarmupPrompts"/> (<c>"Warmup": [ { "System": "..." } ]</c> in the
/// section) through <see cref="KvChatClient.WarmUpAsync"/>; with none it does nothing. An invalid warm-up prompt fails the
/// host's start; other failures are logged.
/// </para>
/// <para>
/// <b>Services from the container.</b> When the options have no <see cref="KvChatClientOptions.LoggerFactory"/> or
/// <see cref="KvChatClientOptions.MeterFactory"/>, the container's <c>ILoggerFactory</c> and <c>IMeterFactory</c> (if
/// registered) are used.
/// </para>
/// <para>
/// <b>Lifetime and ownership.</b> Whatever <c>lifetime</c> the pipeline has, the <see cref="KvChatClient"/> under it (and
/// the model it loads and owns) is created once per registration and container, on first resolution, and disposed
/// with the container: its KV cache is what makes later turns cheap, so scoped or transient pipelines share it and
/// disposing them leaves it alive.
/// </para>
/// </remarks>
public static class KvChatClientServiceCollectionExtensions
{
    /// <summary>Registers a <see cref="KvChatClient"/> over the GenAI model folder at <paramref name="modelPath"/> as the <see cref="IChatClient"/>.</summary>
    /// <param name="services">The service collection.</param>
    /// <param name="modelPath">The GenAI model folder (sets <see cref="KvChatClientOptions.ModelPath"/>).</param>
    /// <param name="configure">Configures the options further; <see langword="null"/> for none.</param>
    /// <param name="lifetime">The lifetime of the <see cref="IChatClient"/> pipeline; the client under it lives as long as the container.</param>
    /// <returns>The builder of the registered pipeline, to add middleware.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="services"/> or <paramref name="modelPath"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException"><paramref name="modelPath"/> is empty or white space.</exception>
    public static ChatClientBuilder AddKvChatClient(
        this IServiceCollection services,
        string modelPath,
        Action<KvChatClientOptions>? configure = null,
        ServiceLifetime lifetime = ServiceLifetime.Singleton)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentException.ThrowIfNullOrWhiteSpace(modelPath);
        return Register(services, serviceKey: null, modelPath, configuration: null, configure, lifetime);
    }

    /// <summary>
    /// Registers a <see cref="KvChatClient"/> as the <see cref="IChatClient"/>, its options bound from
    /// <paramref name="configuration"/> (a section such as <c>"KvChat": { "ModelPath": "...", "MaxSessions": 4 }</c>).
    /// </summary>
    /// <param name="services">The service collection.</param>
    /// <param name="configuration">
    /// The section holding the options, keys named as <see cref="KvChatClientOptions"/>'s properties (case-insensitive);
    /// it must set <c>ModelPath</c> unless <paramref name="configure"/> does. A key of a section that is no setting is an
    /// error; a configuration root's other keys are ignored.
    /// </param>
    /// <param name="configure">Configures the options after binding; <see langword="null"/> for none.</param>
    /// <param name="lifetime">The lifetime of the <see cref="IChatClient"/> pipeline; the client under it lives as long as the container.</param>
    /// <returns>The builder of the registered pipeline, to add middleware.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="services"/> or <paramref name="configuration"/> is <see langword="null"/>.</exception>
    public static ChatClientBuilder AddKvChatClient(
        this IServiceCollection services,
        IConfiguration configuration,
        Action<KvChatClientOptions>? configure = null,
        ServiceLifetime lifetime = ServiceLifetime.Singleton)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configuration);
        return Register(services, serviceKey: null, modelPath: null, configuration, configure, lifetime);
    }

    /// <summary>Registers a <see cref="KvChatClient"/> over the GenAI model folder at <paramref name="modelPath"/> as the keyed <see cref="IChatClient"/> <paramref name="serviceKey"/>.</summary>
    /// <param name="services">The service collection.</param>
    /// <param name="serviceKey">The service key; its string form also names the options.</param>
    /// <param name="modelPath">The GenAI model folder (sets <see cref="KvChatClientOptions.ModelPath"/>).</param>
    /// <param name="configure">Configures the options further; <see langword="null"/> for none.</param>
    /// <param name="lifetime">The lifetime of the <see cref="IChatClient"/> pipeline; the client under it lives as long as the container.</param>
    /// <returns>The builder of the registered pipeline, to add middleware.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="services"/>, <paramref name="serviceKey"/> or <paramref name="modelPath"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException"><paramref name="modelPath"/> is empty or white space.</exception>
    public static ChatClientBuilder AddKeyedKvChatClient(
        this IServiceCollection services,
        object serviceKey,
        string modelPath,
        Action<KvChatClientOptions>? configure = null,
        ServiceLifetime lifetime = ServiceLifetime.Singleton)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(serviceKey);
        ArgumentException.ThrowIfNullOrWhiteSpace(modelPath);
        return Register(services, serviceKey, modelPath, configuration: null, configure, lifetime);
    }

    /// <summary>
    /// Registers a <see cref="KvChatClient"/> as the keyed <see cref="IChatClient"/> <paramref name="serviceKey"/>, its
    /// options bound from <paramref name="configuration"/>.
    /// </summary>
    /// <param name="services">The service collection.</param>
    /// <param name="serviceKey">The service key; its string form also names the options.</param>
    /// <param name="configuration">
    /// The section holding the options, keys named as <see cref="KvChatClientOptions"/>'s properties (case-insensitive);
    /// it must set <c>ModelPath</c> unless <paramref name="configure"/> does.
    /// </param>
    /// <param name="configure">Configures the options after binding; <see langword="null"/> for none.</param>
    /// <param name="lifetime">The lifetime of the <see cref="IChatClient"/> pipeline; the client under it lives as long as the container.</param>
    /// <returns>The builder of the registered pipeline, to add middleware.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="services"/>, <paramref name="serviceKey"/> or <paramref name="configuration"/> is <see langword="null"/>.</exception>
    public static ChatClientBuilder AddKeyedKvChatClient(
        this IServiceCollection services,
        object serviceKey,
        IConfiguration configuration,
        Action<KvChatClientOptions>? configure = null,
        ServiceLifetime lifetime = ServiceLifetime.Singleton)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(serviceKey);
        ArgumentNullException.ThrowIfNull(configuration);
        return Register(services, serviceKey, modelPath: null, configuration, configure, lifetime);
    }

    private static ChatClientBuilder Register(
        IServiceCollection services,
        object? serviceKey,
        string? modelPath,
        IConfiguration? configuration,
        Action<KvChatClientOptions>? configure,
        ServiceLifetime lifetime)
    {
        var optionsName = serviceKey is null ? Options.Options.DefaultName : serviceKey as string ?? serviceKey.ToString() ?? string.Empty;
        var options = services.AddOptions<KvChatClientOptions>(optionsName);
        if (configuration is not null)
        {
            options.Configure(o => KvChatClientOptionsBinder.Bind(configuration, o, optionsName));
        }

        if (modelPath is not null)
        {
            options.Configure(o => o.ModelPath = modelPath);
        }

        if (configure is not null)
        {
            options.Configure(configure);
        }

        options.ValidateOnStart();
        KvChatClientOptionsValidator.AddTo(services, optionsName, (configuration as IConfigurationSection)?.Path);

        // The client of this registration: one per container, disposed with it, whatever the pipeline's lifetime.
        var registration = new object();
        services.AddKeyedSingleton(registration, (provider, _) => new KvChatClientOwner(provider, optionsName));
        services.AddSingleton<IHostedService>(provider => new KvChatWarmupService(
            () => provider.GetRequiredKeyedService<KvChatClientOwner>(registration).Client,
            provider.GetRequiredService<IOptionsMonitor<KvChatClientOptions>>(),
            optionsName));
        IChatClient CreateInnerClient(IServiceProvider provider)
        {
            var client = provider.GetRequiredKeyedService<KvChatClientOwner>(registration).Client;
            return lifetime == ServiceLifetime.Singleton ? client : new SharedChatClient(client);
        }

        return serviceKey is null
            ? services.AddChatClient(CreateInnerClient, lifetime)
            : services.AddKeyedChatClient(serviceKey, CreateInnerClient, lifetime);
    }
}
