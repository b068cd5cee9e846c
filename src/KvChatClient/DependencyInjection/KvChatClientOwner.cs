using System.Diagnostics.Metrics;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace KvChat;

/// <summary>
/// The <see cref="KvChatClient"/> of one dependency-injection registration: a singleton of the container, created from
/// the registration's named options and disposed with the container.
/// </summary>
internal sealed class KvChatClientOwner : IDisposable
{
    /// <summary>Creates the client from the options named <paramref name="optionsName"/> (validated on the way).</summary>
    /// <exception cref="OptionsValidationException">The options are not valid.</exception>
    public KvChatClientOwner(IServiceProvider services, string optionsName)
    {
        var options = services.GetRequiredService<IOptionsMonitor<KvChatClientOptions>>().Get(optionsName).Clone();
        options.LoggerFactory ??= services.GetService<ILoggerFactory>();
        options.MeterFactory ??= services.GetService<IMeterFactory>();
        Client = new KvChatClient(options.ModelPath ?? throw new OptionsValidationException(optionsName, typeof(KvChatClientOptions), ["KvChatClientOptions.ModelPath is missing."]), options);
    }

    /// <summary>Gets the client.</summary>
    public KvChatClient Client { get; }

    /// <summary>Disposes the client and the model it owns.</summary>
    public void Dispose() => Client.Dispose();
}
