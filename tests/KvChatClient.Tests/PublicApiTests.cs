using System.Reflection;
using System.Text;
using PublicApiGenerator;
using Xunit;

namespace KvChat.Tests;

/// <summary>
/// The public API of both packages (KvChatClient and KvChatClient.SemanticKernel), every namespace included (the
/// extension methods live in <c>Microsoft.Extensions.DependencyInjection</c> and <c>Microsoft.SemanticKernel</c>),
/// compared with the committed listings <c>tests/KvChatClient.Tests/PublicApi/{assembly}.approved.txt</c>, so that every
/// API change is deliberate.
/// </summary>
/// <remarks>
/// When the API changes the test fails, names the lines added and removed, and writes the new listing to
/// <c>{assembly}.received.txt</c> beside the approved one. To accept the change, copy the received file over the
/// approved one (<c>mv PublicApi/KvChatClient.received.txt PublicApi/KvChatClient.approved.txt</c>), or run the tests
/// once with <c>KVCHAT_ACCEPT_API=1</c>, which rewrites the approved files; then commit them with the change.
/// </remarks>
public sealed class PublicApiTests
{
    /// <summary>Set to 1 to accept the current public API: the test rewrites the approved listing and passes.</summary>
    public const string AcceptVariable = "KVCHAT_ACCEPT_API";

    public static TheoryData<string> Packages => ["KvChatClient", "KvChatClient.SemanticKernel"];

    [Theory]
    [MemberData(nameof(Packages))]
    public void PublicApi_MatchesTheApprovedListing(string package)
    {
        var received = Listing(AssemblyOf(package));
        var directory = ListingDirectory();
        var approvedPath = Path.Combine(directory, $"{package}.approved.txt");
        var receivedPath = Path.Combine(directory, $"{package}.received.txt");
        var approved = File.Exists(approvedPath) ? Normalize(File.ReadAllText(approvedPath)) : string.Empty;

        if (received == approved)
        {
            File.Delete(receivedPath);
            return;
        }

        if (Environment.GetEnvironmentVariable(AcceptVariable) is "1" or "true")
        {
            File.WriteAllText(approvedPath, received);
            File.Delete(receivedPath);
            return;
        }

        File.WriteAllText(receivedPath, received);
        Assert.Fail(
            $"""
            The public API of {package} differs from {approvedPath}.
            {Difference(approved, received)}
            The whole new listing is in {receivedPath}.
            If the change is deliberate, accept it: copy the received file over the approved one, or run the tests
            once with {AcceptVariable}=1; then commit the approved file with the change.
            """);
    }

    [Theory]
    [MemberData(nameof(Packages))]
    public void PublicApiListing_NamesEveryPublicTypeAndMember_WhateverItsNamespace(string package)
    {
        var assembly = AssemblyOf(package);
        var listing = Listing(assembly);
        foreach (var type in assembly.GetExportedTypes())
        {
            Assert.Contains($"namespace {type.Namespace}\n", listing, StringComparison.Ordinal);
            var name = type.Name.Split('`')[0];
            Assert.Matches($@"\b(class|struct|enum|interface|record|delegate)\b[^\n]*\b{name}\b", listing);
            var declared = BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
            foreach (var method in type.GetMethods(declared).Where(m => !m.IsSpecialName && m.DeclaringType == type && !IsRecordMember(m)))
            {
                Assert.Contains($" {method.Name}(", listing, StringComparison.Ordinal);
            }
        }
    }

    private static bool IsRecordMember(MethodInfo method) =>
        method.Name is "Equals" or "GetHashCode" or "ToString" or "<Clone>$" or "Deconstruct" or "PrintMembers";

    /// <summary>The public API listing of <paramref name="assembly"/>: every namespace, extension methods included.</summary>
    private static string Listing(Assembly assembly) => Normalize(assembly.GeneratePublicApi(new ApiGeneratorOptions
    {
        // Assembly attributes carry build facts (repository URL, commit) that differ between clones.
        IncludeAssemblyAttributes = false,

        // By default types in Microsoft.* and System.* are left out: that would hide AddKvChatClient and friends.
        DenyNamespacePrefixes = [],
        UseDenyNamespacePrefixesForExtensionMethods = false,
    }));

    private static Assembly AssemblyOf(string package) => package switch
    {
        "KvChatClient" => typeof(KvChatClient).Assembly,
        "KvChatClient.SemanticKernel" => typeof(Microsoft.SemanticKernel.KvChatKernelBuilderExtensions).Assembly,
        _ => throw new ArgumentOutOfRangeException(nameof(package), package, "Not a package of this repository."),
    };

    private static string ListingDirectory() =>
        typeof(PublicApiTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .Single(a => a.Key == "PublicApiDirectory").Value
        ?? throw new InvalidOperationException("The test assembly has no PublicApiDirectory metadata (see KvChatClient.Tests.csproj).");

    private static string Normalize(string text) => text.ReplaceLineEndings("\n").TrimEnd() + "\n";

    /// <summary>The lines only the approved listing has (-) and only the received one has (+), in listing order.</summary>
    private static string Difference(string approved, string received)
    {
        var before = approved.Split('\n');
        var after = received.Split('\n');
        var text = new StringBuilder();
        foreach (var line in Except(before, after))
        {
            text.Append("- ").AppendLine(line.Trim());
        }

        foreach (var line in Except(after, before))
        {
            text.Append("+ ").AppendLine(line.Trim());
        }

        return text.Length == 0 ? "(only the order or layout of lines changed)" : text.ToString().TrimEnd();
    }

    private static IEnumerable<string> Except(string[] lines, string[] other)
    {
        var remaining = other.Where(l => l.Trim().Length > 0).GroupBy(l => l).ToDictionary(g => g.Key, g => g.Count());
        foreach (var line in lines.Where(l => l.Trim().Length > 0))
        {
            if (remaining.TryGetValue(line, out var count) && count > 0)
            {
                remaining[line] = count - 1;
            }
            else
            {
                yield return line;
            }
        }
    }
}
