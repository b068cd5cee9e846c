using System.Reflection;
using PublicApiGenerator;
using Xunit;

namespace KvChat.AspNetCore.Tests;

/// <summary>
/// The public API of KvChatClient.AspNetCore, compared with <c>PublicApi/KvChatClient.AspNetCore.approved.txt</c>.
/// To accept a deliberate change, run the tests once with <c>KVCHAT_ACCEPT_API=1</c> (or copy the received file
/// written beside the approved one over it) and commit the listing with the change.
/// </summary>
public sealed class PublicApiTests
{
    [Fact]
    public void PublicApi_MatchesTheApprovedListing()
    {
        var received = Normalize(typeof(KvChat.AspNetCore.OpenAIChatCompletionsOptions).Assembly.GeneratePublicApi(
            new ApiGeneratorOptions { IncludeAssemblyAttributes = false, DenyNamespacePrefixes = [] }));
        var directory = typeof(PublicApiTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == "PublicApiDirectory").Value!;
        var approvedPath = Path.Combine(directory, "KvChatClient.AspNetCore.approved.txt");
        var receivedPath = Path.Combine(directory, "KvChatClient.AspNetCore.received.txt");
        var approved = File.Exists(approvedPath) ? Normalize(File.ReadAllText(approvedPath)) : string.Empty;
        if (received == approved)
        {
            File.Delete(receivedPath);
            return;
        }

        if (Environment.GetEnvironmentVariable("KVCHAT_ACCEPT_API") is "1" or "true")
        {
            File.WriteAllText(approvedPath, received);
            return;
        }

        File.WriteAllText(receivedPath, received);
        Assert.Fail($"The public API of KvChatClient.AspNetCore differs from {approvedPath}; the new listing is in {receivedPath}.");
    }

    private static string Normalize(string text) => text.ReplaceLineEndings("\n").TrimEnd() + "\n";
}
