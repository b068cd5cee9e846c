namespace KvChat;

/// <summary>
/// Which tokens top-p keeps, as a rule on a token's weight and id: every token heavier than <see cref="Threshold"/>, and
/// the tokens of exactly that weight up to id <see cref="LastTie"/>. That is the nucleus in the order "greater weight,
/// then lower id", cut where its mass first reaches the target.
/// </summary>
/// <param name="Threshold">The weight of the lightest token kept; greater than 0, except in <see cref="All"/>.</param>
/// <param name="LastTie">The greatest id kept among the tokens of weight <see cref="Threshold"/>.</param>
internal readonly record struct NucleusCut(float Threshold, int LastTie)
{
    /// <summary>Gets the cut that keeps every token of positive weight (no top-p).</summary>
    public static NucleusCut All => new(0f, -1);

    /// <summary>Gets whether the token <paramref name="id"/> of weight <paramref name="weight"/> is kept.</summary>
    public bool Keeps(float weight, int id) => weight > Threshold || (weight == Threshold && id <= LastTie);
}
