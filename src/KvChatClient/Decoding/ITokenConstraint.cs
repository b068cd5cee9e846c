namespace KvChat;

/// <summary>Limits which tokens may come next (structured output). One instance per reply; not thread-safe.</summary>
internal interface ITokenConstraint
{
    /// <summary>Sets the logits of every token that may not come next to negative infinity.</summary>
    void Mask(Span<float> logits);

    /// <summary>Advances past <paramref name="token"/>, which <see cref="Mask"/> allowed.</summary>
    void Accept(int token);

    /// <summary>Gets whether the constrained value may end here: end of sequence is allowed (a number may still go on).</summary>
    bool CanEnd { get; }

    /// <summary>Gets whether the constrained value is complete and nothing may follow: the reply ends here.</summary>
    bool IsComplete { get; }
}
