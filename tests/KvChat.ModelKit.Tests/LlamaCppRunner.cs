using LLama;
using LLama.Common;
using LLama.Native;

namespace KvChat.ModelKit.Tests;

/// <summary>llama.cpp through LLamaSharp on a kit GGUF: greedy decoding by argmax over the raw logits, f32 KV cache.</summary>
internal sealed class LlamaCppRunner : IDisposable
{
    private readonly LLamaWeights _weights;
    private readonly ModelParams _parameters;

    static LlamaCppRunner()
    {
        NativeLibraryConfig.All.WithLogCallback((level, message) => { });
    }

    public LlamaCppRunner(string ggufPath, uint contextSize = 1024, bool f32Cache = true)
    {
        _parameters = new ModelParams(ggufPath)
        {
            ContextSize = contextSize,
            GpuLayerCount = 0,
            Threads = 2,
            BatchThreads = 2,
            BatchSize = contextSize,
            UBatchSize = contextSize,
        };
        if (f32Cache)
        {
            _parameters.TypeK = GGMLType.GGML_TYPE_F32;
            _parameters.TypeV = GGMLType.GGML_TYPE_F32;
        }

        _weights = LLamaWeights.LoadFromFile(_parameters);
    }

    public LLamaWeights Weights => _weights;

    public int[] Tokenize(string text)
    {
        using var context = _weights.CreateContext(_parameters);
        return [.. context.Tokenize(text, addBos: false, special: true).Select(t => (int)t)];
    }

    /// <summary>The logits after prefilling <paramref name="prompt"/>, at its last position.</summary>
    public float[] PrefillLogits(IReadOnlyList<int> prompt)
    {
        using var context = _weights.CreateContext(_parameters);
        var batch = new LLamaBatch();
        for (var i = 0; i < prompt.Count; i++)
        {
            batch.Add(prompt[i], i, LLamaSeqId.Zero, i == prompt.Count - 1);
        }

        Check(context.Decode(batch));
        return context.NativeHandle.GetLogitsIth(batch.TokenCount - 1).ToArray();
    }

    /// <summary>Greedy tokens after <paramref name="prompt"/>; an end-of-generation token ends (not included).</summary>
    public List<int> Greedy(IReadOnlyList<int> prompt, int maxNewTokens)
    {
        using var context = _weights.CreateContext(_parameters);
        var batch = new LLamaBatch();
        for (var i = 0; i < prompt.Count; i++)
        {
            batch.Add(prompt[i], i, LLamaSeqId.Zero, i == prompt.Count - 1);
        }

        Check(context.Decode(batch));
        var output = new List<int>();
        var position = prompt.Count;
        while (output.Count < maxNewTokens)
        {
            var logits = context.NativeHandle.GetLogitsIth(batch.TokenCount - 1);
            var token = ArgMax(logits);
            if (((LLamaToken)token).IsEndOfGeneration(_weights.Vocab))
            {
                break;
            }

            output.Add(token);
            batch.Clear();
            batch.Add(token, position++, LLamaSeqId.Zero, true);
            Check(context.Decode(batch));
        }

        return output;
    }

    public void Dispose() => _weights.Dispose();

    private static int ArgMax(ReadOnlySpan<float> values)
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

    private static void Check(DecodeResult result)
    {
        if (result != DecodeResult.Ok)
        {
            throw new InvalidOperationException($"llama_decode returned {result}.");
        }
    }
}
