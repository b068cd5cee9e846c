using System.Collections.Frozen;
using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;

namespace KvChat;

/// <summary>
/// What <c>ChatOptions.AdditionalProperties</c> carries that other providers honour: <c>top_k</c> and <c>seed</c>
/// (Semantic Kernel and OpenAI-style callers send them there) are honoured when the typed option is unset; keys this
/// client knows but cannot honour (<c>stream_options</c>, <c>repetition_penalty</c>, ...) are logged at debug with the
/// reason; any other key is logged at debug and ignored, or rejected when
/// <see cref="KvChatClientOptions.RejectUnknownAdditionalProperties"/> is set.
/// </summary>
/// <param name="TopK">The <c>top_k</c> value, if given.</param>
/// <param name="Seed">The <c>seed</c> value, if given.</param>
internal readonly record struct ProviderKnobs(int? TopK, long? Seed)
{
    /// <summary>Keys other providers take that this client leaves alone, and why.</summary>
    private static readonly FrozenDictionary<string, string> Ignored = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["stream_options"] = "usage is always reported in the final update",
        ["repetition_penalty"] = "not supported; use ChatOptions.FrequencyPenalty or PresencePenalty",
        ["min_p"] = "not supported; use ChatOptions.TopP or TopK",
        ["typical_p"] = "not supported; use ChatOptions.TopP or TopK",
        ["logit_bias"] = "not supported",
        ["logprobs"] = "not supported",
        ["top_logprobs"] = "not supported",
        ["n"] = "one reply per request",
        ["user"] = "not used by a local model",
        ["store"] = "not used by a local model",
        ["metadata"] = "not used by a local model",
        ["parallel_tool_calls"] = "use ChatOptions.AllowMultipleToolCalls",
        ["max_tokens"] = "use ChatOptions.MaxOutputTokens",
        ["max_completion_tokens"] = "use ChatOptions.MaxOutputTokens",
    }.ToFrozenDictionary(StringComparer.Ordinal);

    /// <summary>Reads the knobs and logs (or rejects) everything else.</summary>
    /// <exception cref="ArgumentException">A honoured key has a value that is not a whole number.</exception>
    /// <exception cref="NotSupportedException">An unknown key, with strictness on.</exception>
    public static ProviderKnobs Read(ChatOptions? options, ILogger logger, bool rejectUnknown)
    {
        if (options?.AdditionalProperties is not { Count: > 0 } additional)
        {
            return default;
        }

        int? topK = null;
        long? seed = null;
        foreach (var (key, value) in additional)
        {
            switch (key)
            {
                case "top_k":
                    var k = WholeNumber(key, value, nameof(options));
                    topK = k is >= 1 and <= int.MaxValue ? (int)k
                        : throw new ArgumentException($"ChatOptions.AdditionalProperties['top_k'] must be a positive whole number; it is {k}.", nameof(options));
                    break;
                case "seed":
                    seed = WholeNumber(key, value, nameof(options));
                    break;
                default:
                    if (Ignored.TryGetValue(key, out var reason))
                    {
                        Log.IgnoredAdditionalProperty(logger, key, reason);
                    }
                    else if (rejectUnknown)
                    {
                        throw new NotSupportedException(
                            $"ChatOptions.AdditionalProperties key '{key}' is not known to KvChatClient (KvChatClientOptions.RejectUnknownAdditionalProperties is on).");
                    }
                    else
                    {
                        Log.UnknownAdditionalProperty(logger, key);
                    }

                    break;
            }
        }

        return new ProviderKnobs(topK, seed);
    }

    /// <summary>A whole number from the shapes callers send: integers, doubles (Semantic Kernel), strings, JSON.</summary>
    private static long WholeNumber(string key, object? value, string paramName)
    {
        var number = value switch
        {
            int i => i,
            long l => l,
            short s => s,
            uint u => u,
            double d when double.IsInteger(d) && Math.Abs(d) <= long.MaxValue => (long)d,
            float f when float.IsInteger(f) && Math.Abs(f) <= long.MaxValue => (long)f,
            decimal m when decimal.IsInteger(m) && Math.Abs(m) <= long.MaxValue => (long)m,
            string text when long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var parsed) => parsed,
            JsonElement { ValueKind: JsonValueKind.Number } json when json.TryGetInt64(out var parsed) => parsed,
            _ => (long?)null,
        };
        return number ?? throw new ArgumentException(
            $"ChatOptions.AdditionalProperties['{key}'] must be a whole number; it is {value ?? "null"}.", paramName);
    }
}
