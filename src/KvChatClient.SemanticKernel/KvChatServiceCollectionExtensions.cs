using KvChat;
using Microsoft.Extensions.AI;
using Microsoft.SemanticKernel;
using Microsoft.SemanticKernel.ChatCompletion;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers a <see cref="KvChatClient"/> for Semantic Kernel in an <see cref="IServiceCollection"/>.</summary>
public static class KvChatServiceCollectionExtensions
{
    /// <summary>
    /// Registers a <see cref="KvChatClient"/> over the GenAI model folder at <paramref name="modelPath"/> as an
    /// <see cref="IChatClient"/> (with Semantic Kernel's function invocation) and as an <see cref="IChatCompletionService"/>
    /// over it, both keyed by <paramref name="serviceId"/>.
    /// </summary>
    /// <param name="services">The service collection (a kernel builder's <c>Services</c>, or an application's).</param>
    /// <param name="modelPath">The GenAI model folder.</param>
    /// <param name="configure">Configures the client's options; <see langword="null"/> for the defaults.</param>
    /// <param name="serviceId">The service key of both registrations; <see langword="null"/> registers them unkeyed.</param>
    /// <returns><paramref name="services"/>.</returns>
    /// <remarks>
    /// Built on <c>AddKvChatClient</c>/<c>AddKeyedKvChatClient</c> of the KvChatClient package: options are validated
    /// at start-up, the container's <c>ILoggerFactory</c> and <c>IMeterFactory</c> are used, and the client (with the
    /// model it loads) is created once and disposed with the container.
    /// </remarks>
    /// <exception cref="ArgumentNullException"><paramref name="services"/> or <paramref name="modelPath"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException"><paramref name="modelPath"/> is empty or white space.</exception>
    public static IServiceCollection AddKvChatCompletion(
        this IServiceCollection services,
        string modelPath,
        Action<KvChatClientOptions>? configure = null,
        string? serviceId = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentException.ThrowIfNullOrWhiteSpace(modelPath);
        var chatClient = serviceId is null
            ? services.AddKvChatClient(modelPath, configure)
            : services.AddKeyedKvChatClient(serviceId, modelPath, configure);
        chatClient.UseKernelFunctionInvocation();
        services.AddKeyedSingleton<IChatCompletionService>(serviceId, (provider, key) =>
            (key is null ? provider.GetRequiredService<IChatClient>() : provider.GetRequiredKeyedService<IChatClient>(key))
                .AsChatCompletionService(provider));
        return services;
    }
}
