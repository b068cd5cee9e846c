using System.Buffers;
using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat;

/// <summary>
/// One GenAI generator and the exact token ids its KV cache holds. The decode loop appends every chosen token itself
/// (never <c>GenerateNextToken</c>), so no token is ever pending: the KV cache always holds <see cref="Tokens"/>, and a
/// reply cut by a token limit, a stop sequence or cancellation leaves the session exact.
/// </summary>
/// <remarks>Used by one request at a time (the pool's lease); GenAI objects are not thread-safe.</remarks>
internal sealed class KvSession : IKvSession
{
    private readonly Model _model;
    private readonly int _contextTokens;
    private readonly long _bytesPerToken;
    private readonly bool _sharedBuffer;
    private readonly Lock? _runGate;
    private readonly List<int> _tokens = [];
    private Generator? _generator;
    private bool _disposed;
    private bool _logitShapeChecked;
    private int _lastAppendLength;

    public KvSession(Model model, int contextTokens, long bytesPerToken, bool sharedBuffer, Lock? runGate = null)
    {
        _runGate = runGate;
        _model = model;
        _contextTokens = contextTokens;
        _bytesPerToken = bytesPerToken;
        _sharedBuffer = sharedBuffer;
    }

    /// <summary>The token ids the KV cache holds.</summary>
    public IReadOnlyList<int> Tokens => _tokens;

    public int TokenCount => _tokens.Count;

    /// <summary>
    /// Gets or sets whether <see cref="ReadLastLogits"/> may use <see cref="GeneratorLastLogits"/>; off, the session
    /// takes the managed fallback (tests and benchmarks compare the two).
    /// </summary>
    internal bool UseNativeLogits { get; set; } = true;

    private bool NativeLogits => UseNativeLogits && GeneratorLastLogits.IsAvailable;

    /// <summary>
    /// Gets or sets whether, without the native last-position read, <see cref="Prefill"/> appends the prompt's last token
    /// on its own (one row of logits to copy instead of one per token). Off on a decoder whose one-row Runs differ from
    /// prefills (<see cref="RowExactness"/>): that token is then prefilled with the rest and its row read from the copy.
    /// </summary>
    internal bool AppendsLastPromptTokenAlone { get; init; } = true;

    /// <summary>
    /// Gets whether each decode step rewinds the generator by one position and appends the previous token again with
    /// the new one (a Run of two rows, <see cref="RowExactness.DecodesTwoRows"/>), so that no position the session holds
    /// comes from a one-row Run.
    /// </summary>
    internal bool TwoRowSteps { get; init; }

    public int ContextTokens => _contextTokens;

    /// <summary>Gets <see langword="false"/>: GenAI cannot copy KV between generators, nor write KV into one.</summary>
    public bool CanFork => false;

    /// <inheritdoc/>
    public long ByteSize => _bytesPerToken * (_sharedBuffer ? _contextTokens : Math.Max(_tokens.Count, 1));

    /// <summary>
    /// Makes the KV cache hold <paramref name="prompt"/>: keeps its first <paramref name="keep"/> tokens (which must equal
    /// the prompt's) and appends the rest. At least one token is appended, so logits for the prompt's end are ready.
    /// </summary>
    /// <remarks>
    /// When the native last-position read is unavailable (<see cref="GeneratorLastLogits"/>), the prompt's last token is
    /// appended on its own, so that <see cref="ReadLastLogits"/> copies one row of logits rather than one per prompt token.
    /// </remarks>
    public void Prefill(ReadOnlySpan<int> prompt, int keep)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (keep < 0 || keep >= prompt.Length || keep > _tokens.Count)
        {
            throw new ArgumentOutOfRangeException(nameof(keep), keep, "Keep must leave at least one prompt token to append.");
        }

        if (prompt.Length - keep > 1 && !NativeLogits && AppendsLastPromptTokenAlone)
        {
            Extend(keep, prompt[keep..^1]);
            Append(prompt[^1]);
            return;
        }

        Extend(keep, prompt[keep..]);
    }

    /// <summary>Keeps the first <paramref name="keep"/> tokens and appends <paramref name="tail"/> (which may be empty).</summary>
    public void Extend(int keep, ReadOnlySpan<int> tail)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var generator = _generator ??= CreateGenerator();
        if (keep < _tokens.Count)
        {
            generator.RewindTo((ulong)keep);
            _tokens.RemoveRange(keep, _tokens.Count - keep);
        }

        if (!tail.IsEmpty)
        {
            if (_runGate is null)
            {
                generator.AppendTokens(tail);
            }
            else
            {
                // Other sessions' forward passes wait at most one chunk.
                for (var offset = 0; offset < tail.Length; offset += OwnedBackend.ChunkLength(tail.Length - offset))
                {
                    var chunk = tail.Slice(offset, OwnedBackend.ChunkLength(tail.Length - offset));
                    lock (_runGate)
                    {
                        generator.AppendTokens(chunk);
                    }
                }
            }

            _lastAppendLength = tail.Length;
            foreach (var id in tail)
            {
                _tokens.Add(id);
            }
        }
    }

    /// <summary>Appends one chosen token (computes its K/V and the next logits; with <see cref="TwoRowSteps"/>, the previous token's again).</summary>
    public void Append(int token)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var generator = _generator ??= CreateGenerator();
        var twoRows = TwoRowSteps && _tokens.Count > 0;
        if (_runGate is null)
        {
            Step(generator, token, twoRows);
        }
        else
        {
            lock (_runGate)
            {
                Step(generator, token, twoRows);
            }
        }

        _lastAppendLength = twoRows ? 2 : 1;
        _tokens.Add(token);
    }

    private void Step(Generator generator, int token, bool twoRows)
    {
        if (!twoRows)
        {
            generator.AppendTokens([token]);
            return;
        }

        // On a shared buffer the rewind is bookkeeping; the Run of two rows writes the previous position's KV again.
        generator.RewindTo((ulong)(_tokens.Count - 1));
        generator.AppendTokens([_tokens[^1], token]);
    }

    /// <summary>
    /// Copies the logits of the last position into <paramref name="destination"/> (vocabulary size): through
    /// <see cref="GeneratorLastLogits"/> (one row, whatever the last append's length) or, where that is unavailable,
    /// the last row of <c>GetOutput("logits")</c>.
    /// </summary>
    public void ReadLastLogits(Span<float> destination)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var generator = _generator!;
        if (UseNativeLogits && GeneratorLastLogits.TryRead(generator, destination))
        {
            if (_lastAppendLength <= 2 && !GeneratorLastLogits.IsCrossChecked)
            {
                // Once per process, where the managed copy is one row or two (a two-row step): the native read must equal its last.
                var managed = ArrayPool<float>.Shared.Rent(destination.Length);
                try
                {
                    ReadManagedLogits(generator, managed.AsSpan(0, destination.Length));
                    if (!GeneratorLastLogits.CrossCheck(destination, managed.AsSpan(0, destination.Length)))
                    {
                        managed.AsSpan(0, destination.Length).CopyTo(destination);
                    }
                }
                finally
                {
                    ArrayPool<float>.Shared.Return(managed);
                }
            }

            return;
        }

        ReadManagedLogits(generator, destination);
    }

    private void ReadManagedLogits(Generator generator, Span<float> destination)
    {
        using var logits = generator.GetOutput("logits");
        if (!_logitShapeChecked)
        {
            // Checked once per session: Shape() allocates, and this runs once per generated token.
            var vocab = logits.Shape()[^1];
            if (vocab != destination.Length)
            {
                throw new InvalidOperationException($"The model's logits have {vocab} values per position; genai_config.json says vocab_size {destination.Length}.");
            }

            _logitShapeChecked = true;
        }

        var data = logits.GetData<float>();
        data[^destination.Length..].CopyTo(destination);
    }

    public void CopyPrefixFrom(IKvSession source, ReadOnlySpan<int> tokens) => throw NotOwned();

    public void Save(Stream destination, int length) => throw NotOwned();

    public IKvSession Park(int length) => throw NotOwned();

    public int Load(Stream source) => throw NotOwned();

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _generator?.Dispose();
        _generator = null;
        _tokens.Clear();
    }

    private static NotSupportedException NotOwned()
        => new("A GenAI generator's KV cache can be read but not written: only the owned-KV backend copies, saves and loads KV.");

    private Generator CreateGenerator()
    {
        using var parameters = new GeneratorParams(_model);
        parameters.SetSearchOption("max_length", _contextTokens);
        return new Generator(_model, parameters);
    }
}
