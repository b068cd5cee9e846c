using KvChat;
using Xunit;

namespace KvChatClient.Tests.Reasoning;

public sealed class ReasoningFormatTests
{
    private static readonly TokenizerAddedToken[] NoTokens = [];

    [Fact]
    public void Detect_Qwen3Template_ReadsReasoningContentWithASwitch()
    {
        var format = ReasoningFormat.Detect(ReasoningTemplates.Qwen3, NoTokens);
        Assert.NotNull(format);
        Assert.Equal(ReasoningHistoryMode.ReasoningContent, format.History);
        Assert.Equal("enable_thinking", format.SwitchVariable);
    }

    [Fact]
    public void Detect_R1DistillTemplate_StripsFromContentWithoutASwitch()
    {
        var format = ReasoningFormat.Detect(ReasoningTemplates.R1Distill, NoTokens);
        Assert.NotNull(format);
        Assert.Equal(ReasoningHistoryMode.StripFromContent, format.History);
        Assert.Null(format.SwitchVariable);
    }

    [Fact]
    public void Detect_TagsOnlyInAddedTokens_RendersVerbatimAndMapsSpecialTags()
    {
        var format = ReasoningFormat.Detect("{{ messages[0].content }}", [new(90, "<think>", true), new(91, "</think>", true), new(92, "<|end|>", true)]);
        Assert.NotNull(format);
        Assert.Equal(ReasoningHistoryMode.Verbatim, format.History);
        Assert.Equal(2, format.TagTokens.Count);
        Assert.Equal("</think>", format.TagTokens[91]);
    }

    [Fact]
    public void Detect_TagsOnlyInSystemProse_RendersVerbatim()
    {
        // Phi-4-mini-reasoning's shape: the default system prompt describes the tags; the template never splits on them.
        const string template = "{{ '<|system|>Answer as <think> {Thought} </think> {Solution}.<|end|>' }}{% for m in messages %}{{ '<|' + m.role + '|>' + m.content + '<|end|>' }}{% endfor %}{{ '<|assistant|>' }}";
        var format = ReasoningFormat.Detect(template, NoTokens);
        Assert.NotNull(format);
        Assert.Equal(ReasoningHistoryMode.Verbatim, format.History);
        Assert.Equal(ReasoningStart.ModelDecides, format.StartOf("<|user|>Hi<|end|><|assistant|>"));
    }

    [Theory]
    [InlineData("{{ '<|im_start|>' }}")]
    [InlineData("{{ '<think>' }} only the opening")]
    [InlineData(null)]
    public void Detect_NoTagPair_IsNull(string? template) => Assert.Null(ReasoningFormat.Detect(template, NoTokens));

    [Theory]
    [InlineData("<|im_start|>assistant\n<think>\n", "InsideReasoning")]
    [InlineData("<|im_start|>assistant\n<think>\n\n</think>\n\n", "Answer")]
    [InlineData("<|im_start|>assistant\n", "ModelDecides")]
    public void StartOf_PromptTail_SaysWhereTheReplyStarts(string prompt, string expected)
        => Assert.Equal(expected, ReasoningFormat.Detect(ReasoningTemplates.Qwen3, NoTokens)!.StartOf(prompt).ToString());

    [Theory]
    [InlineData("<think>\nR\n</think>\n\nA", "R", "A")]
    [InlineData("pre<think>\n\nR\n\n</think>\n\nA\n", "R", "A\n")]
    [InlineData("R without opening</think>A", "R without opening", "A")]
    [InlineData("<think>a</think>b</think>\nc", "a", "c")]
    [InlineData("no tags", null, "no tags")]
    public void SplitInline_AsQwen3TemplateSplits(string text, string? reasoning, string answer)
    {
        var format = ReasoningFormat.Detect(ReasoningTemplates.Qwen3, NoTokens)!;
        Assert.Equal(answer, format.SplitInline(text, out var r));
        Assert.Equal(reasoning, r);
    }

    [Fact]
    public void Prepare_EachMode_RendersHistoryAsItsTemplateIntends()
    {
        var qwen = ReasoningFormat.Detect(ReasoningTemplates.Qwen3, NoTokens)!;
        var r1 = ReasoningFormat.Detect(ReasoningTemplates.R1Distill, NoTokens)!;

        string? reasoning = null;
        Assert.Equal("A", ReasoningHistory.Prepare(qwen, "<think>\nR\n</think>\n\nA", ref reasoning));
        Assert.Equal("R", reasoning);

        reasoning = "given";
        Assert.Equal("<think>x</think>A", ReasoningHistory.Prepare(qwen, "<think>x</think>A", ref reasoning));
        Assert.Equal("given", reasoning);

        reasoning = "given";
        Assert.Equal("\n\nA", ReasoningHistory.Prepare(r1, "<think>x</think>\n\nA", ref reasoning));
        Assert.Null(reasoning);

        reasoning = "given";
        Assert.Equal("<think>x</think>A", ReasoningHistory.Prepare(null, "<think>x</think>A", ref reasoning));
        Assert.Null(reasoning);
    }
}
