using KvChat.Samples;
using Microsoft.Extensions.AI;

namespace KvChat.HostingSample;

/// <summary>
/// The hosting sample: a minimal API over the <see cref="IChatClient"/> that <c>AddKvChatClient</c> registers from the
/// <c>KvChat</c> section of the configuration. <c>Main</c> runs it; tests start it on a free loopback port.
/// </summary>
internal static partial class HostingApp
{
    /// <summary>Where the app listens unless <c>--urls</c> (or <c>ASPNETCORE_URLS</c>) says otherwise: loopback only.</summary>
    public const string DefaultUrl = "http://127.0.0.1:5077";

    /// <summary>Builds the app: configuration, the demo model when <c>KvChat:ModelPath</c> is empty, services, endpoints.</summary>
    /// <param name="args">The command line: <c>--urls</c>, and any setting as <c>--KvChat:ModelPath=PATH</c>.</param>
    /// <exception cref="Microsoft.Extensions.Options.OptionsValidationException">The <c>KvChat</c> settings are not valid.</exception>
    public static WebApplication Build(string[] args)
    {
        // appsettings.json is copied next to the app, so the content root is the app's folder wherever it is run from.
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
        if (string.IsNullOrWhiteSpace(builder.Configuration[WebHostDefaults.ServerUrlsKey]))
        {
            builder.WebHost.UseUrls(DefaultUrl);
        }

        var demo = string.IsNullOrWhiteSpace(builder.Configuration["KvChat:ModelPath"]) ? UseDemoModel(builder.Configuration) : null;

        // README dependency injection: begin
        // appsettings.json: "KvChat": { "ModelPath": "/models/phi-4-mini", "MaxSessions": 4, "ContextTokens": 4096 }
        builder.Services.AddKvChatClient(builder.Configuration.GetSection("KvChat"))
            .UseLogging()
            .UseOpenTelemetry();
        // README dependency injection: end

        var app = builder.Build();
        if (demo is not null)
        {
            LogDemoModel(app.Logger, demo);
        }

        // Load the model now (validating the options on the way), not on the first request.
        _ = app.Services.GetRequiredService<IChatClient>();
        ChatEndpoints.Map(app);

        // README OpenAI endpoint: begin
        app.MapOpenAIChatCompletions(); // POST /v1/chat/completions, GET /v1/models: for any OpenAI client
        // README OpenAI endpoint: end
        WebChatPage.Map(app); // GET /: the web chat, over /v1/chat/completions
        return app;
    }

    [LoggerMessage(LogLevel.Warning, "{Demo} Its weights are random, so its words mean nothing; the usage in each response is real. Set KvChat:ModelPath for a real model.")]
    private static partial void LogDemoModel(ILogger logger, string demo);

    /// <summary>Writes (or reuses) the demo model and sets <c>KvChat:ModelPath</c> (and <c>KvChat:ModelId</c>) to it.</summary>
    private static string UseDemoModel(ConfigurationManager configuration)
    {
        var options = DemoModel.OptionsFor(DemoModel.CheckSize(configuration["DemoModel:Size"] is { Length: > 0 } size ? size : "small"));
        var (path, written) = DemoModel.Ensure(options, DemoModel.CacheRoot(configuration["DemoModel:CacheDirectory"]));
        configuration.AddInMemoryCollection(
        [
            new("KvChat:ModelPath", path),
            new("KvChat:ModelId", DemoModel.ModelId),
        ]);
        return $"KvChat:ModelPath is empty: demo model ({DemoModel.Dimensions(options)}), {DemoModel.Origin(written)} {path}.";
    }
}
