using KvChat;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.SemanticKernel.ChatCompletion;

namespace Microsoft.SemanticKernel;

/// <summary>Adds a <see cref="KvChatClient"/> to a Semantic Kernel <see cref="IKernelBuilder"/>.</summary>
public static class KvChatKernelBuilderExtensions
{
    /// <summary>
    /// Adds a <see cref="KvChatClient"/> over the GenAI model folder at <paramref name="modelPath"/> to the kernel's
    /// services, as an <see cref="IChatClient"/> (with Semantic Kernel's function invocation, so
    /// <c>FunctionChoiceBehavior.Auto()</c> runs kernel functions) and as an <see cref="IChatCompletionService"/> over it,
    /// both keyed by <paramref name="serviceId"/>.
    /// </summary>
    /// <param name="builder">The kernel builder.</param>
    /// <param name="modelPath">The GenAI model folder.</param>
    /// <param name="configure">Configures the client's options; <see langword="null"/> for the defaults.</param>
    /// <param name="serviceId">The service key of both registrations; <see langword="null"/> registers them unkeyed.</param>
    /// <returns><paramref name="builder"/>.</returns>
    /// <remarks>
    /// The client is created once, on first resolution, and disposed with the kernel's service provider; see
    /// <see cref="KvChatServiceCollectionExtensions.AddKvChatCompletion"/>. Send the whole <c>ChatHistory</c> every
    /// turn (what Semantic Kernel does): the client finds the cached prefix itself.
    /// </remarks>
    /// <exception cref="ArgumentNullException"><paramref name="builder"/> or <paramref name="modelPath"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException"><paramref name="modelPath"/> is empty or white space.</exception>
    public static IKernelBuilder AddKvChatClient(
        this IKernelBuilder builder,
        string modelPath,
        Action<KvChatClientOptions>? configure = null,
        string? serviceId = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.Services.AddKvChatCompletion(modelPath, configure, serviceId);
        return builder;
    }
}
