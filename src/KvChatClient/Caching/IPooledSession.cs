namespace KvChat;

/// <summary>
/// A session that a <see cref="SessionPool{TSession}"/> can hold: something that owns a KV cache.
/// </summary>
/// <remarks>
/// The pool disposes the sessions it holds: when one is discarded, when the pool is disposed, and
/// never while a lease on it is active.
/// </remarks>
internal interface IPooledSession : IDisposable
{
    /// <summary>
    /// Gets the memory the session holds, in bytes. Read by the pool when the session is created and
    /// at each <see cref="SessionPool{TSession}.Commit"/>; must be cheap.
    /// </summary>
    long ByteSize { get; }
}
