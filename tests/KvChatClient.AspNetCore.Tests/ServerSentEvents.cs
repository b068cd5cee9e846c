using System.Text.Json;
using Xunit;

namespace KvChat.AspNetCore.Tests;

/// <summary>Reads the body of a streamed reply as it is on the wire.</summary>
internal static class ServerSentEvents
{
    /// <summary>Checks that every event is <c>data: ...</c> and the last one <c>data: [DONE]</c>; returns the chunks before it.</summary>
    public static List<JsonElement> Chunks(string body)
    {
        var events = body.Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.All(events, e => Assert.StartsWith("data: ", e, StringComparison.Ordinal));
        Assert.Equal("data: [DONE]", events[^1]);
        return [.. events[..^1].Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement)];
    }
}
