using Microsoft.Extensions.Logging;

namespace KvChat;

/// <summary>
/// Wraps the user's <see cref="ILogger"/> so that a logger that throws never fails, hangs or changes a request: the
/// client logs from inside its decode loop and its cache bookkeeping, where an exception would otherwise cancel a reply
/// or discard a healthy session.
/// </summary>
/// <remarks>
/// A logger's own failure has nowhere to be reported (the logger is the report channel), so it is dropped here, and
/// only here. Microsoft.Extensions.Logging offers no such wrapper: its <c>LoggerFactory</c> loggers collect provider
/// exceptions and rethrow them as an <see cref="AggregateException"/>.
/// </remarks>
internal sealed class ContainedLogger(ILogger inner) : ILogger
{
    /// <inheritdoc/>
    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull
    {
        try
        {
            return inner.BeginScope(state) is { } scope ? new ContainedScope(scope) : null;
        }
        catch (Exception)
        {
            return null;
        }
    }

    /// <inheritdoc/>
    public bool IsEnabled(LogLevel logLevel)
    {
        try
        {
            return inner.IsEnabled(logLevel);
        }
        catch (Exception)
        {
            return false;
        }
    }

    /// <inheritdoc/>
    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        try
        {
            inner.Log(logLevel, eventId, state, exception, formatter);
        }
        catch (Exception)
        {
        }
    }

    private sealed class ContainedScope(IDisposable scope) : IDisposable
    {
        public void Dispose()
        {
            try
            {
                scope.Dispose();
            }
            catch (Exception)
            {
            }
        }
    }
}
