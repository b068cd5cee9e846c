using System.Globalization;
using System.Text;
using System.Text.Json;
using KvChat;
using Microsoft.Extensions.AI;
using Xunit;

namespace KvChatClient.Tests.Tools;

public sealed class ToolCallParserTests
{
    private static readonly string[] Tools = ["get_weather", "get_time", "plan_trip"];

    /// <summary>What a parse produced: the shown text, the calls, and every intermediate text piece.</summary>
    private sealed record Parsed(string Text, List<FunctionCallContent> Calls, List<string> Pieces);

    private static Parsed Run(ToolCallFormat format, IEnumerable<string> chunks, IEnumerable<string>? tools = null)
    {
        var next = 0;
        var parser = new ToolCallParser(format, tools, () => "call_" + (++next).ToString(CultureInfo.InvariantCulture));
        var text = new StringBuilder();
        var calls = new List<FunctionCallContent>();
        var pieces = new List<string>();
        void Take(ToolCallParseResult r)
        {
            text.Append(r.Text);
            if (r.Text.Length > 0)
            {
                pieces.Add(r.Text);
            }

            calls.AddRange(r.Calls);
        }

        foreach (var chunk in chunks)
        {
            Take(parser.Append(chunk));
        }

        Take(parser.Complete());
        Assert.Equal(calls.Count, parser.CallCount);
        return new Parsed(text.ToString(), calls, pieces);
    }

    private static Parsed Run(ToolCallFormat format, string reply, IEnumerable<string>? tools = null) => Run(format, [reply], tools ?? Tools);

    private static string Json(object? value) => value is JsonElement e ? e.GetRawText() : JsonSerializer.Serialize(value);

    private static string Describe(FunctionCallContent c)
    {
        var arguments = c.Arguments is null
            ? "null"
            : string.Join(",", c.Arguments.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => $"{p.Key}={Json(p.Value)}"));
        return $"{c.CallId}|{c.Name}|{arguments}|{c.Exception?.Message}|{c.RawRepresentation}";
    }

    private static FunctionCallContent Valid(FunctionCallContent call, string name)
    {
        Assert.Null(call.Exception);
        Assert.Equal(name, call.Name);
        Assert.NotNull(call.Arguments);
        return call;
    }

    private static FunctionCallContent Malformed(FunctionCallContent call, string name, params string[] messageParts)
    {
        Assert.Equal(name, call.Name);
        var exception = Assert.IsType<InvalidOperationException>(call.Exception);
        foreach (var part in messageParts)
        {
            Assert.Contains(part, exception.Message, StringComparison.Ordinal);
        }

        Assert.IsType<string>(call.RawRepresentation);
        Assert.Contains((string)call.RawRepresentation!, exception.Message, StringComparison.Ordinal);
        return call;
    }

    private static string Arg(FunctionCallContent call, string key) => Json(call.Arguments![key]);

    // ----- Hermes / Qwen2.5 -----

    [Fact]
    public void Hermes_TextThenCall_TextShownAndCallParsed()
    {
        var r = Run(ToolCallFormat.Hermes, "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>");

        Assert.Equal("Let me check.", r.Text);
        var call = Valid(Assert.Single(r.Calls), "get_weather");
        Assert.Equal("call_1", call.CallId);
        Assert.Equal("\"Paris\"", Arg(call, "city"));
        Assert.Equal(JsonValueKind.String, ((JsonElement)call.Arguments!["city"]!).ValueKind);
        Assert.Equal("{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}", call.RawRepresentation);
    }

    [Fact]
    public void Hermes_SeveralCallsWithTextBetweenAndAfter_AllInOrder()
    {
        var reply = "First.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n"
            + "<tool_call>{\"name\":\"get_time\",\"arguments\":{\"zone\":\"CET\"}}</tool_call>\nThen\nmore.\n"
            + "<tool_call>\n\n  {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}  \n\n</tool_call>\n\nDone.\n";

        var r = Run(ToolCallFormat.Hermes, reply);

        Assert.Equal("First.Then\nmore.Done.\n", r.Text);
        Assert.Equal(["get_weather", "get_time", "get_weather"], r.Calls.Select(c => Valid(c, c.Name).Name));
        Assert.Equal("\"Oslo\"", Arg(r.Calls[2], "city"));
        Assert.Equal(3, r.Calls.Select(c => c.CallId).Distinct().Count());
    }

    [Fact]
    public void Hermes_TwoObjectsInOneBlock_TwoCalls()
    {
        var r = Run(ToolCallFormat.Hermes, "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}\n</tool_call>");

        Assert.Equal("", r.Text);
        Assert.Equal(["get_time", "get_weather"], r.Calls.Select(c => Valid(c, c.Name).Name));
    }

    [Fact]
    public void Hermes_CallCompletes_ReturnedByTheAppendThatClosesIt()
    {
        var parser = new ToolCallParser(ToolCallFormat.Hermes, Tools);

        Assert.Empty(parser.Append("<tool_call>\n{\"name\": \"get_time\", ").Calls);
        Assert.True(parser.IsInsideCall);
        Assert.Empty(parser.Append("\"arguments\": {}}\n</tool_").Calls);
        var step = parser.Append("call>\nAfter");

        Valid(Assert.Single(step.Calls), "get_time");
        Assert.False(parser.IsInsideCall);
        Assert.Equal("After", step.Text);
        Assert.Equal(1, parser.CallCount);
        Assert.Equal(ToolCallParseResult.Empty, parser.Complete());
    }

    [Fact]
    public void Hermes_PartialMarker_HeldUntilDecided()
    {
        var parser = new ToolCallParser(ToolCallFormat.Hermes, Tools);

        Assert.Equal("Hello", parser.Append("Hello <tool").Text);
        Assert.Equal(" <toolbox> ok", parser.Append("box> ok").Text);
        Assert.Equal("", parser.Append(" <").Text);
        var end = parser.Complete();
        Assert.Equal(" <", end.Text);
        Assert.Empty(end.Calls);
    }

    // ----- Phi-4-mini -----

    [Fact]
    public void Phi_ArrayOfCalls_EveryCallParsed()
    {
        var r = Run(ToolCallFormat.Phi, "Checking both.<|tool_call|>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}, {\"name\": \"get_time\", \"arguments\": {\"zone\": \"UTC\"}}]<|/tool_call|>");

        Assert.Equal("Checking both.", r.Text);
        Assert.Equal(2, r.Calls.Count);
        Assert.Equal("\"Paris\"", Arg(Valid(r.Calls[0], "get_weather"), "city"));
        Assert.Equal("\"UTC\"", Arg(Valid(r.Calls[1], "get_time"), "zone"));
        Assert.Equal("{\"name\": \"get_time\", \"arguments\": {\"zone\": \"UTC\"}}", r.Calls[1].RawRepresentation);
    }

    [Fact]
    public void Phi_SingleObjectWithoutArray_Accepted()
    {
        var r = Run(ToolCallFormat.Phi, "<|tool_call|>{\"name\": \"get_time\", \"arguments\": {}}<|/tool_call|>");

        Valid(Assert.Single(r.Calls), "get_time");
    }

    [Fact]
    public void Phi_HermesMarkup_IsJustText()
    {
        const string Reply = "<tool_call>{\"name\": \"get_time\"}</tool_call>";

        var r = Run(ToolCallFormat.Phi, Reply);

        Assert.Equal(Reply, r.Text);
        Assert.Empty(r.Calls);
    }

    // ----- Llama 3 -----

    [Theory]
    [InlineData("{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}")]
    [InlineData("{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}")]
    [InlineData("\n\n  {\"name\":\"get_weather\",\"parameters\":{\"city\":\"Paris\"}}\n")]
    [InlineData("<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}")]
    [InlineData("[{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}]")]
    [InlineData("{ \"name\" : \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}")]
    public void Llama3_WholeReplyCall_Parsed(string reply)
    {
        var r = Run(ToolCallFormat.Llama3, reply);

        Assert.Equal("", r.Text);
        Assert.Equal("\"Paris\"", Arg(Valid(Assert.Single(r.Calls), "get_weather"), "city"));
    }

    [Fact]
    public void Llama3_SeveralCallsSeparated_AllParsed()
    {
        var r = Run(ToolCallFormat.Llama3, "{\"name\": \"get_time\", \"parameters\": {}}; {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}\n{\"name\": \"get_time\", \"parameters\": {\"zone\": \"UTC\"}}");

        Assert.Equal(["get_time", "get_weather", "get_time"], r.Calls.Select(c => Valid(c, c.Name).Name));
    }

    [Fact]
    public void Llama3_CallThenText_TextKeptAfterTheCall()
    {
        var r = Run(ToolCallFormat.Llama3, "{\"name\": \"get_time\", \"parameters\": {}}\n\nI asked for the time.");

        Valid(Assert.Single(r.Calls), "get_time");
        Assert.Equal("I asked for the time.", r.Text);
    }

    [Theory]
    [InlineData("{\"name\": \"Alice\", \"age\": 30}")]
    [InlineData("{\"city\": \"Paris\"}")]
    [InlineData("Sure! {\"name\": \"get_time\", \"parameters\": {}}")]
    [InlineData("  {\"nam")]
    [InlineData("[1, 2, 3] are numbers")]
    [InlineData("[]")]
    [InlineData("   \n ")]
    [InlineData("")]
    public void Llama3_ReplyThatIsNotACall_IsTextExactly(string reply)
    {
        var r = Run(ToolCallFormat.Llama3, reply);

        Assert.Empty(r.Calls);
        Assert.Equal(reply, r.Text);
    }

    [Fact]
    public void Llama3_TextThenPythonTag_TextAndCall()
    {
        var r = Run(ToolCallFormat.Llama3, "Searching. <|python_tag|>{\"name\": \"get_time\", \"parameters\": {}}");

        Assert.Equal("Searching.", r.Text);
        Valid(Assert.Single(r.Calls), "get_time");
    }

    [Fact]
    public void Llama3_LeadDecided_TextBeforeItIsHeldThenWholeReplyHeld()
    {
        var parser = new ToolCallParser(ToolCallFormat.Llama3, Tools);

        Assert.Equal("", parser.Append("  {").Text);
        Assert.Equal("", parser.Append("\"name\": \"get_time\", ").Text);
        Assert.True(parser.IsInsideCall);
        Assert.Equal("", parser.Append("\"parameters\": {}}").Text);
        var end = parser.Complete();
        Valid(Assert.Single(end.Calls), "get_time");
        Assert.Equal("", end.Text);
    }

    // ----- Arguments -----

    [Fact]
    public void Arguments_NestedArraysUnicodeNumbersAndNulls_KeptAsJsonElements()
    {
        const string Arguments = "{\"stops\": [{\"city\": \"Zürich\", \"days\": 2}, {\"city\": \"東京\", \"days\": 3.5}], "
            + "\"note\": \"👨‍👩‍👧 caf\\u00e9\\n\\\"q\\\"\", \"big\": 12345678901234567890, \"flags\": {\"a\": true, \"b\": null}, \"none\": null, \"list\": [[1], [], [\"x\"]]}";

        var r = Run(ToolCallFormat.Hermes, $"<tool_call>{{\"name\": \"plan_trip\", \"arguments\": {Arguments}}}</tool_call>");

        var call = Valid(Assert.Single(r.Calls), "plan_trip");
        var stops = (JsonElement)call.Arguments!["stops"]!;
        Assert.Equal(JsonValueKind.Array, stops.ValueKind);
        Assert.Equal("東京", stops[1].GetProperty("city").GetString());
        Assert.Equal(3.5, stops[1].GetProperty("days").GetDouble());
        Assert.Equal("👨‍👩‍👧 café\n\"q\"", ((JsonElement)call.Arguments["note"]!).GetString());
        Assert.Equal("12345678901234567890", Arg(call, "big"));
        Assert.Equal("{\"a\": true, \"b\": null}", Arg(call, "flags"));
        Assert.Null(call.Arguments["none"]);
        Assert.Equal("[[1], [], [\"x\"]]", Arg(call, "list"));
        Assert.Equal(6, call.Arguments.Count);
    }

    [Theory]
    [InlineData("{\"name\": \"get_time\"}")]
    [InlineData("{\"name\": \"get_time\", \"arguments\": null}")]
    [InlineData("{\"name\": \"get_time\", \"arguments\": {}}")]
    [InlineData("{\"name\": \"get_time\", \"arguments\": \"{}\"}")]
    public void Arguments_MissingNullOrEmpty_EmptyDictionary(string json)
    {
        var r = Run(ToolCallFormat.Hermes, $"<tool_call>{json}</tool_call>");

        Assert.Empty(Valid(Assert.Single(r.Calls), "get_time").Arguments!);
    }

    [Fact]
    public void Arguments_StringHoldingAnObject_Parsed()
    {
        var r = Run(ToolCallFormat.Hermes, "<tool_call>{\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Paris\\\"}\"}</tool_call>");

        Assert.Equal("\"Paris\"", Arg(Valid(Assert.Single(r.Calls), "get_weather"), "city"));
    }

    [Fact]
    public void OpenAiFunctionShape_Accepted()
    {
        var r = Run(ToolCallFormat.Hermes, "<tool_call>{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}}</tool_call>");

        Assert.Equal("\"Paris\"", Arg(Valid(Assert.Single(r.Calls), "get_weather"), "city"));
    }

    [Fact]
    public void ToolNamesNull_AnyNameAccepted()
    {
        var r = Run(ToolCallFormat.Hermes, ["<tool_call>{\"name\": \"anything\", \"arguments\": {}}</tool_call>"], tools: null);

        Valid(Assert.Single(r.Calls), "anything");
    }

    // ----- Malformed output -----

    [Fact]
    public void Malformed_InvalidJson_CallWithExceptionNameHintAndRawText()
    {
        const string Reply = "Before.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": Paris}}\n</tool_call>\nAfter.";

        var r = Run(ToolCallFormat.Hermes, Reply);

        Assert.Equal("Before.After.", r.Text);
        var call = Malformed(Assert.Single(r.Calls), "get_weather", "not valid JSON");
        Assert.Null(call.Arguments);
        Assert.Equal("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": Paris}}\n</tool_call>", call.RawRepresentation);
        Assert.IsType<JsonException>(call.Exception!.InnerException, exactMatch: false);
    }

    [Theory]
    [InlineData("{\"arguments\": {\"city\": \"Paris\"}}", "", "no \"name\"")]
    [InlineData("{\"name\": 42, \"arguments\": {}}", "", "\"name\" is a JSON number")]
    [InlineData("{\"name\": \" \", \"arguments\": {}}", " ", "\"name\" is empty")]
    [InlineData("{\"name\": \"get_weather\", \"arguments\": [\"Paris\"]}", "get_weather", "are not a JSON object", "is a JSON array")]
    [InlineData("{\"name\": \"get_weather\", \"arguments\": 7}", "get_weather", "is a JSON number")]
    [InlineData("{\"name\": \"get_weather\", \"arguments\": \"Paris\"}", "get_weather", "string that is not JSON")]
    [InlineData("{\"name\": \"get_weather\", \"arguments\": \"[1]\"}", "get_weather", "string holding a JSON array")]
    [InlineData("\"get_weather\"", "", "is a JSON string, not an object")]
    [InlineData("", "", "block is empty")]
    [InlineData("  \n ", "", "block is empty")]
    [InlineData("[]", "", "list is empty")]
    [InlineData("[{\"name\": \"get_time\"}, 5]", "get_time|", "Item 1 of the tool call list is a JSON number")]
    public void Malformed_BadCallShape_CallWithException(string body, string names, params string[] messageParts)
    {
        var r = Run(ToolCallFormat.Hermes, $"x<tool_call>{body}</tool_call>y");

        Assert.Equal("xy", r.Text);
        var expected = names.Split('|');
        Assert.Equal(expected.Length, r.Calls.Count);
        var bad = r.Calls[^1];
        Malformed(bad, expected[^1], messageParts);
        Assert.Null(bad.Arguments);
    }

    [Fact]
    public void Malformed_UnknownTool_ExceptionListsTheOfferedToolsAndArgumentsKept()
    {
        var r = Run(ToolCallFormat.Hermes, "<tool_call>{\"name\": \"delete_everything\", \"arguments\": {\"now\": true}}</tool_call>");

        var call = Malformed(Assert.Single(r.Calls), "delete_everything", "'delete_everything'", "not an offered tool", "get_time, get_weather, plan_trip");
        Assert.Equal("true", Arg(call, "now"));
    }

    [Fact]
    public void Malformed_UnknownToolWhenNoneOffered_SaysSo()
    {
        var r = Run(ToolCallFormat.Hermes, ["<tool_call>{\"name\": \"x\"}</tool_call>"], tools: []);

        Malformed(Assert.Single(r.Calls), "x", "none were offered");
    }

    [Theory]
    [InlineData("hermes", "Text <tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Pa", "</tool_call>")]
    [InlineData("hermes", "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n", "</tool_call>")]
    [InlineData("phi", "<|tool_call|>[{\"name\": \"get_weather\", \"arguments\": {}}", "<|/tool_call|>")]
    public void Malformed_UnterminatedAtEnd_CallWithException(string format, string reply, string close)
    {
        var r = Run(format == "phi" ? ToolCallFormat.Phi : ToolCallFormat.Hermes, reply);

        var call = Malformed(Assert.Single(r.Calls), "get_weather", "not terminated", $"'{close}'");
        Assert.EndsWith((string)call.RawRepresentation!, reply, StringComparison.Ordinal);
        Assert.Equal(reply.StartsWith("Text ", StringComparison.Ordinal) ? "Text" : "", r.Text);
    }

    [Fact]
    public void Malformed_ValidCallThenGarbageInBlock_CallAndMalformedRest()
    {
        var r = Run(ToolCallFormat.Hermes, "<tool_call>{\"name\": \"get_time\"} and then some words</tool_call>");

        Assert.Equal(2, r.Calls.Count);
        Valid(r.Calls[0], "get_time");
        Malformed(r.Calls[1], "", "not valid JSON after its first 1 value(s)");
    }

    [Theory]
    [InlineData("{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Par", "get_weather", "not valid JSON")]
    [InlineData("<|python_tag|>brave_search.call(query=\"weather\")", "", "not valid JSON")]
    [InlineData("<|python_tag|>", "", "block is empty")]
    [InlineData("{\"name\": \"get_weather\", \"parameters\": {}} {\"name\": \"get_ti", "get_ti|", "not valid JSON after")]
    public void Malformed_Llama3_CallWithException(string reply, string names, string messagePart)
    {
        var r = Run(ToolCallFormat.Llama3, reply);

        Assert.Equal("", r.Text);
        var expected = names.Split('|');
        Assert.Equal(expected.Length, r.Calls.Count);
        Malformed(r.Calls[^1], names.Contains('|', StringComparison.Ordinal) ? "" : expected[0], messagePart);
    }

    [Fact]
    public void Malformed_LongRawText_QuotedInPartInTheMessageAndWhollyInRawRepresentation()
    {
        var junk = new string('x', 5000);
        var r = Run(ToolCallFormat.Hermes, $"<tool_call>{junk}</tool_call>");

        var call = Assert.Single(r.Calls);
        Assert.Contains("cut; 5023 characters in all", call.Exception!.Message, StringComparison.Ordinal);
        Assert.Equal($"<tool_call>{junk}</tool_call>", call.RawRepresentation);
    }

    // ----- Text -----

    [Theory]
    [InlineData("Plain text, no calls.\n")]
    [InlineData("a < b and c > d, <tool> <tool_cal <|tool_call| </tool_call> stray close\n\n")]
    [InlineData("  leading and trailing  \n ")]
    [InlineData("{\"name\": \"get_time\"} written inline is text in Hermes")]
    [InlineData("Héllo 日本語 👨‍👩‍👧 world <")]
    [InlineData("")]
    public void Text_NoCall_ShownExactly(string reply)
    {
        foreach (var format in new[] { ToolCallFormat.Hermes, ToolCallFormat.Phi })
        {
            var r = Run(format, reply);
            Assert.Equal(reply, r.Text);
            Assert.Empty(r.Calls);
        }
    }

    // ----- Chunking -----

    public static TheoryData<string, string> Replies => new()
    {
        { "hermes", "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>" },
        { "hermes", "A <b> c\n<tool_call>{\"name\":\"get_time\",\"arguments\":{}}</tool_call>  mid <tool\n<tool_call>\n{\"name\": \"plan_trip\", \"arguments\": {\"stops\": [{\"city\": \"東京\"}, {\"city\": \"Zürich 👨‍👩‍👧\"}]}}\n</tool_call>\nend \n" },
        { "hermes", "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": Paris}}</tool_call><tool_call>{\"name\": \"nope\"}</tool_call>x<tool_call>{\"name\": \"get_time\"" },
        { "phi", "Both:<|tool_call|>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}, {\"name\": \"get_time\", \"arguments\": {}}]<|/tool_call|> <|tool_call| ok" },
        { "llama3", "  {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\", \"days\": [1, 2]}}\nThat is all." },
        { "llama3", "{\"name\": \"Alice\", \"age\": 30}" },
        { "llama3", "Hmm <|python_tag|>{\"name\": \"get_time\", \"parameters\": {}}" },
        { "llama3", "[{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Par" },
    };

    private static ToolCallFormat FormatNamed(string name) => name switch
    {
        "hermes" => ToolCallFormat.Hermes,
        "phi" => ToolCallFormat.Phi,
        _ => ToolCallFormat.Llama3,
    };

    private static IEnumerable<string[]> Splits(string reply, int seed)
    {
        yield return [reply];
        yield return reply.Select(c => c.ToString()).ToArray();
        var random = new Random(seed);
        for (var i = 0; i < 300; i++)
        {
            var cuts = Enumerable.Range(0, random.Next(1, 16)).Select(_ => random.Next(reply.Length + 1)).Order().ToList();
            var pieces = new List<string>();
            var start = 0;
            foreach (var cut in cuts)
            {
                pieces.Add(reply[start..cut]);
                start = cut;
            }

            pieces.Add(reply[start..]);
            yield return [.. pieces];
        }
    }

    [Theory]
    [MemberData(nameof(Replies))]
    public void Chunking_AnySplit_SameTextAndCalls(string format, string reply)
    {
        var expected = Run(FormatNamed(format), [reply], Tools);
        var expectedCalls = expected.Calls.Select(Describe).ToList();

        foreach (var chunks in Splits(reply, seed: reply.Length))
        {
            var actual = Run(FormatNamed(format), chunks, Tools);
            Assert.Equal(expected.Text, actual.Text);
            Assert.Equal(expectedCalls, actual.Calls.Select(Describe).ToList());
        }
    }

    [Theory]
    [MemberData(nameof(Replies))]
    public void Chunking_AnySplit_MarkupNeverShown(string format, string reply)
    {
        var markers = FormatNamed(format).Markers.SelectMany(m => new[] { m.Open, m.Close }).OfType<string>().ToList();
        foreach (var chunks in Splits(reply, seed: 7))
        {
            var r = Run(FormatNamed(format), chunks, Tools);
            foreach (var marker in markers)
            {
                Assert.DoesNotContain(marker, r.Text, StringComparison.Ordinal);
            }

            if (r.Calls.Count > 0)
            {
                Assert.DoesNotContain("\"name\"", r.Text, StringComparison.Ordinal);
            }
        }
    }

    [Fact]
    public void Chunking_HeldText_NeverLongerThanTheLongestMarker()
    {
        var parser = new ToolCallParser(ToolCallFormat.Phi, Tools);
        var fed = new StringBuilder();
        var shown = new StringBuilder();
        foreach (var c in "Some text <|tool_ca and <|tool_call is not a marker; <|/tool_call|> neither.")
        {
            fed.Append(c);
            shown.Append(parser.Append(c.ToString()).Text);
            Assert.True(fed.Length - shown.Length < "<|tool_call|>".Length + 1, $"held {fed.Length - shown.Length} characters after '{fed}'");
        }
    }

    // ----- Ids and lifecycle -----

    [Fact]
    public void CallIds_Default_FreshPerCallWithPrefix()
    {
        var ids = new List<string>();
        for (var i = 0; i < 3; i++)
        {
            var parser = new ToolCallParser(ToolCallFormat.Phi, Tools);
            ids.AddRange(parser.Append("<|tool_call|>[{\"name\": \"get_time\"}, {\"name\": \"get_time\"}, {\"name\": 1}]<|/tool_call|>").Calls.Select(c => c.CallId));
            Assert.Empty(parser.Complete().Calls);
        }

        Assert.Equal(9, ids.Count);
        Assert.Equal(9, ids.Distinct(StringComparer.Ordinal).Count());
        Assert.All(ids, id => Assert.Matches("^call_[0-9a-f]{16}$", id));
    }

    [Fact]
    public void Append_AfterComplete_Throws()
    {
        var parser = new ToolCallParser(ToolCallFormat.Hermes, Tools);
        parser.Complete();

        Assert.Throws<InvalidOperationException>(() => parser.Append("x"));
        Assert.Throws<InvalidOperationException>(() => parser.Complete());
    }

    // ----- Formats -----

    [Fact]
    public void Format_OpeningMarkerPrefixOfAnother_Throws()
    {
        var ex = Assert.Throws<ArgumentException>(() => new ToolCallFormat("bad", [new("<call>", "</call>"), new("<call>x", null)], bareJsonReply: false));

        Assert.Contains("is a prefix of", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Format_NoMarkersAndNoBareJson_Throws()
    {
        Assert.Throws<ArgumentException>(() => new ToolCallFormat("none", [], bareJsonReply: false));
    }

    [Fact]
    public void Format_Custom_MistralStyleMarkerWithoutClose_Works()
    {
        var mistral = new ToolCallFormat("mistral", [new("[TOOL_CALLS]", null)], bareJsonReply: false);

        var r = Run(mistral, "[TOOL_CALLS][{\"name\": \"get_time\", \"arguments\": {}}, {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Nice\"}}]");

        Assert.Equal(["get_time", "get_weather"], r.Calls.Select(c => Valid(c, c.Name).Name));
    }

    [Theory]
    [InlineData("{% for m in messages %}<|im_start|>{{ m.role }}{% endfor %}{% if tools %}<tool_call>{% endif %}", "hermes")]
    [InlineData("<|im_start|>{{ m.role }}", null)]
    [InlineData("{{ '<|system|>' }}{% if tools %}<|tool|>{{ tools | tojson }}<|/tool|>{% endif %}{{ '<|tool_call|>' }}", "phi")]
    [InlineData("<|start_header_id|>{{ role }}<|end_header_id|>{% if message.role == 'ipython' %}{% endif %}", "llama3")]
    [InlineData("<|start_header_id|>{{ role }}<|end_header_id|>", null)]
    [InlineData("", null)]
    public void Detect_FromTemplate_PicksTheFamily(string template, string? expected)
    {
        Assert.Equal(expected, ToolCallFormat.Detect(template, [])?.Name);
    }

    [Fact]
    public void Detect_FromAddedTokens_PicksTheFamily()
    {
        Assert.Same(ToolCallFormat.Hermes, ToolCallFormat.Detect(null, ["<|im_start|>", "<tool_call>", "</tool_call>"]));
        Assert.Same(ToolCallFormat.Phi, ToolCallFormat.Detect("<|user|>", ["<|tool_call|>"]));
        Assert.Same(ToolCallFormat.Llama3, ToolCallFormat.Detect("<|start_header_id|>", ["<|python_tag|>"]));
        Assert.Null(ToolCallFormat.Detect("plain", ["<|endoftext|>"]));
    }
}
