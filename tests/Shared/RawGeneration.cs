using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat.Testing;

/// <summary>Direct GenAI helpers for oracles: a fresh generator that prefills a token sequence, greedy steps, logits.</summary>
internal static class RawGeneration
{
    public static Generator NewGenerator(Model model, int? maxLength = null)
    {
        using var parameters = new GeneratorParams(model);
        if (maxLength is { } length)
        {
            parameters.SetSearchOption("max_length", length);
        }

        return new Generator(model, parameters);
    }

    /// <summary>The logits of the last position after the generator's most recent forward pass.</summary>
    public static float[] LastLogits(Generator generator)
    {
        using var logits = generator.GetOutput("logits");
        var shape = logits.Shape();
        var vocab = (int)shape[^1];
        var data = logits.GetData<float>();
        return data[^vocab..].ToArray();
    }

    public static int ArgMax(ReadOnlySpan<float> values)
    {
        var best = 0;
        for (var i = 1; i < values.Length; i++)
        {
            if (values[i] > values[best])
            {
                best = i;
            }
        }

        return best;
    }

    public static float MaxAbsDifference(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        if (a.Length != b.Length)
        {
            throw new ArgumentException("Length mismatch.", nameof(b));
        }

        var max = 0f;
        for (var i = 0; i < a.Length; i++)
        {
            max = MathF.Max(max, MathF.Abs(a[i] - b[i]));
        }

        return max;
    }

    /// <summary>
    /// Greedy tokens where each is the argmax of the last logits of a fresh generator that prefills the prompt and every
    /// token chosen before it in one <c>AppendTokens</c> (no decode step at all): what a decoder whose decode steps drift
    /// from prefills says when every position is computed as a prefill computes it. An end-of-sequence id ends it, not
    /// included.
    /// </summary>
    public static List<int> PrefillGreedy(Model model, ReadOnlySpan<int> prompt, int maxNewTokens, IReadOnlyCollection<int> eos)
    {
        var sequence = new List<int>(prompt.ToArray());
        var result = new List<int>();
        while (result.Count < maxNewTokens)
        {
            using var generator = NewGenerator(model, sequence.Count + 1);
            generator.AppendTokens(sequence.ToArray());
            var token = ArgMax(LastLogits(generator));
            if (eos.Contains(token))
            {
                break;
            }

            result.Add(token);
            sequence.Add(token);
        }

        return result;
    }

    /// <summary>Greedy tokens a fresh generator says after prefilling <paramref name="prompt"/> (EOS ends, not included).</summary>
    public static List<int> FreshGreedy(Model model, ReadOnlySpan<int> prompt, int maxNewTokens)
    {
        using var generator = NewGenerator(model);
        generator.AppendTokens(prompt);
        var result = new List<int>();
        while (result.Count < maxNewTokens && !generator.IsDone())
        {
            var before = generator.TokenCount();
            generator.GenerateNextToken();
            if (generator.TokenCount() == before)
            {
                break; // An end-of-sequence token is not appended to the sequence.
            }

            result.Add(generator.GetSequence(0)[^1]);
        }

        return result;
    }
}
