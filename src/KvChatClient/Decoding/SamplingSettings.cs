namespace KvChat;

/// <summary>
/// How <see cref="LogitSampler"/> picks the next token.
/// </summary>
/// <param name="Temperature">
/// Divides the logits before softmax; finite and at least 0. 0 means greedy (argmax).
/// </param>
/// <param name="TopP">
/// Nucleus sampling: keep the smallest set of most likely tokens whose probability mass is at least
/// this value; in (0, 1]. 1 disables it.
/// </param>
/// <param name="TopK">Keep only the this many most likely tokens; at least 0. 0 disables it; 1 means greedy.</param>
/// <param name="FrequencyPenalty">
/// Subtracted from a token's logit once per time it was generated (OpenAI semantics); finite.
/// </param>
/// <param name="PresencePenalty">
/// Subtracted from a token's logit if it was generated at least once (OpenAI semantics); finite.
/// </param>
/// <param name="Seed">
/// Seeds the random draws, for reproducible output; <see langword="null"/> for a random seed.
/// </param>
internal readonly record struct SamplingSettings(
    float Temperature,
    float TopP,
    int TopK,
    float FrequencyPenalty,
    float PresencePenalty,
    ulong? Seed)
{
    /// <summary>Gets settings for greedy decoding without penalties.</summary>
    public static SamplingSettings Greedy => new(0f, 1f, 0, 0f, 0f, null);

    /// <summary>
    /// Gets whether the next token is the argmax of the (penalised) logits: <see cref="Temperature"/>
    /// is 0 or <see cref="TopK"/> is 1. Greedy decoding draws no random numbers.
    /// </summary>
    public bool IsGreedy => Temperature == 0f || TopK == 1;

    /// <summary>Gets whether a frequency or presence penalty is set.</summary>
    public bool HasPenalties => FrequencyPenalty != 0f || PresencePenalty != 0f;

    /// <summary>
    /// Throws when a setting is out of range.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A setting is out of range.</exception>
    public void Validate()
    {
        if (!float.IsFinite(Temperature) || Temperature < 0f)
        {
            throw new ArgumentOutOfRangeException(nameof(Temperature), Temperature, "The temperature must be finite and at least 0.");
        }

        if (!(TopP > 0f && TopP <= 1f))
        {
            throw new ArgumentOutOfRangeException(nameof(TopP), TopP, "TopP must be greater than 0 and at most 1.");
        }

        ArgumentOutOfRangeException.ThrowIfNegative(TopK, nameof(TopK));
        if (!float.IsFinite(FrequencyPenalty))
        {
            throw new ArgumentOutOfRangeException(nameof(FrequencyPenalty), FrequencyPenalty, "The frequency penalty must be finite.");
        }

        if (!float.IsFinite(PresencePenalty))
        {
            throw new ArgumentOutOfRangeException(nameof(PresencePenalty), PresencePenalty, "The presence penalty must be finite.");
        }
    }
}
