namespace KvChat.HostingSample;

/// <summary>
/// The web chat at <c>GET /</c>: one HTML page with its script inline (no build step), embedded in the app, that
/// talks to the OpenAI-compatible endpoint <c>MapOpenAIChatCompletions</c> maps.
/// </summary>
internal static class WebChatPage
{
    private static readonly Lazy<byte[]> Page = new(() =>
    {
        using var stream = typeof(WebChatPage).Assembly.GetManifestResourceStream("KvChat.HostingSample.WebChat.index.html")
            ?? throw new InvalidOperationException("The web chat page is not embedded in the app.");
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        return copy.ToArray();
    });

    public static void Map(WebApplication app) => app.MapGet("/", () => Results.Bytes(Page.Value, "text/html; charset=utf-8"));
}
