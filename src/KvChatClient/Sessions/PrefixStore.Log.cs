using Microsoft.Extensions.Logging;

namespace KvChat;

// PrefixStore's log messages (source-generated; event ids 40-49).
internal sealed partial class PrefixStore
{
    [LoggerMessage(40, LogLevel.Warning, "The prefix cache directory '{Directory}' cannot be used ({Reason}): pinned prefixes are kept in memory only.")]
    private static partial void LogDirectoryUnusable(ILogger logger, string directory, string reason);

    [LoggerMessage(41, LogLevel.Warning, "The prefix file '{Path}' is not used and was deleted: {Reason}")]
    private static partial void LogBadFile(ILogger logger, string path, string reason);

    [LoggerMessage(42, LogLevel.Warning, "{Count} prefix files in '{Directory}' belong to another model, tokenizer, template or KV layout: they are not used.")]
    private static partial void LogOtherModels(ILogger logger, int count, string directory);

    [LoggerMessage(43, LogLevel.Warning, "The prefix file '{Path}' could not be written ({Reason}): the prefix stays in memory only.")]
    private static partial void LogWriteFailed(ILogger logger, string path, string reason);

    [LoggerMessage(44, LogLevel.Warning, "The prefix file '{Path}' could not be read ({Reason}): the prefix is prefilled instead.")]
    private static partial void LogUnreadable(ILogger logger, string path, string reason);

    [LoggerMessage(45, LogLevel.Information, "Loaded the KV of {Tokens} prefix tokens from '{Path}' (no prefill).")]
    private static partial void LogLoaded(ILogger logger, int tokens, string path);

    [LoggerMessage(46, LogLevel.Debug, "Wrote the KV of {Tokens} prefix tokens to '{Path}'.")]
    private static partial void LogWritten(ILogger logger, int tokens, string path);

    [LoggerMessage(47, LogLevel.Debug, "Deleted the least recently used prefix file '{Path}' to keep the directory within {MaxBytes} bytes.")]
    private static partial void LogPruned(ILogger logger, string path, long maxBytes);

    [LoggerMessage(48, LogLevel.Warning, "Deleted the temporary prefix file '{Path}', left by an interrupted write.")]
    private static partial void LogStaleTemp(ILogger logger, string path);

    [LoggerMessage(49, LogLevel.Warning, "A prefix of {Tokens} tokens takes {Bytes} bytes, more than KvChatClientOptions.PrefixCacheMaxBytes ({MaxBytes}): it is not written.")]
    private static partial void LogTooLarge(ILogger logger, int tokens, long bytes, long maxBytes);
}
