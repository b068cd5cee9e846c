using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntimeGenAI;
using OrtException = Microsoft.ML.OnnxRuntime.OnnxRuntimeException;

namespace KvChat;

// KvChatClient, part 3 of 3: how a reply is decoded (one loop over a token source: a cached session or a guided generator).
public sealed partial class KvChatClient
{
    private static void Emit(ChannelWriter<Event> writer, List<AIContent> contents, List<AIContent> reply, StringBuilder text)
    {
        if (contents.Count == 0)
        {
            return;
        }

        foreach (var content in contents)
        {
            if (content is TextContent t)
            {
                text.Append(t.Text);
            }
        }

        reply.AddRange(contents);
        writer.TryWrite(new Event([.. contents], null, null));
        contents.Clear();
    }

    /// <summary>A reply's contents for history: adjacent text (and adjacent reasoning) merged, calls kept in order.</summary>
    private static List<AIContent> MergeText(List<AIContent> contents)
    {
        var merged = new List<AIContent>();
        var text = new StringBuilder();
        var reasoning = new StringBuilder();
        void Flush()
        {
            if (reasoning.Length > 0)
            {
                merged.Add(new TextReasoningContent(reasoning.ToString()));
                reasoning.Clear();
            }

            if (text.Length > 0)
            {
                merged.Add(new TextContent(text.ToString()));
                text.Clear();
            }
        }

        foreach (var content in contents)
        {
            switch (content)
            {
                case TextContent t:
                    if (reasoning.Length > 0)
                    {
                        Flush();
                    }

                    text.Append(t.Text);
                    break;
                case TextReasoningContent r:
                    if (text.Length > 0)
                    {
                        Flush();
                    }

                    reasoning.Append(r.Text);
                    break;
                default:
                    Flush();
                    merged.Add(content);
                    break;
            }
        }

        Flush();
        if (!merged.OfType<TextContent>().Any() && !merged.OfType<FunctionCallContent>().Any())
        {
            merged.Add(new TextContent(string.Empty));
        }

        return merged;
    }

    /// <summary>
    /// Decodes one reply: the one loop every request runs, whatever <paramref name="source"/> computes the logits and
    /// picks the tokens. It streams text and tool calls to <paramref name="writer"/>, applies the token limit, stop
    /// strings and the structured-output constraint, and ends with exactly one usage event.
    /// </summary>
    /// <remarks>
    /// Runs on a thread-pool thread. The caller entered the call (<see cref="EnterCall"/>) and handed the in-flight count
    /// to this method: it leaves the call when the reply is over, even when the reader is gone, so an abandoned stream
    /// never keeps <see cref="Dispose"/> waiting. <paramref name="writer"/> is completed in every outcome, and
    /// <paramref name="source"/> returns its session in every outcome: committed on success or cancellation (cancellation
    /// comes between native calls, so the session is exact), discarded only when decoding itself failed. Logging and
    /// metrics never throw (<see cref="ContainedLogger"/>, <see cref="KvChatMetrics"/>).
    /// </remarks>
    private void Decode(
        string requestId,
        Request request,
        TokenSource source,
        ChannelWriter<Event> writer,
        List<AIContent> reply,
        long started,
        CancellationToken token)
    {
        var prompt = source.Prompt;
        Exception? error = null;
        Interlocked.Increment(ref _requests);
        try
        {
            token.ThrowIfCancellationRequested();
            var cached = source.CachedTokens;
            Log.CacheLookup(_logger, requestId, prompt.Length, cached, prompt.Length - cached, source.IsHit, source.Evicted);
            _metrics.RecordLease(source.Evicted);
            source.Prefill();
            RecordPrompt(cached, prompt.Length - cached);

            TokenizerStream stream;
            lock (_tokenizerLock)
            {
                stream = _tokenizer.CreateStream();
            }

            using var streamScope = stream;
            var pipeline = new ReplyTextPipeline(
                request.ToolNames is null ? null : new ToolCallParser(_toolFormat!, request.ToolNames),
                request.StopSequences.Count > 0 ? new StopSequenceMatcher(request.StopSequences) : null,
                _renderer.Reasoning is { } reasoning && request.JsonSchema is null ? new ReasoningSplitter(reasoning, request.ReasoningStart) : null,
                request.ShowReasoning);
            var constraint = request.Constraint?.Invoke();
            var forced = request.ForcedTokens;
            var contents = new List<AIContent>();
            var text = new StringBuilder();
            var limit = Math.Min(request.MaxOutputTokens ?? int.MaxValue, source.MaxReplyTokens);
            var generated = new List<int>();
            var finish = ChatFinishReason.Length;
            var firstTokenMs = 0.0;
            while (generated.Count < limit)
            {
                token.ThrowIfCancellationRequested();
                var logits = source.ReadLogits(generated.Count);

                // A required tool call starts with the format's opening (forced), then the model writes the rest.
                var isForced = generated.Count < forced.Length;
                int next;
                if (isForced)
                {
                    next = forced[generated.Count];
                }
                else
                {
                    if (constraint is not null)
                    {
                        Constrain(constraint, logits);
                    }

                    next = source.Choose(logits);
                }

                if (generated.Count == 0)
                {
                    firstTokenMs = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
                }

                if (!isForced && (next == TokenSource.EndOfSequence || _eos.Contains(next)))
                {
                    finish = ChatFinishReason.Stop; // End of sequence: never appended, never in the KV cache.
                    break;
                }

                generated.Add(next);
                source.Accept(next);
                constraint?.Accept(next);
                var stopped = pipeline.Append(next, stream.Decode(next), contents);
                Emit(writer, contents, reply, text);
                if (stopped || constraint?.IsComplete == true)
                {
                    finish = ChatFinishReason.Stop;
                    break;
                }

                if (!request.AllowMultipleToolCalls && pipeline.CallCount > 0)
                {
                    finish = ChatFinishReason.ToolCalls;
                    break;
                }

                if (generated.Count < limit)
                {
                    source.Append(next);
                }
            }

            pipeline.Complete(contents);
            Emit(writer, contents, reply, text);
            if (pipeline.CallCount > 0 && finish != ChatFinishReason.Length)
            {
                finish = ChatFinishReason.ToolCalls;
            }

            source.Commit();
            if (source.HoldsReply)
            {
                Trace?.Invoke(new ReplyTrace(prompt, cached, [.. generated], [.. source.SessionTokens], finish, source.PromptLogits, firstTokenMs));
            }

            source.Release();

            // From here on the session is back in the pool: a failure below is reported, never a reason to discard.
            if ((request.StructuredReply || request.JsonSchema is not null) && pipeline.CallCount == 0)
            {
                EnsureStructured(finish, generated.Count, pipeline, text);
            }

            if (source.HoldsReply && !pipeline.StoppedByString && pipeline.CallCount == 0)
            {
                _renderer.RememberReply(text.ToString(), CollectionsMarshal.AsSpan(generated));
            }

            RecordReply(requestId, generated.Count, finish, firstTokenMs, started);
            writer.TryWrite(new Event(null, finish, Usage(prompt.Length, cached, generated.Count)));
        }
        catch (Exception e)
        {
            error = Fail(requestId, source, e);
        }
        finally
        {
            try
            {
                source.Dispose();
            }
            finally
            {
                writer.TryComplete(error);
                ExitCall();
            }
        }
    }

    /// <summary>Masks what <paramref name="constraint"/> forbids, and end of sequence until the value may end.</summary>
    private void Constrain(ITokenConstraint constraint, Span<float> logits)
    {
        if (logits.IsEmpty)
        {
            throw new InvalidOperationException("A token constraint needs a token source that exposes logits.");
        }

        constraint.Mask(logits);
        if (!constraint.CanEnd)
        {
            foreach (var id in _eos)
            {
                if ((uint)id < (uint)logits.Length)
                {
                    logits[id] = float.NegativeInfinity;
                }
            }
        }
    }

    /// <summary>
    /// What a failed reply reports. Cancellation keeps the session (it is exact between native calls); any other failure
    /// while the session is held discards it, since its state is unknown.
    /// </summary>
    private Exception Fail(string requestId, TokenSource source, Exception error)
    {
        if (error is OperationCanceledException)
        {
            try
            {
                source.Cancel();
                return error;
            }
            catch (Exception e)
            {
                error = e;
            }
        }

        var discarded = source.Discard();
        if (discarded)
        {
            _metrics.RecordDiscard();
            Log.SessionDiscarded(_logger, requestId, error);
        }

        return error switch
        {
            OnnxRuntimeGenAIException => new InvalidOperationException(
                $"GenAI failed during {source.ReplyKind}{(discarded ? "; the session was discarded" : "")}: {error.Message}", error),
            OrtException => new InvalidOperationException(
                $"ONNX Runtime failed during {source.ReplyKind}{(discarded ? "; the session was discarded" : "")}: {error.Message}", error),
            _ => error,
        };
    }

    /// <summary>Throws when a structured (JSON) reply is cut or is not JSON.</summary>
    private static void EnsureStructured(ChatFinishReason finish, int outputTokens, ReplyTextPipeline pipeline, StringBuilder text)
    {
        if (finish == ChatFinishReason.Length)
        {
            throw new InvalidOperationException(
                $"The structured (JSON) reply was cut after {outputTokens} tokens, before its JSON ended: raise ChatOptions.MaxOutputTokens.");
        }

        if (!pipeline.StoppedByString)
        {
            EnsureJson(text.ToString());
        }
    }

    private static void EnsureJson(string text)
    {
        try
        {
            using var document = JsonDocument.Parse(text);
        }
        catch (JsonException e)
        {
            throw new InvalidOperationException(
                $"The model's structured reply is not valid JSON ({e.Message}): {(text.Length > 200 ? text[..200] + "..." : text)}", e);
        }
    }

    /// <summary>Counts a prompt's cached and prefilled tokens (client statistics and metrics): the one place for both.</summary>
    private void RecordPrompt(int cachedTokens, int prefilledTokens)
    {
        Interlocked.Add(ref _cachedInputTokens, cachedTokens);
        Interlocked.Add(ref _prefilledInputTokens, prefilledTokens);
        _metrics.RecordPrompt(cachedTokens, prefilledTokens);
    }

    /// <summary>Counts a finished reply's tokens (client statistics, log, metrics): the one place for all three.</summary>
    private void RecordReply(string requestId, int outputTokens, ChatFinishReason finish, double firstTokenMs, long started)
    {
        Interlocked.Add(ref _outputTokens, outputTokens);
        Log.ReplyFinished(_logger, requestId, outputTokens, finish.Value, firstTokenMs);
        _metrics.RecordReply(outputTokens, firstTokenMs / 1000, Stopwatch.GetElapsedTime(started).TotalSeconds);
    }

    private static UsageDetails Usage(int promptTokens, int cachedTokens, int outputTokens) => new()
    {
        InputTokenCount = promptTokens,
        CachedInputTokenCount = cachedTokens,
        OutputTokenCount = outputTokens,
        TotalTokenCount = promptTokens + outputTokens,
        AdditionalCounts = new AdditionalPropertiesDictionary<long>
        {
            [KvChatUsage.PrefilledInputTokenCount] = promptTokens - cachedTokens,
        },
    };
}
