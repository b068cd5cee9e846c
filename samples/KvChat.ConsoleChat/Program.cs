using KvChat.ConsoleChat;
using Microsoft.ML.OnnxRuntimeGenAI;
using Spectre.Console;

// GenAI's process handle: created first, disposed after the client and every generator are gone.
using var genAi = new OgaHandle();

var console = AnsiConsole.Console;
if (Console.IsOutputRedirected)
{
    // Piped output has no width: keep each cache line on one line.
    console.Profile.Width = 400;
}

return await ConsoleChatApp.RunAsync(args, Console.In, console, interactive: !Console.IsInputRedirected);
