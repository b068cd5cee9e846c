using KvChat.HostingSample;
using Microsoft.Extensions.Options;
using Microsoft.ML.OnnxRuntimeGenAI;

// GenAI's process handle: created first, disposed after the app (and the client in its container) is gone.
using var genAi = new OgaHandle();
try
{
    await using var app = HostingApp.Build(args);
    await app.RunAsync();
    return 0;
}
catch (OptionsValidationException e)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 1;
}
