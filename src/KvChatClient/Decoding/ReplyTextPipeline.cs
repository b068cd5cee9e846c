using Microsoft.Extensions.AI;

namespace KvChat;

/// <summary>
/// What a reply's decoded text becomes: a reasoning model's reasoning split off as <see cref="TextReasoningContent"/>
/// (when the model reasons), tool-call markup in the answer parsed into <see cref="FunctionCallContent"/> (when tools
/// were offered), then stop sequences applied to the answer's visible text only (so they never cut a call or match
/// markup, and never end a reply while it reasons).
/// </summary>
/// <remarks>One instance serves one reply; not thread-safe.</remarks>
internal sealed class ReplyTextPipeline(ToolCallParser? parser, StopSequenceMatcher? matcher, ReasoningSplitter? reasoning = null, bool showReasoning = true)
{
    private ToolCallParser? _parser = parser;

    /// <summary>Gets whether a stop sequence ended the reply.</summary>
    public bool StoppedByString { get; private set; }

    /// <summary>Gets the tool calls parsed so far (malformed ones included).</summary>
    public int CallCount { get; private set; }

    /// <summary>Feeds a generated token and its decoded piece (a special reasoning tag decodes to nothing: its text is put back).</summary>
    /// <returns><see langword="true"/> when a stop sequence completed: the reply ends.</returns>
    public bool Append(int token, string piece, List<AIContent> output)
        => Append(reasoning?.TagText(token) ?? piece, output);

    /// <summary>Feeds a decoded piece; adds what is now safe to show to <paramref name="output"/>.</summary>
    /// <returns><see langword="true"/> when a stop sequence completed: the reply ends.</returns>
    public bool Append(string piece, List<AIContent> output)
    {
        if (StoppedByString)
        {
            return true;
        }

        if (reasoning is not null)
        {
            var split = reasoning.Append(piece);
            Reason(split.Reasoning, output);
            piece = split.Answer;
        }

        return Answer(piece, output);
    }

    private bool Answer(string piece, List<AIContent> output)
    {
        if (piece.Length == 0)
        {
            return false;
        }

        if (_parser is null)
        {
            return Visible(piece, output);
        }

        var parsed = _parser.Append(piece);
        var stopped = Visible(parsed.Text, output);
        AddCalls(parsed.Calls, output);
        if (stopped)
        {
            _parser = null; // Visible text can only stop outside a call: nothing is open.
        }

        return stopped;
    }

    /// <summary>Ends the reply (end-of-sequence or a token limit): what was held back, and a call still open.</summary>
    public void Complete(List<AIContent> output)
    {
        if (StoppedByString)
        {
            return;
        }

        if (reasoning is not null)
        {
            var split = reasoning.Complete();
            Reason(split.Reasoning, output);
            if (Answer(split.Answer, output))
            {
                return;
            }
        }

        if (_parser is not null)
        {
            var parsed = _parser.Complete();
            _parser = null;
            if (Visible(parsed.Text, output))
            {
                AddCalls(parsed.Calls, output);
                return;
            }

            AddCalls(parsed.Calls, output);
        }

        if (matcher is not null && matcher.Flush() is { Length: > 0 } rest)
        {
            output.Add(new TextContent(rest));
        }

        StoppedByString |= matcher?.IsStopped == true;
    }

    private bool Visible(string text, List<AIContent> output)
    {
        var emit = text;
        if (matcher is not null && matcher.Append(text, out emit))
        {
            StoppedByString = true;
        }

        if (emit.Length > 0)
        {
            output.Add(new TextContent(emit));
        }

        return StoppedByString;
    }

    private void Reason(string text, List<AIContent> output)
    {
        if (showReasoning && text.Length > 0)
        {
            output.Add(new TextReasoningContent(text));
        }
    }

    private void AddCalls(IReadOnlyList<FunctionCallContent> calls, List<AIContent> output)
    {
        CallCount += calls.Count;
        output.AddRange(calls);
    }
}
