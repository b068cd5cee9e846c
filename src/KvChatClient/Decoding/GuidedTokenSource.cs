using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat;

/// <summary>
/// A reply constrained to a JSON schema by GenAI's guidance, which works only inside GenAI's own sampler and is fixed
/// per generator: a temporary guided generator prefills the whole prompt and picks every token. The cached sessions are
/// untouched; the next turn reuses them and prefills the structured reply with the new message.
/// </summary>
internal sealed class GuidedTokenSource(Model model, int[] prompt, SamplingSettings sampling, string jsonSchema, int contextTokens)
    : TokenSource(prompt)
{
    private GeneratorParams? _parameters;
    private Generator? _generator;

    /// <inheritdoc/>
    /// <remarks>GenAI's generator holds at most the context: its last token is appended too.</remarks>
    public override int MaxReplyTokens => contextTokens - Prompt.Length;

    /// <inheritdoc/>
    public override string ReplyKind => "a structured (JSON) reply";

    /// <inheritdoc/>
    public override void Prefill()
    {
        _parameters = new GeneratorParams(model);
        _parameters.SetSearchOption("max_length", contextTokens);
        _parameters.SetSearchOption("do_sample", !sampling.IsGreedy);
        if (!sampling.IsGreedy)
        {
            _parameters.SetSearchOption("temperature", sampling.Temperature);
            _parameters.SetSearchOption("top_p", sampling.TopP);
            _parameters.SetSearchOption("top_k", sampling.TopK);
            if (sampling.Seed is { } seed)
            {
                _parameters.SetSearchOption("random_seed", seed % (1UL << 31));
            }
        }

        _parameters.SetGuidance("json_schema", jsonSchema, false);
        _generator = new Generator(model, _parameters);
        _generator.AppendTokens(Prompt);
    }

    /// <inheritdoc/>
    public override Span<float> ReadLogits(int step) => [];

    /// <inheritdoc/>
    public override int Choose(Span<float> logits)
    {
        var generator = _generator!;
        if (generator.IsDone())
        {
            return EndOfSequence; // max_length reached, or the grammar is complete.
        }

        var before = generator.TokenCount();
        generator.GenerateNextToken();

        // End of sequence (the grammar is complete) is not appended.
        return generator.TokenCount() == before ? EndOfSequence : generator.GetSequence(0)[^1];
    }

    /// <inheritdoc/>
    public override void Dispose()
    {
        _generator?.Dispose();
        _parameters?.Dispose();
        _generator = null;
        _parameters = null;
    }
}
