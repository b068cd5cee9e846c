using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace KvChat;

/// <summary>
/// Prefills and pins the <see cref="KvChatClientOptions.WarmupPrompts"/> of one dependency-injection registration when
/// the host starts (<see cref="KvChatClient.WarmUpAsync"/>); with a <see cref="KvChatClientOptions.PrefixCacheDirectory"/>
/// the second start loads them from disk instead.
/// </summary>
/// <remarks>
/// Registered by every <c>AddKvChatClient</c>: with no warm-up prompts it does nothing (the client stays created on first
/// use). The host's start waits for the warm-up. A prompt that is invalid input (an <see cref="ArgumentException"/>: a
/// configuration error) fails the start; any other failure is logged by the client and the host starts without that
/// prefix pinned.
/// </remarks>
internal sealed class KvChatWarmupService(Func<KvChatClient> client, IOptionsMonitor<KvChatClientOptions> options, string optionsName) : IHostedService
{
    /// <inheritdoc/>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (options.Get(optionsName).WarmupPrompts.Count == 0)
        {
            return;
        }

        await client().WarmUpAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc/>
    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
