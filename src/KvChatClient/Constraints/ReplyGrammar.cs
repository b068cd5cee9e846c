using System.Text.Json;
using Microsoft.Extensions.AI;

namespace KvChat;

/// <summary>What a request's reply is constrained to.</summary>
/// <param name="Grammar">The grammar the client's own sampler follows on the cached session; null for free text.</param>
/// <param name="FallbackReason">
/// Why a JSON schema reply cannot follow a grammar here (a keyword outside the supported subset, a tokenizer whose
/// vocabulary cannot be read), so it falls back to GenAI guidance on a temporary generator; null otherwise.
/// </param>
internal readonly record struct ReplyGrammarPlan(GrammarNode? Grammar, string? FallbackReason);

/// <summary>
/// Decides what a reply is constrained to, from its <see cref="ChatOptions"/>: a JSON schema
/// (<c>ResponseFormat</c>), tool calls (<c>ToolMode</c> RequireAny/RequireSpecific), or JSON or a call when both come
/// together. The grammar runs in the client's sampler on whichever session serves the request, so a structured reply
/// is served from the cache like any other.
/// </summary>
internal static class ReplyGrammar
{
    /// <summary>Plans the constraint of a request.</summary>
    /// <param name="options">The request's options.</param>
    /// <param name="format">The model's tool-call format (null when it has none).</param>
    /// <param name="toolsOffered">Whether tools may be called in this reply (offered and not <c>ToolMode.None</c>).</param>
    /// <param name="vocabularyError">Why the vocabulary cannot be read for masks, or null when it can.</param>
    /// <param name="constrainAutoCalls">Whether calls in <c>ToolMode.Auto</c> get constrained arguments too.</param>
    /// <exception cref="NotSupportedException">
    /// The JSON schema is outside the supported subset while tools are offered (GenAI guidance cannot serve tools).
    /// </exception>
    public static ReplyGrammarPlan Plan(ChatOptions? options, ToolCallFormat? format, bool toolsOffered, string? vocabularyError, bool constrainAutoCalls = false)
    {
        var json = options?.ResponseFormat as ChatResponseFormatJson;
        var required = toolsOffered ? options!.ToolMode as RequiredChatToolMode : null;
        if (json is null && required is null)
        {
            return toolsOffered && constrainAutoCalls && vocabularyError is null
                ? new ReplyGrammarPlan(ToolCallGrammar.BuildAuto(format!, Signatures(options!)), null)
                : default;
        }

        if (vocabularyError is not null)
        {
            return json is null
                ? default // A required call keeps its forced opening only.
                : toolsOffered
                    ? throw new NotSupportedException($"ChatOptions.ResponseFormat JSON together with tools needs a token mask, and {vocabularyError}")
                    : new ReplyGrammarPlan(null, vocabularyError);
        }

        GrammarNode? calls = null;
        if (toolsOffered && (required is not null || json is not null))
        {
            calls = ToolCallGrammar.Build(format!, Signatures(options!), required?.RequiredFunctionName, options!.AllowMultipleToolCalls != false);
        }

        if (required is not null)
        {
            return new ReplyGrammarPlan(calls, null); // The reply is a call; a JSON format applies to the answer after it.
        }

        GrammarNode answer;
        try
        {
            answer = JsonSchemaGrammar.Compile(SchemaOf(json!), JsonWhitespace.Compact);
        }
        catch (NotSupportedException e)
        {
            return toolsOffered
                ? throw new NotSupportedException(
                    $"ChatOptions.ResponseFormat's JSON schema cannot be constrained on the cached session ({e.Message}), and GenAI guidance cannot serve it together with tools.", e)
                : new ReplyGrammarPlan(null, e.Message);
        }

        return new ReplyGrammarPlan(calls is null ? answer : new ChoiceNode([answer, calls]), null);
    }

    /// <summary>The schema of a JSON response format: its own, or any object when it has none.</summary>
    public static JsonElement SchemaOf(ChatResponseFormatJson json)
        => json.Schema is { ValueKind: JsonValueKind.Object } schema ? schema : AnyObject;

    private static readonly JsonElement AnyObject = JsonDocument.Parse("""{"type":"object"}""").RootElement;

    private static ToolSignature[] Signatures(ChatOptions options)
        => [.. options.Tools!.OfType<AIFunctionDeclaration>().Select(t => new ToolSignature(t.Name, t.JsonSchema))];
}
