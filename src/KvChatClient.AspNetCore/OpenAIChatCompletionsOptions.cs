namespace KvChat.AspNetCore;

/// <summary>What <c>MapOpenAIChatCompletions</c> serves, and to whom.</summary>
/// <remarks>Read once, when the endpoints are mapped.</remarks>
public sealed class OpenAIChatCompletionsOptions
{
    /// <summary>
    /// Gets or sets the model name that <c>GET /v1/models</c> lists and requests must name in <c>model</c>; a request
    /// naming another model is a 404.
    /// </summary>
    /// <value>
    /// The default value is <see langword="null"/>: the chat client's <c>ChatClientMetadata.DefaultModelId</c>
    /// (KvChatClient: <c>KvChatClientOptions.ModelId</c> or the model folder's name), or <c>default</c> when it has none.
    /// </value>
    public string? ModelId { get; set; }

    /// <summary>Gets or sets the key of the keyed <c>IChatClient</c> to serve.</summary>
    /// <value>The default value is <see langword="null"/>: the unkeyed <c>IChatClient</c>.</value>
    public object? ServiceKey { get; set; }

    /// <summary>
    /// Gets or sets whether clients on other machines may call the endpoints. When it is off, a request whose remote
    /// address is not a loopback address gets a 403 in OpenAI's error shape, whatever address the server listens on.
    /// </summary>
    /// <value>The default value is <see langword="false"/>: loopback clients only.</value>
    public bool AllowRemoteClients { get; set; }
}
