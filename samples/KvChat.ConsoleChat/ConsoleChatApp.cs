using System.Diagnostics;
using System.Globalization;
using KvChat.Samples;
using Microsoft.Extensions.AI;
using Spectre.Console;

namespace KvChat.ConsoleChat;

/// <summary>
/// The console chat: reads user messages (typed, piped or from <c>--script</c>), streams each reply and prints a
/// <see cref="TurnReport"/> line after it. <c>Main</c> passes the real console; tests pass a script and a test console.
/// </summary>
internal static class ConsoleChatApp
{
    /// <summary>Runs the chat until the input ends or <c>/exit</c>.</summary>
    /// <param name="args">The command line (see <see cref="ChatArguments.Usage"/>).</param>
    /// <param name="input">Where user messages come from, one a line, unless <c>--script</c> names a file.</param>
    /// <param name="console">Where everything is written.</param>
    /// <param name="interactive">Whether a person types at <paramref name="input"/>: then a prompt is shown and input lines are not echoed.</param>
    /// <param name="cancellationToken">Stops the chat.</param>
    /// <returns>0 when every turn was answered, 1 when a turn or the model failed, 2 on bad arguments.</returns>
    public static async Task<int> RunAsync(
        string[] args, TextReader input, IAnsiConsole console, bool interactive = false, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(console);

        ChatArguments arguments;
        try
        {
            arguments = ChatArguments.Parse(args);
        }
        catch (ArgumentException e)
        {
            WriteError(console, e.Message);
            console.WriteLine(ChatArguments.Usage);
            return 2;
        }

        if (arguments.ShowHelp)
        {
            console.WriteLine(ChatArguments.Usage);
            return 0;
        }

        if (arguments.ScriptPath is { } scriptPath && !File.Exists(scriptPath))
        {
            WriteError(console, $"The script file '{scriptPath}' does not exist.");
            return 2;
        }

        var modelPath = arguments.ModelPath ?? await PrepareDemoModelAsync(console, arguments);
        KvChatClient client;
        try
        {
            // One conversation at a time: one session. After /reset the next conversation finds the shared prefix
            // (the system message) in that session's KV cache.
            client = new KvChatClient(modelPath, new KvChatClientOptions
            {
                MaxSessions = 1,
                ContextTokens = arguments.ContextTokens,
                ModelId = arguments.ModelPath is null ? DemoModel.ModelId : null,
            });
        }
        catch (Exception e) when (e is IOException or InvalidDataException or ArgumentException)
        {
            WriteError(console, e.Message);
            return 1;
        }

        using (client)
        {
            using var script = arguments.ScriptPath is { } path ? File.OpenText(path) : null;
            WriteHeader(console, client, interactive && script is null);
            return await ChatAsync(client, arguments, script ?? input, console, interactive && script is null, cancellationToken);
        }
    }

    private static async Task<string> PrepareDemoModelAsync(IAnsiConsole console, ChatArguments arguments)
    {
        var options = DemoModel.OptionsFor(arguments.DemoSize);
        var root = DemoModel.CacheRoot(arguments.CacheDirectory);
        var directory = DemoModel.PathFor(options, root);
        var (path, written) = DemoModel.IsComplete(directory)
            ? (directory, null)
            : await console.Status().StartAsync(
                $"Writing the demo model into [blue]{Markup.Escape(directory)}[/] (first run only)...",
                _ => Task.Run(() => DemoModel.Ensure(options, root)));
        console.MarkupLine($"[yellow]Demo model[/] ({DemoModel.Dimensions(options)}), {DemoModel.Origin(written)} [blue]{Markup.Escape(path)}[/]");
        console.MarkupLine("[yellow]Its weights are random, so its words mean nothing.[/] Watch the cache line under each reply; "
            + "run with [bold]--model PATH[/] for a real model.");
        return path;
    }

    private static void WriteHeader(IAnsiConsole console, KvChatClient client, bool interactive)
    {
        var metadata = client.GetService<ChatClientMetadata>();
        var statistics = client.GetService<KvCacheStatistics>();
        console.MarkupLine(string.Create(CultureInfo.InvariantCulture,
            $"Model [bold]{Markup.Escape(metadata?.DefaultModelId ?? "?")}[/]: context {client.ContextTokens} tokens, KV cache {(statistics?.KvBytesPerSession ?? 0) / 1048576.0:F1} MiB per session."));
        if (interactive)
        {
            console.MarkupLine("[grey]Type a message. /reset starts over (the KV cache stays), /stats shows the cache, /help lists the commands, /exit or Ctrl+C quits.[/]");
        }
    }

    private static async Task<int> ChatAsync(
        KvChatClient client, ChatArguments arguments, TextReader input, IAnsiConsole console, bool interactive, CancellationToken cancellationToken)
    {
        List<ChatMessage> history = NewConversation(arguments);
        var options = new ChatOptions { MaxOutputTokens = arguments.MaxTokens, Temperature = arguments.Temperature };
        var turn = 0;
        var failed = false;
        while (true)
        {
            if (interactive)
            {
                console.Markup("[bold green]you>[/] ");
            }

            var line = await input.ReadLineAsync(cancellationToken);
            if (line is null)
            {
                break;
            }

            line = line.Trim();
            if (line.Length == 0)
            {
                continue;
            }

            if (!interactive)
            {
                console.MarkupLine($"[bold green]you>[/] {Markup.Escape(line)}");
            }

            if (line is "/exit" or "/quit")
            {
                break;
            }

            if (line == "/reset")
            {
                history = NewConversation(arguments);
                console.MarkupLine("[grey]New conversation. The KV cache keeps the old one: a shared start (the system message) is not prefilled again.[/]");
                continue;
            }

            if (line == "/stats")
            {
                WriteStatistics(console, client);
                continue;
            }

            if (line is "/help" or "/?")
            {
                WriteHelp(console);
                continue;
            }

            if (line[0] == '/' && !line.Any(char.IsWhiteSpace))
            {
                // One /word is a command, never a message: a mistyped command must not reach the model.
                console.MarkupLine($"[yellow]Unknown command {Markup.Escape(line)}: /help lists the commands.[/]");
                continue;
            }

            history.Add(new ChatMessage(ChatRole.User, line));
            turn++;
            try
            {
                var report = await ReplyAsync(client, history, options, console, turn, cancellationToken);
                console.MarkupLine(report.ToMarkup());
            }
            catch (Exception e) when (e is ArgumentException or NotSupportedException or InvalidOperationException)
            {
                // The prompt no longer fits the context, or the runtime failed: drop the turn and say so.
                history.RemoveAt(history.Count - 1);
                console.WriteLine();
                WriteError(console, e.Message + (e is ArgumentException ? " (/reset starts over)" : string.Empty));
                failed = true;
            }
        }

        WriteSummary(console, client, turn);
        return failed ? 1 : 0;
    }

    private static void WriteHelp(IAnsiConsole console)
    {
        console.MarkupLine("[grey]Commands (a line that is only a command; anything else is sent to the model):[/]");
        console.MarkupLine("[grey]  /reset   start a new conversation (the KV cache stays: a shared system message is not prefilled again)[/]");
        console.MarkupLine("[grey]  /stats   show the cache statistics[/]");
        console.MarkupLine("[grey]  /help    show this list[/]");
        console.MarkupLine("[grey]  /exit    quit (also /quit, Ctrl+C, or the end of the input)[/]");
    }

    private static List<ChatMessage> NewConversation(ChatArguments arguments) =>
        arguments.SystemPrompt is { } system ? [new ChatMessage(ChatRole.System, system)] : [];

    private static async Task<TurnReport> ReplyAsync(
        KvChatClient client, List<ChatMessage> history, ChatOptions options, IAnsiConsole console, int turn, CancellationToken cancellationToken)
    {
        console.Markup("[bold blue]assistant>[/] ");
        var started = Stopwatch.GetTimestamp();
        long? firstText = null;
        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in client.GetStreamingResponseAsync(history, options, cancellationToken))
        {
            updates.Add(update);
            var text = update.Text;
            if (text.Length > 0)
            {
                firstText ??= Stopwatch.GetTimestamp();
                console.Write(new Text(text));
            }
        }

        var ended = Stopwatch.GetTimestamp();
        if (firstText is null)
        {
            console.Markup("[grey](an empty reply)[/]");
        }

        console.WriteLine();
        var response = updates.ToChatResponse();
        history.AddRange(response.Messages);
        return TurnReport.From(
            turn,
            response.Usage,
            Stopwatch.GetElapsedTime(started, firstText ?? ended),
            Stopwatch.GetElapsedTime(firstText ?? ended, ended));
    }

    private static void WriteStatistics(IAnsiConsole console, KvChatClient client)
    {
        if (client.GetService<KvCacheStatistics>() is not { } s)
        {
            return;
        }

        var table = new Table().AddColumns("counter", "value").HideHeaders();
        foreach (var (name, value) in new (string, long)[]
        {
            ("requests", s.Requests), ("cache hits", s.CacheHits), ("cache misses", s.CacheMisses),
            ("cached input tokens", s.CachedInputTokens), ("prefilled input tokens", s.PrefilledInputTokens),
            ("output tokens", s.OutputTokens), ("sessions", s.Sessions), ("KV bytes", s.KvBytes),
        })
        {
            table.AddRow(name, value.ToString("N0", CultureInfo.InvariantCulture));
        }

        console.Write(table);
    }

    private static void WriteSummary(IAnsiConsole console, KvChatClient client, int turns)
    {
        if (turns == 0 || client.GetService<KvCacheStatistics>() is not { } s)
        {
            return;
        }

        var input = s.CachedInputTokens + s.PrefilledInputTokens;
        console.MarkupLine(string.Create(CultureInfo.InvariantCulture,
            $"[grey]{turns} turn(s): {s.CachedInputTokens} of {input} prompt tokens came from the KV cache ({(input == 0 ? 0 : 100.0 * s.CachedInputTokens / input):F0}%), {s.PrefilledInputTokens} were prefilled, {s.OutputTokens} generated.[/]"));
    }

    private static void WriteError(IAnsiConsole console, string message) =>
        console.MarkupLine($"[red]error:[/] {Markup.Escape(message)}");
}
