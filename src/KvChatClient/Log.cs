using Microsoft.Extensions.Logging;

namespace KvChat;

/// <summary>The client's log messages (source-generated).</summary>
internal static partial class Log
{
    [LoggerMessage(1, LogLevel.Debug, "Request {RequestId}: {PromptTokens} prompt tokens, {CachedTokens} cached, {PrefilledTokens} to prefill (hit: {Hit}, evicted: {Evicted}).")]
    public static partial void CacheLookup(ILogger logger, string requestId, int promptTokens, int cachedTokens, int prefilledTokens, bool hit, bool evicted);

    [LoggerMessage(2, LogLevel.Warning, "Request {RequestId}: the session failed and was discarded.")]
    public static partial void SessionDiscarded(ILogger logger, string requestId, Exception exception);

    [LoggerMessage(3, LogLevel.Debug, "ChatOptions.AdditionalProperties key '{Key}' is not known to KvChatClient and is ignored.")]
    public static partial void UnknownAdditionalProperty(ILogger logger, string key);

    [LoggerMessage(4, LogLevel.Debug, "Request {RequestId}: {OutputTokens} tokens, finish {FinishReason}, first token after {TimeToFirstTokenMs:F1} ms.")]
    public static partial void ReplyFinished(ILogger logger, string requestId, int outputTokens, string finishReason, double timeToFirstTokenMs);

    [LoggerMessage(6, LogLevel.Debug, "ChatOptions.AdditionalProperties key '{Key}' is ignored: {Reason}.")]
    public static partial void IgnoredAdditionalProperty(ILogger logger, string key, string reason);

    [LoggerMessage(9, LogLevel.Warning, "The owned-KV backend declined '{ModelPath}', sessions use GenAI generators: {Reason}")]
    public static partial void OwnedBackendDeclined(ILogger logger, string modelPath, string reason);

    [LoggerMessage(7, LogLevel.Information, "Owned-KV backend: {Note}")]
    public static partial void BatchingOff(ILogger logger, string note);

    [LoggerMessage(21, LogLevel.Information, "Owned-KV backend: {Note}")]
    public static partial void OwnedLogits(ILogger logger, string note);

    [LoggerMessage(8, LogLevel.Debug, "The session starts from a copy of {Tokens} cached tokens of another session (no prefill).")]
    public static partial void Forked(ILogger logger, int tokens);

    [LoggerMessage(5, LogLevel.Information, "Prefilled {Tokens} tokens ({Total} held) and pinned them.")]
    public static partial void Prefilled(ILogger logger, int tokens, int total);

    [LoggerMessage(6, LogLevel.Information, "A JSON reply falls back to GenAI guidance on a temporary generator (the whole prompt is prefilled): {Reason}.")]
    public static partial void StructuredFallback(ILogger logger, string reason);
}
