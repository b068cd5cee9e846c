namespace KvChat;

/// <summary>
/// How <see cref="LogitSampler"/> picks the next token.
/// </summary>
/// <param name="Temperature">
/// Divides the logits before softmax; finite and at least 0. 0 means greedy (argmax).
/// </param>
/// <param name="TopP">
/// Nucleus sampling: keep the smallest set of most likely tokens whose probability mass is at least
/// this value (among tokens of equal probability, the lower ids first); in (0, 1]. 1 disables it.
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
    /// Throws when a setting is out of range; the message names the setting as a <c>ChatOptions</c> property (the
    /// settings mirror them) and the value.
    /// </summary>
    /// <param name="paramName">The parameter the settings came from.</param>
    /// <exception cref="ArgumentOutOfRangeException">A setting is out of range.</exception>
    public void Validate(string paramName = "options")
    {
        if (!float.IsFinite(Temperature) || Temperature < 0f)
        {
            throw OptionErrors.OutOfRange(paramName, "ChatOptions.Temperature", Temperature, "finite and at least 0");
        }

        if (!(TopP > 0f && TopP <= 1f))
        {
            throw OptionErrors.OutOfRange(paramName, "ChatOptions.TopP", TopP, "greater than 0 and at most 1");
        }

        if (TopK < 0)
        {
            throw OptionErrors.OutOfRange(paramName, "ChatOptions.TopK", TopK, "positive");
        }

        if (!float.IsFinite(FrequencyPenalty))
        {
            throw OptionErrors.OutOfRange(paramName, "ChatOptions.FrequencyPenalty", FrequencyPenalty, "finite");
        }

        if (!float.IsFinite(PresencePenalty))
        {
            throw OptionErrors.OutOfRange(paramName, "ChatOptions.PresencePenalty", PresencePenalty, "finite");
        }
    }
}
