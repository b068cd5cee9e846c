using System.Text.Json;
using Microsoft.AspNetCore.Http.Json;

namespace KvChat.HostingSample;

/// <summary>
/// Reads and checks the body of <c>POST /chat</c> and <c>POST /chat/stream</c>. Every problem with what the caller sent
/// becomes a 400 <c>application/problem+json</c> whose detail names the field ("maxTokens", "messages[2].content"):
/// malformed JSON, a value of the wrong type or out of range, an unknown field, a null message.
/// </summary>
/// <remarks>
/// The body is read here rather than by minimal-API parameter binding, which answers a body it cannot read with a 400
/// and an empty body (the reason only goes to the server log).
/// </remarks>
internal static class ChatRequestReader
{
    private const string Fields = "\"messages\", \"maxTokens\" and \"temperature\"";

    /// <summary>Reads the request, or says why it cannot be read.</summary>
    public static async Task<(ChatRequestDto? Request, IResult? Problem)> ReadAsync(HttpRequest http, JsonOptions json, CancellationToken cancellationToken)
    {
        try
        {
            var request = await JsonSerializer.DeserializeAsync<ChatRequestDto>(http.Body, json.SerializerOptions, cancellationToken);
            return request is null
                ? (null, Problem("body", $"The request body is null; it must be a JSON object with {Fields}."))
                : (request, null);
        }
        catch (JsonException e)
        {
            return (null, Problem(e));
        }
    }

    /// <summary>A 400 problem for a request the chat client rejected (its message without .NET's parameter suffix).</summary>
    public static IResult Problem(string field, Exception rejected)
    {
        var detail = rejected.Message;
        if (rejected is ArgumentException { ParamName: { } name } && detail.EndsWith($" (Parameter '{name}')", StringComparison.Ordinal))
        {
            detail = detail[..^$" (Parameter '{name}')".Length];
        }

        return Problem(field, detail);
    }

    /// <summary>A 400 problem naming <paramref name="field"/> (also given as the <c>field</c> extension).</summary>
    public static IResult Problem(string field, string detail) =>
        Results.Problem(detail, statusCode: StatusCodes.Status400BadRequest, title: "The request is not valid.", extensions: new Dictionary<string, object?> { ["field"] = field });

    private static IResult Problem(JsonException e)
    {
        // "$.messages[0].content" -> "messages[0].content"; "$" is the body itself.
        var field = e.Path is { Length: > 1 } path && path.StartsWith("$.", StringComparison.Ordinal) ? path[2..] : null;
        var where = e.LineNumber is { } line ? $" (line {line + 1}, byte {e.BytePositionInLine + 1})" : "";
        if (e.Message.Contains("could not be mapped to any .NET member", StringComparison.Ordinal))
        {
            var unknown = QuotedName(e.Message) ?? field ?? "?";
            return Problem(unknown, $"\"{unknown}\" is not a field of this request; the fields are {Fields}.");
        }

        if (e.Message.Contains("could not be converted", StringComparison.Ordinal))
        {
            return field is null
                ? Problem("body", $"The request body must be a JSON object with {Fields}{where}.")
                : Problem(field, $"\"{field}\" must be {Expected(field)}{where}.");
        }

        // Not JSON at all (or cut short): the reader's own message, without .NET's path suffix.
        var reason = e.Message.Split(" Path:", 2)[0].Split(" LineNumber:", 2)[0].TrimEnd(' ', '.', '|');
        return Problem(field ?? "body", $"The request body is not valid JSON{where}: {reason}.");
    }

    /// <summary>What a field holds, for the message.</summary>
    private static string Expected(string field)
    {
        var name = field[(field.LastIndexOf('.') + 1)..];
        return name switch
        {
            "maxTokens" => "a whole number from 1 to 2147483647",
            "temperature" => "a finite number, at least 0",
            "role" => "a string: system, user or assistant",
            "content" => "a string",
            _ when name.StartsWith("messages[", StringComparison.Ordinal) => "an object { \"role\", \"content\" }",
            "messages" => "an array of { \"role\", \"content\" } objects",
            _ => "a value of the documented type",
        };
    }

    private static string? QuotedName(string message)
    {
        var start = message.IndexOf('\'', StringComparison.Ordinal);
        var end = start < 0 ? -1 : message.IndexOf('\'', start + 1);
        return end > start + 1 ? message[(start + 1)..end] : null;
    }
}
