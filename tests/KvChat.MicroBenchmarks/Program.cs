using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using KvChat.MicroBenchmarks;

// --paired MODEL ROUNDS: the decode benchmarks' three ways in turn in one process (see PairedDecode).
if (args is ["--paired", var pairedModel, var pairedRounds])
{
    return await PairedDecode.RunAsync(pairedModel, int.Parse(pairedRounds, System.Globalization.CultureInfo.InvariantCulture)).ConfigureAwait(false);
}

// --threads MODEL ROUNDS [OUTPUT]: GenAI's intra-op threads against concurrent sessions (see ThreadScaling).
if (args is ["--threads", var threadsModel, var threadsRounds, .. var threadsRest])
{
    return ThreadScaling.Run(threadsModel, int.Parse(threadsRounds, System.Globalization.CultureInfo.InvariantCulture), threadsRest.FirstOrDefault());
}

// --last-logits MODEL ROUNDS [OUTPUT], --sampled-decode MODEL ROUNDS [OUTPUT]: real-vocabulary runs (see RealVocabularyRuns).
if (args is ["--last-logits", var lastModel, var lastRounds, .. var lastRest])
{
    return RealVocabularyRuns.LastLogits(lastModel, int.Parse(lastRounds, System.Globalization.CultureInfo.InvariantCulture), lastRest.FirstOrDefault());
}

if (args is ["--sampled-decode", var sampledModel, var sampledRounds, .. var sampledRest])
{
    return RealVocabularyRuns.SampledDecode(sampledModel, int.Parse(sampledRounds, System.Globalization.CultureInfo.InvariantCulture), sampledRest.FirstOrDefault());
}

// --prefill-chunks MODEL ROUNDS [OUTPUT]: one long prefill in Runs of 128 to 1,000 tokens (see PrefillRuns).
if (args is ["--prefill-chunks", var chunksModel, var chunksRounds, .. var chunksRest])
{
    return PrefillRuns.RunChunks(chunksModel, int.Parse(chunksRounds, System.Globalization.CultureInfo.InvariantCulture), chunksRest.FirstOrDefault());
}

// --prefill MODEL ROUNDS [OUTPUT] [--quick] [--reference FOLDER]: the owned backend's session options and prefill chunking (see PrefillRuns).
if (args is ["--prefill", var prefillModel, var prefillRounds, .. var prefillRest])
{
    return PrefillRuns.Run(
        prefillModel,
        int.Parse(prefillRounds, System.Globalization.CultureInfo.InvariantCulture),
        prefillRest.TakeWhile(a => a != "--quick" && a != "--reference").FirstOrDefault(),
        prefillRest.Contains("--quick"),
        prefillRest.SkipWhile(a => a != "--reference").Skip(1).FirstOrDefault());
}

// --sampler-paired ROUNDS [OUTPUT]: the sampler's ways in turn in one process (see SamplerPairs).
if (args is ["--sampler-paired", var samplerRounds, .. var samplerRest])
{
    return SamplerPairs.Run(int.Parse(samplerRounds, System.Globalization.CultureInfo.InvariantCulture), samplerRest.FirstOrDefault());
}

// --two-row MODEL ROUNDS [OUTPUT]: one-row against two-row decode steps, and the next turn's prefill either way (see TwoRowSteps).
if (args is ["--two-row", var twoRowModel, var twoRowRounds, .. var twoRowRest])
{
    return TwoRowSteps.Run(twoRowModel, int.Parse(twoRowRounds, System.Globalization.CultureInfo.InvariantCulture), twoRowRest.FirstOrDefault());
}

// The default job keeps the whole suite near 8 minutes on a 2-core machine; any --job on the command line replaces it.
// --publish copies the markdown reports to docs/benchmarks/micro.
var publish = args.Contains("--publish");
args = [.. args.Where(a => a != "--publish")];
var config = DefaultConfig.Instance
    .WithArtifactsPath(Path.Combine(BenchModels.RepositoryRoot, ".artifacts", "micro-benchmarks"));
if (!args.Any(a => a is "--job" or "-j" || a.StartsWith("--job=", StringComparison.Ordinal)))
{
    config = config.AddJob(Job.Default
        .WithId("Suite")
        .WithLaunchCount(1)
        .WithWarmupCount(3)
        .WithIterationCount(15));
}

var started = DateTime.UtcNow;
var summaries = BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args, config).ToList();
if (publish)
{
    var target = Path.Combine(BenchModels.RepositoryRoot, "docs", "benchmarks", "micro");
    Directory.CreateDirectory(target);
    foreach (var directory in summaries.Select(s => s.ResultsDirectoryPath).Distinct())
    {
        foreach (var report in Directory.EnumerateFiles(directory, "*-report-github.md").Where(f => File.GetLastWriteTimeUtc(f) >= started))
        {
            // KvChat.MicroBenchmarks.DecodeBenchmarks-report-github.md -> DecodeBenchmarks.md
            var name = Path.GetFileName(report).Replace("-report-github.md", ".md", StringComparison.Ordinal).Split('.')[^2] + ".md";
            File.Copy(report, Path.Combine(target, name), overwrite: true);
            Console.WriteLine($"published {Path.Combine(target, name)}");
        }
    }
}

return summaries.Any(s => s.HasCriticalValidationErrors || s.Reports.Any(r => !r.Success)) ? 1 : 0;
