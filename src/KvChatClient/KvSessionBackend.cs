namespace KvChat;

/// <summary>Which runtime holds a <see cref="KvChatClient"/>'s KV caches.</summary>
public enum KvSessionBackend
{
    /// <summary>
    /// The owned-KV backend when the model's decoder is one it can drive (checked at load), otherwise the generator
    /// backend, with the reason logged and reported in <see cref="KvCacheStatistics.BackendFallbackReason"/>.
    /// </summary>
    Auto,

    /// <summary>
    /// ONNX Runtime GenAI generators, one per session: runs every model GenAI runs; a prefix shared by sessions is
    /// prefilled in each, and concurrent sessions decode one Run each.
    /// </summary>
    Generator,

    /// <summary>
    /// The decoder run directly on ONNX Runtime over KV memory the client allocates: a new session starts from a copy of
    /// a cached prefix (a system prompt is prefilled once per process), and concurrent sessions decode together in one
    /// batched Run. For GroupQueryAttention share-buffer decoders on CPU; a model it cannot drive is an error.
    /// </summary>
    Owned,
}
