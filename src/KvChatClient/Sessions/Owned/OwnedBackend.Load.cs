using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace KvChat;

// OwnedBackend, part 3 of 3: what is checked at load, and the probes (batching, row exactness).
internal sealed partial class OwnedBackend
{
    /// <summary>
    /// Loads the folder's decoder for owned-KV sessions, or declines: checks <c>genai_config.json</c>, the graph's
    /// operators, and every input and output name, type and shape of the loaded session.
    /// </summary>
    /// <param name="folder">The model folder.</param>
    /// <param name="context">The positions of a session.</param>
    /// <param name="maxSessions">The most sessions the pool holds (the arena holds twice as many slots, for sessions being disposed).</param>
    /// <param name="intraOpThreads">ONNX Runtime's intra-op threads.</param>
    /// <param name="reason">Why the backend declined, or <see langword="null"/>.</param>
    /// <param name="lastPositionLogits">Whether to rewrite the graph so that a prefill computes the LM head for its last positions only (<see cref="LastPositionLogits"/>).</param>
    /// <returns>The backend, or <see langword="null"/> when it declined.</returns>
    public static OwnedBackend? TryCreate(ModelFolder folder, int context, int maxSessions, int intraOpThreads, out string? reason, bool lastPositionLogits = true)
    {
        reason = CheckConfig(folder, out var file);
        if (reason is not null)
        {
            return null;
        }

        HashSet<string> operators;
        try
        {
            operators = DecoderGraphScan.OperatorTypes(file);
        }
        catch (Exception e) when (e is InvalidDataException or IOException)
        {
            reason = $"{folder.Decoder.FileName} could not be read as an ONNX model: {e.Message}";
            return null;
        }

        if (!operators.Contains("com.microsoft:GroupQueryAttention"))
        {
            reason = $"{folder.Decoder.FileName} has no com.microsoft:GroupQueryAttention node: the owned backend drives only GroupQueryAttention share-buffer decoders.";
            return null;
        }

        OwnedBackend? backend = null;
        string logitsNote;
        if (!lastPositionLogits)
        {
            logitsNote = "a prefill computes logits at every position (the last-position rewrite is off).";
        }
        else if (RewriteForLastPositions(file, folder.Decoder.Logits, out logitsNote) is { } rewritten)
        {
            backend = Load(folder, file, rewritten, context, maxSessions, intraOpThreads, out var failure);
            if (backend is null)
            {
                logitsNote = $"a prefill computes logits at every position: the decoder rewritten for the last positions failed to load or run ({failure}).";
            }
        }

        backend ??= Load(folder, file, null, context, maxSessions, intraOpThreads, out reason);
        if (backend is null)
        {
            return null;
        }

        backend.LogitsNote = logitsNote;
        int[] specialTokens = [.. folder.AddedTokens.Where(t => t.Special).Select(t => t.Id)];
        try
        {
            backend._batchingNote = backend._batchOfOne
                ? "the decoder's batch dimension is fixed at 1: decode steps run one session at a time."
                : operators.Contains("If")
                    ? "the decoder has an If node (LongRoPE exports switch the cos/sin cache on the mask width for the whole batch): decode steps run one session at a time."
                    : backend.ProbeBatching(operators.Contains("com.microsoft:MatMulNBits"), specialTokens);
            backend.RowExactness = RowExactness.Probe(backend.CreateSession, backend.Vocab, specialTokens.Length == 0 ? 1 : specialTokens[0], context);
            backend.ResetStepCounters();
        }
        catch (Exception e) when (e is OnnxRuntimeException or ArgumentException or InvalidOperationException)
        {
            backend.Dispose();
            reason = $"a probe Run of {folder.Decoder.FileName} over owned KV memory failed: {e.Message}";
            return null;
        }

        return backend;
    }

    /// <summary>Gets what a prefill computes logits for, and why: the last positions, or every position and why not.</summary>
    public string LogitsNote { get; private set; } = "";

    /// <summary>
    /// Reads the decoder with its weights referred to in place and rewrites it for last-position logits. Returns the
    /// model's bytes, or null with the reason in <paramref name="note"/>.
    /// </summary>
    private static byte[]? RewriteForLastPositions(string file, string logits, out string note)
    {
        Onnx.ModelProto model;
        int inPlace;
        try
        {
            model = DecoderProtoReader.Read(file, out inPlace);
        }
        catch (Exception e) when (e is InvalidDataException or IOException)
        {
            note = $"a prefill computes logits at every position: {Path.GetFileName(file)} could not be read for the rewrite ({e.Message}).";
            return null;
        }

        if (LastPositionLogits.TryApply(model, logits, LastLogitPositions, out var head) is { } declined)
        {
            note = $"a prefill computes logits at every position: {declined}";
            return null;
        }

        note = $"a prefill computes logits for its last {(LastLogitPositions == 1 ? "position" : $"{LastLogitPositions} positions")} only (a Slice before the LM head '{head}'; {inPlace} initializers read in place from the model's files).";
        return LastPositionLogits.ToBytes(model);
    }

    /// <summary>
    /// Creates the session (over the file, or over <paramref name="rewritten"/> bytes whose weights are read from the
    /// file's folder), checks its signature and, for a rewritten graph, runs it once. Returns null with the reason.
    /// </summary>
    private static OwnedBackend? Load(ModelFolder folder, string file, byte[]? rewritten, int context, int maxSessions, int intraOpThreads, out string? reason)
    {
        var sessionOptions = new SessionOptions { IntraOpNumThreads = intraOpThreads, InterOpNumThreads = 1, ExecutionMode = ExecutionMode.ORT_SEQUENTIAL };
        InferenceSession session;
        try
        {
            if (rewritten is null)
            {
                session = new InferenceSession(file, sessionOptions);
            }
            else
            {
                // External data (the weights left in model.onnx, or a model.onnx.data) resolves against the model's folder.
                sessionOptions.AddSessionConfigEntry("session.model_external_initializers_file_folder_path", Path.GetDirectoryName(Path.GetFullPath(file))!);
                session = new InferenceSession(rewritten, sessionOptions);
            }
        }
        catch (OnnxRuntimeException e)
        {
            sessionOptions.Dispose();
            reason = $"ONNX Runtime could not load {folder.Decoder.FileName}: {e.Message}";
            return null;
        }

        reason = CheckSignature(session, folder, out var positionIds, out var batchOfOne);
        if (reason is not null)
        {
            session.Dispose();
            sessionOptions.Dispose();
            return null;
        }

        var backend = new OwnedBackend(sessionOptions, session, folder, context, Math.Max(3, 2 * maxSessions), positionIds, rewritten is null ? 0 : LastLogitPositions)
        {
            _batchOfOne = batchOfOne,
        };
        if (rewritten is not null)
        {
            try
            {
                // Prefills of one position, of fewer positions than are kept, and of more: each Run's logits are bound
                // as [1, rows, vocab], so a rewrite whose output has another shape fails here.
                var scratch = new float[backend.Vocab];
                backend.Prefill(0, 0, [1 % backend.Vocab], scratch);
                backend.Prefill(0, 0, [.. Enumerable.Range(1, LastLogitPositions + 4).Select(t => t % backend.Vocab)], scratch);
            }
            catch (Exception e) when (e is OnnxRuntimeException or ArgumentException)
            {
                backend.Dispose();
                reason = e.Message;
                return null;
            }
        }

        return backend;
    }

    private static string? CheckConfig(ModelFolder folder, out string file)
    {
        var names = folder.Decoder;
        file = Path.Combine(folder.Path, names.FileName);
        if (!folder.SharedBuffer)
        {
            return "genai_config.json sets search.past_present_share_buffer to false (a decoder that grows its KV by concatenation): the owned backend drives only GroupQueryAttention share-buffer decoders.";
        }

        if (names.OtherInputs.Count > 0)
        {
            return $"genai_config.json's model.decoder.inputs names {string.Join(", ", names.OtherInputs)}, which the owned backend does not feed (it feeds input_ids, attention_mask, position_ids and the KV).";
        }

        if (names.OtherOutputs.Count > 0)
        {
            return $"genai_config.json's model.decoder.outputs names {string.Join(", ", names.OtherOutputs)}, which the owned backend does not read (it reads logits and the KV).";
        }

        foreach (var provider in names.Providers)
        {
            if (!provider.Equals("cpu", StringComparison.OrdinalIgnoreCase))
            {
                return $"genai_config.json asks for the {provider} execution provider: the owned backend runs on CPU only.";
            }
        }

        foreach (var pattern in new[] { names.PastKey, names.PastValue, names.PresentKey, names.PresentValue })
        {
            if (!pattern.Contains("%d", StringComparison.Ordinal))
            {
                return $"genai_config.json's KV name '{pattern}' has no %d for the layer.";
            }
        }

        return File.Exists(file) ? null : $"the decoder file {names.FileName} is not in the model folder.";
    }

    private static string? CheckSignature(InferenceSession session, ModelFolder folder, out bool positionIds, out bool batchOfOne)
    {
        var names = folder.Decoder;
        positionIds = session.InputMetadata.ContainsKey(names.PositionIds);
        batchOfOne = false;
        var inputs = new Dictionary<string, (TensorElementType Type, int?[] Dims)>(StringComparer.Ordinal)
        {
            [names.InputIds] = (TensorElementType.Int64, [null, null]),
            [names.AttentionMask] = (TensorElementType.Int64, [null, null]),
        };
        if (positionIds)
        {
            inputs[names.PositionIds] = (TensorElementType.Int64, [null, null]);
        }

        var outputs = new Dictionary<string, (TensorElementType Type, int?[] Dims)>(StringComparer.Ordinal)
        {
            [names.Logits] = (TensorElementType.Float, [null, null, folder.VocabSize]),
        };
        for (var layer = 0; layer < folder.Layers; layer++)
        {
            int?[] kv = [null, folder.KvHeads, null, folder.HeadSize];
            inputs[DecoderNames.Layer(names.PastKey, layer)] = (TensorElementType.Float, kv);
            inputs[DecoderNames.Layer(names.PastValue, layer)] = (TensorElementType.Float, kv);
            outputs[DecoderNames.Layer(names.PresentKey, layer)] = (TensorElementType.Float, kv);
            outputs[DecoderNames.Layer(names.PresentValue, layer)] = (TensorElementType.Float, kv);
        }

        return Compare("input", session.InputMetadata, inputs, ref batchOfOne) ?? Compare("output", session.OutputMetadata, outputs, ref batchOfOne);
    }

    private static string? Compare(
        string kind,
        IReadOnlyDictionary<string, NodeMetadata> actual,
        Dictionary<string, (TensorElementType Type, int?[] Dims)> expected,
        ref bool batchOfOne)
    {
        foreach (var name in actual.Keys)
        {
            if (!expected.ContainsKey(name))
            {
                return $"the decoder has the {kind} '{name}', which the owned backend does not understand (expected: {string.Join(", ", expected.Keys.Take(6))}, ...).";
            }
        }

        foreach (var (name, (type, dims)) in expected)
        {
            if (!actual.TryGetValue(name, out var metadata))
            {
                return $"the decoder has no {kind} '{name}' (named in genai_config.json).";
            }

            if (!metadata.IsTensor || metadata.ElementDataType != type)
            {
                return $"the decoder's {kind} '{name}' is {(metadata.IsTensor ? metadata.ElementDataType.ToString() : metadata.OnnxValueType.ToString())}, not {type}.";
            }

            var shape = metadata.Dimensions;
            if (shape.Length != dims.Length)
            {
                return $"the decoder's {kind} '{name}' has rank {shape.Length}, not {dims.Length} (shape [{string.Join(", ", shape)}]).";
            }

            for (var i = 0; i < dims.Length; i++)
            {
                if (dims[i] is { } size && shape[i] != size && shape[i] >= 0)
                {
                    return $"the decoder's {kind} '{name}' has {shape[i]} at dimension {i}; genai_config.json implies {size}.";
                }
            }

            if (shape[0] == 1)
            {
                batchOfOne = true;
            }
            else if (shape[0] > 1)
            {
                return $"the decoder's {kind} '{name}' has a fixed batch of {shape[0]}.";
            }
        }

        return null;
    }

    /// <summary>
    /// Compares batched decode steps with single ones bit for bit, on three slots holding 13, 29 and 2 tokens (rows of
    /// different lengths, and a padding row when the middle one sits out). Each round starts every row with one of the
    /// tokenizer's special tokens (role markers, which position-dependent layers react to). Returns why batching is off,
    /// or null.
    /// </summary>
    private string? ProbeBatching(bool int4, int[] specialTokens)
    {
        int[] starts = specialTokens.Length == 0 ? [1] : [.. specialTokens.Take(4)];
        try
        {
            foreach (var start in starts)
            {
                if (ProbeRound(start % Vocab) is { } difference)
                {
                    return $"a batched decode step is not bit-identical to single steps on this decoder (max |logit difference| {difference:G3}{(int4 ? "; int4 MatMulNBits" : "")}): decode steps run one session at a time.";
                }
            }

            return null;
        }
        finally
        {
            ResetStepCounters();
        }
    }

    /// <summary>Zeroes the decode-step counters: the probes' steps are not the client's.</summary>
    private void ResetStepCounters()
    {
        lock (_queueLock)
        {
            _steps = _rows = _maxBatch = 0;
        }
    }

    /// <summary>One probe round; returns the largest logit difference, or null when every batched row equals its single step.</summary>
    private float? ProbeRound(int start)
    {
        // Rows of 13, 29 and 2 tokens: far enough apart that a layer reading its position from the mask's width (not from
        // the row's own length) sees another position in every row.
        int[] Row(int length, int first) => [start, .. Enumerable.Range(first, length - 1)];
        int[][] prompts = [Row(13, 2), Row(29, 20), Row(2, 60)];
        var scratch = new float[Vocab];
        for (var slot = 0; slot < prompts.Length; slot++)
        {
            Prefill(slot, 0, [.. prompts[slot].Select(t => t % Vocab)], scratch);
        }

        StepRequest Request(int slot) => new(slot, new float[Vocab]) { Past = prompts[slot].Length, Token = (11 + slot) % Vocab };
        var singles = new StepRequest[prompts.Length];
        lock (_runLock)
        {
            for (var slot = 0; slot < prompts.Length; slot++)
            {
                singles[slot] = Request(slot);
                RunGroup([singles[slot]]);
            }

            StepRequest[] all = [Request(0), Request(1), Request(2)];
            RunGroup(all);
            StepRequest[] padded = [Request(0), Request(2)];
            RunGroup(padded);
            foreach (var request in singles.Concat(all).Concat(padded))
            {
                if (request.Error is { } error)
                {
                    throw error;
                }
            }

            foreach (var request in all.Concat(padded))
            {
                var expected = singles[request.Slot].Logits;
                var difference = 0f;
                var identical = true;
                for (var i = 0; i < Vocab; i++)
                {
                    difference = Math.Max(difference, Math.Abs(expected[i] - request.Logits[i]));
                    identical &= BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(request.Logits[i]);
                }

                if (!identical)
                {
                    return difference;
                }
            }
        }

        return null;
    }
}
