using System.Text.Json;
using Microsoft.Extensions.AI;
using Xunit;

namespace KvChat.Tests;

/// <summary>
/// Tool-call grammars per family: random walks that may only pick allowed tokens always give calls that the client's
/// own parser reads, to an offered tool, with arguments an independent validator accepts against the tool's schema.
/// </summary>
public sealed class ToolCallGrammarTests
{
    private const string WeatherSchema = """{"type":"object","properties":{"city":{"type":"string","maxLength":12},"days":{"type":"integer","minimum":1,"maximum":7}},"required":["city","days"]}""";
    private const string TimeSchema = """{"type":"object","properties":{"zone":{"type":"string","enum":["UTC","Europe/Paris"]}},"required":["zone"]}""";

    private static readonly ConstraintVocabulary Vocabulary = ConstraintTestKit.ByteLevelVocabulary();

    private static ToolSignature[] Tools =>
    [
        new("get_weather", JsonDocument.Parse(WeatherSchema).RootElement),
        new("get_time", JsonDocument.Parse(TimeSchema).RootElement),
    ];

    public static TheoryData<string, bool> Formats() => new()
    {
        { "hermes", false }, { "hermes", true }, { "phi", false }, { "phi", true }, { "llama3", false },
    };

    private static ToolCallFormat FormatOf(string name) => name switch
    {
        "hermes" => ToolCallFormat.Hermes,
        "phi" => ToolCallFormat.Phi,
        _ => ToolCallFormat.Llama3,
    };

    [Theory]
    [MemberData(nameof(Formats))]
    public void RandomWalk_Calls_ParseToOfferedTools_WithValidArguments(string formatName, bool multiple)
    {
        var format = FormatOf(formatName);
        var grammar = ToolCallGrammar.Build(format, Tools, null, multiple);
        var names = new HashSet<string>();
        for (var seed = 0; seed < 30; seed++)
        {
            var (text, _) = ConstraintTestKit.RandomWalk(grammar, Vocabulary, seed, hints: WeatherSchema + TimeSchema);
            var parser = new ToolCallParser(format, ["get_weather", "get_time"]);
            var first = parser.Append(text);
            var rest = parser.Complete();
            var calls = first.Calls.Concat(rest.Calls).ToList();
            Assert.NotEmpty(calls);
            Assert.True(multiple || calls.Count == 1, text);
            Assert.Equal("", (first.Text + rest.Text).Trim());
            foreach (var call in calls)
            {
                Assert.Null(call.Exception);
                names.Add(call.Name);
                var arguments = JsonSerializer.Serialize(call.Arguments);
                ConstraintTestKit.AssertValid(call.Name == "get_weather" ? WeatherSchema : TimeSchema, arguments);
            }
        }

        Assert.Equal(2, names.Count);
    }

    [Fact]
    public void RequiredName_OnlyThatTool_AndTheForcedOpeningFits()
    {
        var grammar = ToolCallGrammar.Build(ToolCallFormat.Hermes, Tools, "get_time", allowMultiple: false);
        var constraint = new GrammarConstraint(grammar, Vocabulary);
        Assert.True(constraint.Allows("<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"zone\": \"UTC\"}}\n</tool_call>"u8));
        Assert.False(constraint.Allows("<tool_call>\n{\"name\": \"get_w"u8));
        Assert.False(constraint.Allows("<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"zone\": \"Mars\""u8));
        Assert.False(constraint.Allows("<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"zone\":\"UTC\""u8)); // Spaced, as tojson.
        Assert.True(constraint.Allows(System.Text.Encoding.UTF8.GetBytes(ToolCallFormat.Hermes.ForcedReplyPrefix("get_time")!)));
        Assert.True(constraint.Allows(System.Text.Encoding.UTF8.GetBytes(ToolCallFormat.Hermes.ForcedReplyPrefix(null)!)));
    }

    [Fact]
    public void JsonOrCall_EitherBranch_AndNothingElse()
    {
        using var schema = JsonDocument.Parse("""{"type":"object","properties":{"answer":{"type":"boolean"}},"required":["answer"],"additionalProperties":false}""");
        var grammar = new ChoiceNode([JsonSchemaGrammar.Compile(schema.RootElement), ToolCallGrammar.Build(ToolCallFormat.Llama3, Tools, null, false)]);
        var constraint = new GrammarConstraint(grammar, Vocabulary);
        Assert.True(constraint.Allows("{\"answer\":true}"u8));
        Assert.True(constraint.Allows("{\"name\": \"get_time\", \"parameters\": {\"zone\": \"UTC\"}}"u8));
        Assert.False(constraint.Allows("{\"name\":\"x\"}"u8));
        Assert.False(constraint.Allows("Sure"u8));
    }

    [Theory]
    [InlineData("hermes")] // The test vocabulary has <tool_call> as a token; Phi's marker is checked byte by byte below.
    public void AutoMode_RandomWalk_FreeTextAndEveryOpenedCallValidates(string formatName)
    {
        var format = FormatOf(formatName);
        var grammar = ToolCallGrammar.BuildAuto(format, Tools)!;
        var sawCall = false;
        for (var seed = 0; seed < 30; seed++)
        {
            var (text, _) = ConstraintTestKit.RandomWalk(grammar, Vocabulary, seed, maxTokens: 200, hints: WeatherSchema + TimeSchema, strictUtf8: false);
            var parser = new ToolCallParser(format, ["get_weather", "get_time"]);
            var calls = parser.Append(text).Calls.Concat(parser.Complete().Calls).ToList();
            foreach (var call in calls.Where(c => c.Exception is null || !c.Exception.Message.Contains("not terminated", StringComparison.Ordinal)))
            {
                sawCall = true;
                Assert.Null(call.Exception);
                ConstraintTestKit.AssertValid(call.Name == "get_weather" ? WeatherSchema : TimeSchema, JsonSerializer.Serialize(call.Arguments));
            }
        }

        Assert.True(sawCall);
        Assert.Null(ToolCallGrammar.BuildAuto(ToolCallFormat.Llama3, Tools)); // Bare JSON calls have no marker: they stay free.
    }

    [Fact]
    public void AutoMode_TextStaysFree_AndAMarkerOpensAConstrainedCall()
    {
        var constraint = new GrammarConstraint(ToolCallGrammar.BuildAuto(ToolCallFormat.Hermes, Tools)!, Vocabulary);
        Assert.True(constraint.Allows("Any text at all: {\"x\": <b> 日本"u8));
        Assert.True(constraint.Allows("Sure.\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"zone\": \"UTC\"}}\n</tool_call> done"u8));
        Assert.False(constraint.Allows("Sure.\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"zone\": \"Mars\""u8));
        Assert.True(constraint.CanEnd);

        var phi = new GrammarConstraint(ToolCallGrammar.BuildAuto(ToolCallFormat.Phi, Tools)!, Vocabulary);
        Assert.True(phi.Allows("ok <|tool_call|>[{\"name\": \"get_time\", \"arguments\": {\"zone\": \"UTC\"}}, {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\", \"days\": 2}}]<|/tool_call|>"u8));
        Assert.False(phi.Allows("<|tool_call|>[{\"name\": \"nope"u8));
    }
}
