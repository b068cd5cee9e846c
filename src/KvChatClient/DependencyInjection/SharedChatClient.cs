using Microsoft.Extensions.AI;

namespace KvChat;

/// <summary>
/// A scoped or transient pipeline's view of the container's <see cref="KvChatClient"/>: it forwards every call, and
/// disposing it (when the pipeline's scope ends) leaves the shared client, its KV cache and its model alive.
/// </summary>
internal sealed class SharedChatClient(IChatClient inner) : IChatClient
{
    public Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default) =>
        inner.GetResponseAsync(messages, options, cancellationToken);

    public IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default) =>
        inner.GetStreamingResponseAsync(messages, options, cancellationToken);

    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        return serviceKey is null && serviceType.IsInstanceOfType(this) ? this : inner.GetService(serviceType, serviceKey);
    }

    public void Dispose()
    {
        // The container owns the shared client.
    }
}
