using System.Text;
using KvChat;
using Microsoft.Extensions.AI;
using Xunit;

namespace KvChatClient.Tests.Reasoning;

public sealed class ReasoningSplitterTests
{
    private static readonly ReasoningFormat Think = new(ReasoningFormat.ThinkOpen, ReasoningFormat.ThinkClose, ReasoningHistoryMode.ReasoningContent, null, new Dictionary<int, string>());

    private static (string Reasoning, string Answer) Run(ReasoningStart start, IEnumerable<string> chunks)
    {
        var splitter = new ReasoningSplitter(Think, start);
        var reasoning = new StringBuilder();
        var answer = new StringBuilder();
        foreach (var chunk in chunks)
        {
            var split = splitter.Append(chunk);
            reasoning.Append(split.Reasoning);
            answer.Append(split.Answer);
        }

        var last = splitter.Complete();
        return (reasoning.Append(last.Reasoning).ToString(), answer.Append(last.Answer).ToString());
    }

    /// <summary>Every way of cutting the text in one place or per character gives the same split.</summary>
    private static IEnumerable<string[]> Cuts(string text)
    {
        yield return [text];
        yield return [.. text.Select(c => c.ToString())];
        for (var i = 1; i < text.Length; i++)
        {
            yield return [text[..i], text[i..]];
        }
    }

    [Theory]
    [InlineData("<think>\nThe user greets me.\n</think>\n\nHello there.", "The user greets me.", "Hello there.")]
    [InlineData("  \n<think>a < b </thin k></think>Yes", "a < b </thin k>", "Yes")]
    [InlineData("<think>\n\n</think>\n\nNo thoughts.", "", "No thoughts.")]
    [InlineData("Plain answer with <think> inside.", "", "Plain answer with <think> inside.")]
    [InlineData("\n Plain answer.", "", "\n Plain answer.")]
    [InlineData("<thin", "", "<thin")]
    [InlineData("<think>\ncut by a limit\n", "cut by a limit", "")]
    [InlineData("<think>a</think>b<think>c</think>d", "a", "b<think>c</think>d")]
    [InlineData("<think>line 1\n\nline 2</think>\n\n  x \n", "line 1\n\nline 2", "x \n")]
    public void Append_ModelDecides_SplitsTheSameForEveryChunking(string reply, string reasoning, string answer)
    {
        foreach (var chunks in Cuts(reply))
        {
            Assert.Equal((reasoning, answer), Run(ReasoningStart.ModelDecides, chunks));
        }
    }

    [Theory]
    [InlineData("\nI reason.\n</think>\n\nThe answer.", "I reason.", "The answer.")]
    [InlineData("no close tag", "no close tag", "")]
    [InlineData("</think>Direct.", "", "Direct.")]
    public void Append_InsideReasoning_IsReasoningUntilTheClosingTag(string reply, string reasoning, string answer)
    {
        foreach (var chunks in Cuts(reply))
        {
            Assert.Equal((reasoning, answer), Run(ReasoningStart.InsideReasoning, chunks));
        }
    }

    [Fact]
    public void Append_AnswerStart_PassesEverythingOn()
        => Assert.Equal(("", "<think>x</think>y"), Run(ReasoningStart.Answer, ["<think>x", "</think>y"]));

    [Fact]
    public void Append_Reasoning_StreamsBeforeTheClosingTagArrives()
    {
        var splitter = new ReasoningSplitter(Think, ReasoningStart.ModelDecides);
        Assert.Equal(ReasoningSplit.Empty, splitter.Append("<thi"));
        Assert.True(splitter.InReasoning);
        Assert.Equal(new ReasoningSplit("Let", ""), splitter.Append("nk>\nLet"));
        Assert.Equal(new ReasoningSplit(" me", ""), splitter.Append(" me\n</"));
        Assert.Equal(new ReasoningSplit("", ""), splitter.Append("think>\n\n"));
        Assert.False(splitter.InReasoning);
        Assert.Equal(new ReasoningSplit("", "Hi"), splitter.Append("Hi"));
    }

    [Fact]
    public void TagText_SpecialTagToken_GivesItsText()
    {
        var format = new ReasoningFormat("<think>", "</think>", ReasoningHistoryMode.Verbatim, null, new Dictionary<int, string> { [7] = "<think>", [8] = "</think>" });
        var splitter = new ReasoningSplitter(format, ReasoningStart.ModelDecides);
        Assert.Equal("</think>", splitter.TagText(8));
        Assert.Null(splitter.TagText(9));
    }

    [Fact]
    public void Pipeline_ReasoningThenToolCallAndStop_EachPartGoesWhereItBelongs()
    {
        var pipeline = new ReplyTextPipeline(
            new ToolCallParser(ToolCallFormat.Hermes, ["get_weather"], () => "call_1"),
            new StopSequenceMatcher(["STOP"]),
            new ReasoningSplitter(Think, ReasoningStart.ModelDecides));
        var output = new List<AIContent>();
        var reply = "<think>\nSTOP is not a stop here; <tool_call> is not a call.\n</think>\n\nLet me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\nDone STOP ignored";
        var stopped = false;
        foreach (var c in reply)
        {
            stopped = pipeline.Append(-1, c.ToString(), output);
            if (stopped)
            {
                break;
            }
        }

        Assert.True(stopped);
        pipeline.Complete(output);
        Assert.Equal("STOP is not a stop here; <tool_call> is not a call.", string.Concat(output.OfType<TextReasoningContent>().Select(r => r.Text)));
        Assert.Equal("Let me check.Done ", string.Concat(output.OfType<TextContent>().Select(t => t.Text)));
        var call = Assert.Single(output.OfType<FunctionCallContent>());
        Assert.Equal("get_weather", call.Name);
        Assert.Null(call.Exception);
        Assert.True(pipeline.StoppedByString);
        Assert.DoesNotContain(output.OfType<TextContent>(), t => t.Text.Contains("think", StringComparison.Ordinal));
    }

    [Fact]
    public void Pipeline_ReasoningHidden_EmitsOnlyTheAnswer()
    {
        var pipeline = new ReplyTextPipeline(null, null, new ReasoningSplitter(Think, ReasoningStart.ModelDecides), showReasoning: false);
        var output = new List<AIContent>();
        pipeline.Append(-1, "<think>secret</think>Answer", output);
        pipeline.Complete(output);
        Assert.Equal("Answer", Assert.IsType<TextContent>(Assert.Single(output)).Text);
    }
}
