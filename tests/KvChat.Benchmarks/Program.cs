using KvChat.Benchmarks;

if (args.Contains("--first-turn"))
{
    return await FirstTurn.RunAsync(args).ConfigureAwait(false);
}

return args.Contains("--structured") ? await StructuredTurn.RunAsync(args).ConfigureAwait(false)
    : args.Contains("--restart") ? await Restart.RunAsync(args).ConfigureAwait(false)
    : await BenchmarkApp.RunAsync(args).ConfigureAwait(false);
