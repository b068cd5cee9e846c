using System.Globalization;
using Microsoft.Extensions.AI;
using Spectre.Console;

namespace KvChat.ConsoleChat;

/// <summary>
/// What one turn cost: the prompt split into tokens served from the KV cache and tokens prefilled, the reply length,
/// the time to the first streamed text, and the decode rate after it. Printed as one line after each reply.
/// </summary>
internal sealed record TurnReport(
    int Turn,
    long PromptTokens,
    long CachedTokens,
    long PrefilledTokens,
    long OutputTokens,
    TimeSpan TimeToFirstToken,
    TimeSpan DecodeTime)
{
    /// <summary>Builds a report from the usage of the final update and the times the caller measured.</summary>
    /// <param name="turn">The turn number, from 1.</param>
    /// <param name="usage">The response usage (KvChatClient reports it in the final update).</param>
    /// <param name="timeToFirstToken">From the call to the first text (or to the end, for a reply with no text).</param>
    /// <param name="decodeTime">From the first text to the end.</param>
    public static TurnReport From(int turn, UsageDetails? usage, TimeSpan timeToFirstToken, TimeSpan decodeTime)
    {
        var prompt = usage?.InputTokenCount ?? 0;
        var cached = usage?.CachedInputTokenCount ?? 0;
        var prefilled = usage?.AdditionalCounts?.TryGetValue(KvChatUsage.PrefilledInputTokenCount, out var p) == true ? p : prompt - cached;
        return new TurnReport(turn, prompt, cached, prefilled, usage?.OutputTokenCount ?? 0, timeToFirstToken, decodeTime);
    }

    /// <summary>
    /// Gets the decode rate: the tokens after the first over the time after the first; <see langword="null"/> when the
    /// reply had fewer than two tokens.
    /// </summary>
    public double? DecodeTokensPerSecond =>
        OutputTokens > 1 && DecodeTime > TimeSpan.Zero ? (OutputTokens - 1) / DecodeTime.TotalSeconds : null;

    /// <summary>Formats the line as plain text, e.g. <c>[2] prompt 57 | cached 41 | prefilled 16 | output 32 | first token 12 ms | decode 850 tok/s</c>.</summary>
    public override string ToString() => Head() + Cached() + Tail();

    /// <summary>Formats the same line as Spectre markup: the cached count stands out, the rest is dim.</summary>
    public string ToMarkup() =>
        $"[grey]{Markup.Escape(Head())}[/][{(CachedTokens > 0 ? "green" : "grey")}]{Cached()}[/][grey]{Markup.Escape(Tail())}[/]";

    private string Head() => string.Create(CultureInfo.InvariantCulture, $"[{Turn}] prompt {PromptTokens} | ");

    private string Cached() => string.Create(CultureInfo.InvariantCulture, $"cached {CachedTokens}");

    private string Tail()
    {
        var rate = DecodeTokensPerSecond is { } r ? r.ToString("F0", CultureInfo.InvariantCulture) : "-";
        return string.Create(CultureInfo.InvariantCulture,
            $" | prefilled {PrefilledTokens} | output {OutputTokens} | first token {TimeToFirstToken.TotalMilliseconds:F0} ms | decode {rate} tok/s");
    }
}
