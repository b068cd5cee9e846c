using System.Diagnostics;
using System.Globalization;
using System.Text;
using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat.MicroBenchmarks;

/// <summary>
/// Side-by-side runs on a model of a real vocabulary (the kit presets <c>bench-152k</c> and <c>bench-262k</c>, or the
/// int4 real shapes <c>qwen2.5-0.5b</c> and <c>vocab262k</c>), the ways in turn in one process, medians over the rounds:
/// <list type="bullet">
/// <item><description><c>--last-logits MODEL ROUNDS [OUT]</c>: a prefill of 1,000 tokens and the read of its last
/// position's logits, three ways: <c>OgaGenerator_GetLogits</c> (the session's native read), the prompt's last token
/// appended on its own and one row of <c>GetOutput("logits")</c> (the fallback), and the whole <c>[1, P, V]</c> copy of
/// <c>GetOutput("logits")</c> (what the client did before).</description></item>
/// <item><description><c>--sampled-decode MODEL ROUNDS [OUT]</c>: 16 tokens decoded through <see cref="KvSession"/>
/// and <see cref="LogitSampler"/>, greedy against temperature 0.8 with top-p 0.9, with top-k 40 and top-p 0.9,
/// and GenAI's bare <c>GenerateNextToken</c> loop; per token.</description></item>
/// </list>
/// The model runs with the client's default intra-op threads (<see cref="IntraOpThreads.Default"/>).
/// </summary>
internal static class RealVocabularyRuns
{
    private const int PrefillTokens = 1000;
    private const int DecodeTokens = 16;

    public static int LastLogits(string modelName, int rounds, string? output)
    {
        using var run = new ModelRun(modelName);
        var prompt = ModelRun.Prompt(PrefillTokens);
        var logits = new float[run.Vocab];
        using var native = run.Session();
        using var fallback = run.Session();
        fallback.UseNativeLogits = false;
        using var parameters = new GeneratorParams(run.Model);
        parameters.SetSearchOption("max_length", run.Context);
        using var generator = new Generator(run.Model, parameters);

        (string Name, Func<(double Total, double Read)> Run)[] ways =
        [
            ("OgaGenerator_GetLogits after the prefill", () => TimeSession(native, prompt, logits)),
            ("last token on its own, one row of GetOutput", () => TimeSession(fallback, prompt, logits)),
            ("GetOutput(\"logits\") [1, P, V], last row", () =>
            {
                generator.RewindTo(0);
                var stopwatch = Stopwatch.StartNew();
                generator.AppendTokens(prompt);
                var prefilled = stopwatch.Elapsed.TotalMilliseconds;
                using (var tensor = generator.GetOutput("logits"))
                {
                    tensor.GetData<float>()[^run.Vocab..].CopyTo(logits);
                }

                var total = stopwatch.Elapsed.TotalMilliseconds;
                return (total, total - prefilled);
            }),
        ];

        var totals = ways.Select(_ => new List<double>()).ToArray();
        var reads = ways.Select(_ => new List<double>()).ToArray();
        for (var round = -1; round < rounds; round++)
        {
            for (var k = 0; k < ways.Length; k++)
            {
                var i = round % 2 == 0 ? k : ways.Length - 1 - k;
                var (total, read) = ways[i].Run();
                if (round >= 0)
                {
                    totals[i].Add(total);
                    reads[i].Add(read);
                }
            }
        }

        var text = new StringBuilder();
        text.AppendLine(run.Describe($"a prefill of {PrefillTokens} tokens into an empty session, then the last position's logits; medians of {rounds} rounds"));
        text.AppendLine();
        text.AppendLine("| way | prefill + logits, ms | of which the logits read, ms | ratio to the native read |");
        text.AppendLine("| --- | ---: | ---: | ---: |");
        for (var i = 0; i < ways.Length; i++)
        {
            text.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"| {ways[i].Name} | {RunReport.Median(totals[i]):F1} | {RunReport.Median(reads[i]):F2} | {RunReport.Median(totals[i]) / RunReport.Median(totals[0]):F3} |"));
        }

        return RunReport.Write(text, output);
    }

    public static int SampledDecode(string modelName, int rounds, string? output)
    {
        using var run = new ModelRun(modelName);
        var prompt = ModelRun.Prompt(60);
        var logits = new float[run.Vocab];
        using var session = run.Session();
        session.Prefill(prompt, 0);
        using var parameters = new GeneratorParams(run.Model);
        parameters.SetSearchOption("max_length", run.Context);
        using var generator = new Generator(run.Model, parameters);
        generator.AppendTokens(prompt);

        int Decode(SamplingSettings settings)
        {
            session.Prefill(prompt, prompt.Length - 1);
            var sampler = new LogitSampler(settings, run.Vocab);
            var next = 0;
            for (var i = 0; i < DecodeTokens; i++)
            {
                session.ReadLastLogits(logits);
                next = sampler.Next(logits);
                sampler.Accept(next);
                if (i < DecodeTokens - 1)
                {
                    session.Append(next);
                }
            }

            return next;
        }

        (string Name, Func<int> Run)[] ways =
        [
            ("greedy", () => Decode(SamplingSettings.Greedy)),
            ("temperature 0.8, top-p 0.9", () => Decode(new SamplingSettings(0.8f, 0.9f, 0, 0f, 0f, 7))),
            ("temperature 0.8, top-k 40, top-p 0.9", () => Decode(new SamplingSettings(0.8f, 0.9f, 40, 0f, 0f, 7))),
            ("bare GenerateNextToken (GenAI greedy)", () =>
            {
                generator.RewindTo((ulong)(prompt.Length - 1));
                generator.AppendTokens(prompt.AsSpan(prompt.Length - 1));
                for (var i = 0; i < DecodeTokens; i++)
                {
                    generator.GenerateNextToken();
                }

                return generator.GetSequence(0)[^1];
            }),
        ];

        var times = ways.Select(_ => new List<double>()).ToArray();
        for (var round = -1; round < rounds; round++)
        {
            for (var k = 0; k < ways.Length; k++)
            {
                var i = round % 2 == 0 ? k : ways.Length - 1 - k;
                var stopwatch = Stopwatch.StartNew();
                ways[i].Run();
                if (round >= 0)
                {
                    times[i].Add(stopwatch.Elapsed.TotalMilliseconds / DecodeTokens);
                }
            }
        }

        var greedy = RunReport.Median(times[0]);
        var text = new StringBuilder();
        text.AppendLine(run.Describe($"{DecodeTokens} tokens decoded after a {prompt.Length}-token prompt through KvSession and LogitSampler; medians per token of {rounds} rounds"));
        text.AppendLine();
        text.AppendLine("| way | ms per token | over greedy, ms | ratio to greedy |");
        text.AppendLine("| --- | ---: | ---: | ---: |");
        for (var i = 0; i < ways.Length; i++)
        {
            var median = RunReport.Median(times[i]);
            text.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"| {ways[i].Name} | {median:F3} | {median - greedy:F3} | {median / greedy:F3} |"));
        }

        return RunReport.Write(text, output);
    }

    private static (double Total, double Read) TimeSession(KvSession session, int[] prompt, float[] logits)
    {
        session.Extend(0, []);
        var stopwatch = Stopwatch.StartNew();
        session.Prefill(prompt, 0);
        var prefilled = stopwatch.Elapsed.TotalMilliseconds;
        session.ReadLastLogits(logits);
        var total = stopwatch.Elapsed.TotalMilliseconds;
        return (total, total - prefilled);
    }

    /// <summary>A kit model loaded with the client's default threads.</summary>
    private sealed class ModelRun : IDisposable
    {
        private readonly ModelFolder _folder;
        private readonly string _name;

        public ModelRun(string name)
        {
            BenchModels.EnsureGenAiHandle();
            _name = name;
            var path = BenchModels.PathOf(name);
            _folder = ModelFolder.Read(path);
            Threads = IntraOpThreads.Default;
            using var config = new Config(path);
            config.Overlay(IntraOpThreads.Overlay(Threads));
            Model = new Model(config);
            Context = Math.Min(_folder.ContextLength, 4096);
        }

        public Model Model { get; }

        public int Threads { get; }

        public int Context { get; }

        public int Vocab => _folder.VocabSize;

        public static int[] Prompt(int length)
        {
            var random = new Random(11);
#pragma warning disable CA5394 // Benchmark data, not a secret.
            return Enumerable.Range(0, length).Select(_ => random.Next(256)).ToArray();
#pragma warning restore CA5394
        }

        public KvSession Session() => new(Model, Context, _folder.KvBytesPerToken, _folder.SharedBuffer);

        public string Describe(string what) => string.Create(CultureInfo.InvariantCulture,
            $"{_name} ({_folder.Layers} layers, vocabulary {_folder.VocabSize}), {Threads} intra-op threads, {Environment.ProcessorCount} logical processors; {what}:");

        public void Dispose() => Model.Dispose();
    }
}
