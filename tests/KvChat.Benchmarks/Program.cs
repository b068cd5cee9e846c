using KvChat.Benchmarks;

return await BenchmarkApp.RunAsync(args).ConfigureAwait(false);
