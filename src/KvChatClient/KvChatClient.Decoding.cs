using System.Buffers;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat;

// KvChatClient, part 3 of 3: how a reply is decoded (the cached-session loop and the guided JSON loop).
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
    /// A reply constrained to a JSON schema: GenAI guidance works only inside its own sampler and is fixed per generator,
    /// so this runs on a temporary guided generator that prefills the whole prompt (the cached sessions are untouched;
    /// the next turn reuses them and prefills the structured reply with the new message).
    /// </summary>
    private void GenerateStructured(
        string requestId,
        int[] prompt,
        Request request,
        ChannelWriter<Event> writer,
        List<AIContent> reply,
        long started,
        CancellationToken token)
    {
        Interlocked.Increment(ref _requests);
        try
        {
            token.ThrowIfCancellationRequested();
            using var parameters = new GeneratorParams(_model);
            parameters.SetSearchOption("max_length", _contextTokens);
            var sampling = request.Sampling;
            parameters.SetSearchOption("do_sample", !sampling.IsGreedy);
            if (!sampling.IsGreedy)
            {
                parameters.SetSearchOption("temperature", sampling.Temperature);
                parameters.SetSearchOption("top_p", sampling.TopP);
                parameters.SetSearchOption("top_k", sampling.TopK);
                if (sampling.Seed is { } seed)
                {
                    parameters.SetSearchOption("random_seed", seed % (1UL << 31));
                }
            }

            parameters.SetGuidance("json_schema", request.JsonSchema!, false);
            using var generator = new Generator(_model, parameters);
            generator.AppendTokens(prompt);
            Interlocked.Add(ref _prefilledInputTokens, prompt.Length);
            _metrics.RecordPrompt(0, prompt.Length);
            Log.CacheLookup(_logger, requestId, prompt.Length, 0, prompt.Length, false, false);

            TokenizerStream stream;
            lock (_tokenizerLock)
            {
                stream = _tokenizer.CreateStream();
            }

            using var streamScope = stream;
            var pipeline = new ReplyTextPipeline(null, request.StopSequences.Count > 0 ? new StopSequenceMatcher(request.StopSequences) : null);
            var contents = new List<AIContent>();
            var text = new StringBuilder();
            var limit = Math.Min(request.MaxOutputTokens ?? int.MaxValue, _contextTokens - prompt.Length);
            var output = 0;
            var finish = ChatFinishReason.Length;
            var firstTokenMs = 0.0;
            while (output < limit && !generator.IsDone())
            {
                token.ThrowIfCancellationRequested();
                var before = generator.TokenCount();
                generator.GenerateNextToken();
                if (output == 0)
                {
                    firstTokenMs = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
                }

                if (generator.TokenCount() == before)
                {
                    finish = ChatFinishReason.Stop; // End of sequence (the grammar is complete): not appended.
                    break;
                }

                output++;
                var stopped = pipeline.Append(stream.Decode(generator.GetSequence(0)[^1]), contents);
                Emit(writer, contents, reply, text);
                if (stopped)
                {
                    finish = ChatFinishReason.Stop;
                    break;
                }
            }

            if (finish == ChatFinishReason.Length && generator.IsDone() && output < limit)
            {
                finish = ChatFinishReason.Stop;
            }

            pipeline.Complete(contents);
            Emit(writer, contents, reply, text);
            if (finish == ChatFinishReason.Length)
            {
                throw new InvalidOperationException(
                    $"The structured (JSON) reply was cut after {output} tokens, before its JSON ended: raise ChatOptions.MaxOutputTokens.");
            }

            if (!pipeline.StoppedByString)
            {
                EnsureJson(text.ToString());
            }

            Interlocked.Add(ref _outputTokens, output);
            Log.ReplyFinished(_logger, requestId, output, finish.Value, firstTokenMs);
            _metrics.RecordReply(output, firstTokenMs / 1000, Stopwatch.GetElapsedTime(started).TotalSeconds);
            writer.TryWrite(new Event(null, finish, new UsageDetails
            {
                InputTokenCount = prompt.Length,
                CachedInputTokenCount = 0,
                OutputTokenCount = output,
                TotalTokenCount = prompt.Length + output,
                AdditionalCounts = new AdditionalPropertiesDictionary<long> { [KvChatUsage.PrefilledInputTokenCount] = prompt.Length },
            }));
            writer.TryComplete();
        }
        catch (OperationCanceledException e)
        {
            writer.TryComplete(e);
        }
        catch (OnnxRuntimeGenAIException e)
        {
            writer.TryComplete(new InvalidOperationException($"GenAI failed during a structured (JSON) reply: {e.Message}", e));
        }
        catch (Exception e)
        {
            writer.TryComplete(e);
        }
        finally
        {
            ExitCall();
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

    private void Generate(
        string requestId,
        int[] prompt,
        Request request,
        SessionPool<KvSession>.Lease lease,
        ChannelWriter<Event> writer,
        List<AIContent> reply,
        long started,
        CancellationToken token)
    {
        var session = lease.Session;
        var keep = Math.Min(lease.CommonPrefixLength, prompt.Length - 1);
        var vocab = _folder.VocabSize;
        var logits = ArrayPool<float>.Shared.Rent(vocab);
        var prefilled = false;
        Interlocked.Increment(ref _requests);
        try
        {
            token.ThrowIfCancellationRequested();
            Log.CacheLookup(_logger, requestId, prompt.Length, keep, prompt.Length - keep, lease.IsHit, lease.Evicted);
            _metrics.RecordLease(lease.Evicted);
            session.Prefill(prompt, keep);
            prefilled = true;
            Interlocked.Add(ref _cachedInputTokens, keep);
            Interlocked.Add(ref _prefilledInputTokens, prompt.Length - keep);
            _metrics.RecordPrompt(keep, prompt.Length - keep);

            var sampler = new LogitSampler(request.Sampling, vocab);
            TokenizerStream stream;
            lock (_tokenizerLock)
            {
                stream = _tokenizer.CreateStream();
            }

            using var streamScope = stream;
            var pipeline = new ReplyTextPipeline(
                request.ToolNames is null ? null : new ToolCallParser(_toolFormat!, request.ToolNames),
                request.StopSequences.Count > 0 ? new StopSequenceMatcher(request.StopSequences) : null,
                _renderer.Reasoning is { } reasoning ? new ReasoningSplitter(reasoning, request.ReasoningStart) : null,
                request.ShowReasoning);
            var forced = request.ForcedTokens;
            var contents = new List<AIContent>();
            var text = new StringBuilder();
            var limit = Math.Min(request.MaxOutputTokens ?? int.MaxValue, _contextTokens - prompt.Length + 1);
            var generated = new List<int>();
            var finish = ChatFinishReason.Length;
            var firstTokenMs = 0.0;
            float[]? promptLogits = null;
            while (generated.Count < limit)
            {
                token.ThrowIfCancellationRequested();
                DecodeStepHook?.Invoke(session, generated.Count);
                session.ReadLastLogits(logits.AsSpan(0, vocab));
                if (generated.Count == 0)
                {
                    promptLogits = Trace is null ? null : logits.AsSpan(0, vocab).ToArray();
                }

                // A required tool call starts with the format's opening (forced), then the model writes the rest.
                var isForced = generated.Count < forced.Length;
                var next = isForced ? forced[generated.Count] : sampler.Next(logits.AsSpan(0, vocab));
                if (generated.Count == 0)
                {
                    firstTokenMs = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
                }

                if (!isForced && _eos.Contains(next))
                {
                    finish = ChatFinishReason.Stop;
                    break;
                }

                generated.Add(next);
                sampler.Accept(next);
                var stopped = pipeline.Append(next, stream.Decode(next), contents);
                Emit(writer, contents, reply, text);
                if (stopped)
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
                    session.Append(next);
                }
            }

            pipeline.Complete(contents);
            Emit(writer, contents, reply, text);
            if (pipeline.CallCount > 0 && finish != ChatFinishReason.Length)
            {
                finish = ChatFinishReason.ToolCalls;
            }

            _pool.Commit(lease, CollectionsMarshal.AsSpan((List<int>)session.Tokens), prompt.Length);
            Trace?.Invoke(new ReplyTrace(prompt, keep, [.. generated], [.. session.Tokens], finish, promptLogits, firstTokenMs));
            lease.Release();
            if (!pipeline.StoppedByString && pipeline.CallCount == 0)
            {
                _renderer.RememberReply(text.ToString(), CollectionsMarshal.AsSpan(generated));
            }

            Interlocked.Add(ref _outputTokens, generated.Count);
            Log.ReplyFinished(_logger, requestId, generated.Count, finish.Value, firstTokenMs);
            _metrics.RecordReply(generated.Count, firstTokenMs / 1000, Stopwatch.GetElapsedTime(started).TotalSeconds);
            var usage = new UsageDetails
            {
                InputTokenCount = prompt.Length,
                CachedInputTokenCount = keep,
                OutputTokenCount = generated.Count,
                TotalTokenCount = prompt.Length + generated.Count,
                AdditionalCounts = new AdditionalPropertiesDictionary<long>
                {
                    [KvChatUsage.PrefilledInputTokenCount] = prompt.Length - keep,
                },
            };
            writer.TryWrite(new Event(null, finish, usage));
            writer.TryComplete();
        }
        catch (OperationCanceledException e)
        {
            // Cancellation comes between native calls: the session holds exactly its recorded tokens.
            _pool.Commit(lease, CollectionsMarshal.AsSpan((List<int>)session.Tokens), prefilled ? prompt.Length : null);
            lease.Release();
            writer.TryComplete(e);
        }
        catch (Exception e)
        {
            lease.Discard();
            _metrics.RecordDiscard();
            Log.SessionDiscarded(_logger, requestId, e);
            writer.TryComplete(e is OnnxRuntimeGenAIException
                ? new InvalidOperationException($"GenAI failed during the reply; the session was discarded: {e.Message}", e)
                : e);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(logits);
            ExitCall();
        }
    }
}
