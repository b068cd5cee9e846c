namespace KvChat;

/// <summary>Limits which tokens may come next (structured output). One instance per reply; not thread-safe.</summary>
internal interface ITokenConstraint
{
    /// <summary>Sets the logits of every token that may not come next to negative infinity.</summary>
    void Mask(Span<float> logits);

    /// <summary>Advances past <paramref name="token"/>, which <see cref="Mask"/> allowed.</summary>
    void Accept(int token);

    /// <summary>Gets whether the constrained value is complete: the reply ends here.</summary>
    bool IsComplete { get; }
}
