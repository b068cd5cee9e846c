using KvChat.AspNetCore.Protocol;

namespace KvChat.AspNetCore;

/// <summary>
/// A request the endpoint refuses, with the HTTP status and the body OpenAI would send: a 400 names the field at fault
/// in <c>param</c> (<c>messages[2].tool_calls[0].function.arguments</c>), a 404 the unknown model.
/// </summary>
internal sealed class OpenAIError(int status, string message, string? param, string? code = null, string type = OpenAIError.InvalidRequest)
    : Exception(message)
{
    public const string InvalidRequest = "invalid_request_error";

    public int Status { get; } = status;

    public string? Param { get; } = param;

    public string? Code { get; } = code;

    public string Type { get; } = type;

    public ErrorResponse ToResponse() => new() { Error = new ErrorBody { Message = Message, Type = Type, Param = Param, Code = Code } };

    /// <summary>A 400 naming <paramref name="param"/>.</summary>
    public static OpenAIError Bad(string param, string message, string? code = null) => new(400, message, param, code);

    /// <summary>
    /// What the chat client's own exception means to an OpenAI client: the client's eager checks (a prompt longer
    /// than the context, an option it cannot honour) are the caller's mistake, a 400; anything else is a server fault.
    /// </summary>
    public static OpenAIError From(Exception exception) => exception switch
    {
        OpenAIError error => error,
        ArgumentException e => new OpenAIError(400, WithoutParameterSuffix(e), e.ParamName == "messages" ? "messages" : null),
        NotSupportedException e => new OpenAIError(400, e.Message, null, "unsupported_parameter"),
        _ => new OpenAIError(500, "The server had an error while processing your request.", null, null, "server_error"),
    };

    /// <summary>The message without .NET's " (Parameter 'options')", which names a C# parameter, not a request field.</summary>
    private static string WithoutParameterSuffix(ArgumentException e) =>
        e.ParamName is { } name ? e.Message.Replace($" (Parameter '{name}')", string.Empty, StringComparison.Ordinal) : e.Message;
}
