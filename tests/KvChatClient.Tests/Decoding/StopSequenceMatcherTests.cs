using System.Text;
using KvChat;
using Xunit;

namespace KvChatClient.Tests.Decoding;

public sealed class StopSequenceMatcherTests
{
    /// <summary>Feeds the chunks; returns the shown text, whether Append reported a stop, and IsStopped.</summary>
    private static (string Shown, bool StoppedByAppend, bool IsStopped) Run(string[] stops, params string[] chunks)
    {
        var matcher = new StopSequenceMatcher(stops);
        var shown = new StringBuilder();
        foreach (var chunk in chunks)
        {
            var stopped = matcher.Append(chunk, out var emit);
            shown.Append(emit);
            if (stopped)
            {
                return (shown.ToString(), true, matcher.IsStopped);
            }
        }

        shown.Append(matcher.Flush());
        return (shown.ToString(), false, matcher.IsStopped);
    }

    private static string Reference(string text, string[] stops)
    {
        var first = -1;
        foreach (var stop in stops)
        {
            var index = text.IndexOf(stop, StringComparison.Ordinal);
            if (index >= 0 && (first < 0 || index < first))
            {
                first = index;
            }
        }

        return first < 0 ? text : text[..first];
    }

    [Fact]
    public void Constructor_EmptyStopSequence_ThrowsNamingIt()
    {
        var ex = Assert.Throws<ArgumentException>(() => new StopSequenceMatcher(["ok", ""]));

        Assert.Equal("stopSequences", ex.ParamName);
        Assert.Contains("index 1 is empty", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Constructor_NullStopSequence_ThrowsNamingIt()
    {
        var ex = Assert.Throws<ArgumentException>(() => new StopSequenceMatcher([null!]));

        Assert.Contains("index 0 is null", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Append_NoStopSequences_EmitsEverythingAtOnce()
    {
        var matcher = new StopSequenceMatcher([]);

        Assert.False(matcher.Append("hello", out var emit));
        Assert.Equal("hello", emit);
        Assert.Equal(string.Empty, matcher.Flush());
    }

    [Fact]
    public void Append_TextThatCannotStartStop_EmittedImmediately()
    {
        var matcher = new StopSequenceMatcher(["STOP"]);

        Assert.False(matcher.Append("abc", out var emit));

        Assert.Equal("abc", emit);
    }

    [Fact]
    public void Append_PossibleStartOfStop_HeldBackUntilDecided()
    {
        var matcher = new StopSequenceMatcher(["STOP"]);

        Assert.False(matcher.Append("abST", out var first));
        Assert.False(matcher.Append("Ox", out var second));

        Assert.Equal("ab", first);
        Assert.Equal("STOx", second);
    }

    [Fact]
    public void Append_StopSpanningManyChunks_StopsAndDropsTheRest()
    {
        var result = Run(["<|end|>"], "Hello <", "|", "e", "n", "d", "|> after", "more");

        Assert.Equal(("Hello ", true, true), result);
    }

    [Fact]
    public void Append_StopInsideOneChunk_EmitsOnlyTextBefore()
    {
        var matcher = new StopSequenceMatcher(["\n\nUser:"]);

        Assert.True(matcher.Append("The answer.\n\nUser: next", out var emit));

        Assert.Equal("The answer.", emit);
    }

    [Fact]
    public void Append_OverlappingCandidates_FindsStop()
    {
        Assert.Equal(("a", true, true), Run(["aab"], "a", "a", "a", "b", "zzz"));
        Assert.Equal(("a", true, true), Run(["aab"], "aaab"));
    }

    [Fact]
    public void Append_StopAtVeryBeginning_EmitsNothing()
    {
        Assert.Equal((string.Empty, true, true), Run(["###"], "#", "##tail"));
    }

    [Fact]
    public void Append_EmptyChunks_ChangeNothing()
    {
        Assert.Equal(("x", true, true), Run(["END"], "", "x", "", "E", "", "N", "", "D", ""));
    }

    [Fact]
    public void Append_MultipleStops_EarliestOccurrenceWins()
    {
        // The order of the stop list does not matter: "one" occurs first in the text.
        Assert.Equal(("a ", true, true), Run(["two", "one"], "a one two"));

        // The shorter stop completes first, but the longer one started earlier and completes too.
        Assert.Equal(("x", true, true), Run(["abcd", "c"], "xab", "c", "d", "tail"));
    }

    [Fact]
    public void Append_CompletedStopWaitingOnLongerOne_ConfirmedWhenLongerOneFails()
    {
        var matcher = new StopSequenceMatcher(["abcd", "c"]);

        Assert.False(matcher.Append("xabc", out var first));
        Assert.True(matcher.Append("e", out var second));

        Assert.Equal("x", first);
        Assert.Equal("ab", second);
    }

    [Fact]
    public void Flush_CompletedStopStillWaitingAtEnd_CutsBeforeItAndReportsStop()
    {
        var matcher = new StopSequenceMatcher(["abcd", "c"]);
        Assert.False(matcher.Append("xabc", out var emit));

        var rest = matcher.Flush();

        Assert.Equal("x", emit);
        Assert.Equal("ab", rest);
        Assert.True(matcher.IsStopped);
    }

    [Fact]
    public void Flush_PartialStopAtEnd_ReturnsHeldText()
    {
        var matcher = new StopSequenceMatcher(["STOP"]);
        matcher.Append("textST", out _);

        Assert.Equal("ST", matcher.Flush());
        Assert.False(matcher.IsStopped);
    }

    [Fact]
    public void Append_AfterStop_ReturnsTrueAndEmitsNothing()
    {
        var matcher = new StopSequenceMatcher(["!"]);
        Assert.True(matcher.Append("hi!", out _));

        Assert.True(matcher.Append("more", out var emit));
        Assert.Equal(string.Empty, emit);
        Assert.Equal(string.Empty, matcher.Flush());
    }

    [Fact]
    public void Append_AfterFlush_Throws()
    {
        var matcher = new StopSequenceMatcher(["!"]);
        matcher.Flush();

        Assert.Throws<InvalidOperationException>(() => matcher.Append("x", out _));
    }

    [Fact]
    public void Append_HeldBackText_ShorterThanLongestStop()
    {
        var matcher = new StopSequenceMatcher(["aaaa"]);
        var shown = new StringBuilder();
        for (var i = 0; i < 20; i++)
        {
            Assert.False(matcher.Append(i % 4 == 3 ? "b" : "a", out var emit));
            shown.Append(emit);
            Assert.True(i + 1 - shown.Length < 4, $"Held back {i + 1 - shown.Length} characters.");
        }
    }

    [Fact]
    public void Append_RandomTextsAndChunks_EmitsExactlyTextBeforeFirstStop()
    {
        var random = new Random(20240611);
        const string Alphabet = "abc";
        for (var trial = 0; trial < 5000; trial++)
        {
            var stops = new string[random.Next(1, 4)];
            for (var s = 0; s < stops.Length; s++)
            {
                stops[s] = RandomString(random, Alphabet, random.Next(1, 5));
            }

            var text = RandomString(random, Alphabet, random.Next(0, 40));
            var expected = Reference(text, stops);
            var expectStop = expected.Length < text.Length || stops.Any(s => text.Contains(s, StringComparison.Ordinal));

            var matcher = new StopSequenceMatcher(stops);
            var shown = new StringBuilder();
            var position = 0;
            var stoppedByAppend = false;
            while (position < text.Length || random.Next(3) == 0)
            {
                var length = random.Next(0, Math.Min(6, text.Length - position) + 1);
                var chunk = text.Substring(position, length);
                position += length;
                stoppedByAppend = matcher.Append(chunk, out var emit);
                shown.Append(emit);
                var context = $"trial {trial}: text '{text}', stops [{string.Join(", ", stops)}]";
                Assert.True(expected.StartsWith(shown.ToString(), StringComparison.Ordinal), $"Emitted beyond the stop: {context}, shown '{shown}'.");
                if (stoppedByAppend)
                {
                    break;
                }
            }

            if (!stoppedByAppend)
            {
                shown.Append(matcher.Flush());
            }

            Assert.Equal(expected, shown.ToString());
            Assert.Equal(expectStop, matcher.IsStopped);
        }
    }

    private static string RandomString(Random random, string alphabet, int length)
    {
        var chars = new char[length];
        for (var i = 0; i < length; i++)
        {
            chars[i] = alphabet[random.Next(alphabet.Length)];
        }

        return new string(chars);
    }
}
