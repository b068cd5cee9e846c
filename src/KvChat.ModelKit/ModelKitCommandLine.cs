using System.Globalization;

namespace KvChat.ModelKit;

/// <summary>The model kit's command line: <c>--preset tiny|bench --out DIR</c> plus dimension overrides.</summary>
public static partial class ModelKitCommandLine
{
    private const string Usage = """
        Writes a GenAI model folder (model.onnx, genai_config.json, tokenizer.json, tokenizer_config.json).

        Usage: KvChat.ModelKit --out DIR [--preset tiny|bench] [options]
          --preset NAME            tiny (tests, default), bench (about 128M parameters), bench-152k and
                                   bench-262k (bench with a real vocabulary), or a real shape:
                                   qwen2.5-0.5b, llama3.2-1b, vocab262k (int4)
          --out DIR                the model folder to write
          --variant gqa|concat     GroupQueryAttention with shared buffers (default) or plain Concat KV
          --template chatml|phi|llama3   template family (default chatml)
          --hidden N --layers N --heads N --kv-heads N --intermediate N --vocab N --context N
          --seed N                 weight seed (default 42)
          --script TEXT            the text every greedy reply says
          --tokenizer-from DIR     a real tokenizer folder (tokenizer.json + tokenizer_config.json) to build the model over
          --model-type NAME        the GenAI model type (default: the family's, e.g. qwen3, llama, gemma3_text)
          --printable-bias X       logit bias for printable tokens (default 4)
          --precision fp32|int4    linear weights as float MatMul or int4 MatMulNBits (block 32, LM head too)
          --accuracy-level N       int4 MatMulNBits accuracy_level: 4 (int8 activations, default) or 0-3 (float)
          --gguf                   also write model.gguf: the same network and tokenizer for llama.cpp
        """;

    /// <summary>Runs the command line.</summary>
    /// <param name="args">The arguments.</param>
    /// <param name="output">Where progress goes.</param>
    /// <param name="error">Where errors go.</param>
    /// <returns>0 on success, 2 on bad arguments.</returns>
    public static int Run(string[] args, TextWriter output, TextWriter error)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(error);
        try
        {
            var (options, directory) = Parse(args);
            if (directory is null)
            {
                output.WriteLine(Usage);
                return args.Length == 0 ? 2 : 0;
            }

            var result = ModelKit.Write(options, directory);
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"Wrote {result.Directory}: {result.ParameterCount:N0} parameters, model.onnx {result.ModelBytes / 1048576.0:F1} MiB, in {result.Elapsed.TotalSeconds:F2} s."));
            return 0;
        }
        catch (ArgumentException e)
        {
            error.WriteLine($"error: {e.Message}");
            error.WriteLine(Usage);
            return 2;
        }
    }

    /// <summary>Parses arguments into options and the output folder (null when help was asked for).</summary>
    /// <param name="args">The arguments.</param>
    /// <returns>The options and the folder.</returns>
    /// <exception cref="ArgumentException">An argument is unknown or its value is missing or malformed.</exception>
    public static (ModelKitOptions Options, string? Directory) Parse(IReadOnlyList<string> args)
    {
        ArgumentNullException.ThrowIfNull(args);
        var options = ModelKitOptions.Tiny;
        var preset = args.Select((a, i) => (a, i)).Where(p => p.a == "--preset").Select(p => p.i).DefaultIfEmpty(-1).Last();
        if (preset >= 0)
        {
            options = ModelKitOptions.FromPreset(Value(args, preset));
        }

        string? directory = null;
        for (var i = 0; i < args.Count; i++)
        {
            switch (args[i])
            {
                case "--help" or "-h":
                    return (options, null);
                case "--preset":
                    i++;
                    break;
                case "--out":
                    directory = Value(args, i++);
                    break;
                case "--variant":
                    options = options with
                    {
                        Variant = Value(args, i++).ToUpperInvariant() switch
                        {
                            "GQA" => ModelVariant.GroupQueryAttention,
                            "CONCAT" => ModelVariant.Concat,
                            var v => throw new ArgumentException($"Unknown variant '{v}': use gqa or concat."),
                        },
                    };
                    break;
                case "--template":
                    options = options with
                    {
                        TemplateFamily = Value(args, i++).ToUpperInvariant() switch
                        {
                            "CHATML" => ChatTemplateFamily.ChatML,
                            "PHI" => ChatTemplateFamily.Phi,
                            "LLAMA3" => ChatTemplateFamily.Llama3,
                            var v => throw new ArgumentException($"Unknown template family '{v}': use chatml, phi or llama3."),
                        },
                    };
                    break;
                case "--hidden": options = options with { HiddenSize = Int(args, i++) }; break;
                case "--layers": options = options with { NumLayers = Int(args, i++) }; break;
                case "--heads": options = options with { NumHeads = Int(args, i++) }; break;
                case "--kv-heads": options = options with { NumKvHeads = Int(args, i++) }; break;
                case "--intermediate": options = options with { IntermediateSize = Int(args, i++) }; break;
                case "--vocab": options = options with { VocabSize = Int(args, i++) }; break;
                case "--context": options = options with { ContextLength = Int(args, i++) }; break;
                case "--seed":
                    options = options with { Seed = ulong.TryParse(Value(args, i++), NumberStyles.None, CultureInfo.InvariantCulture, out var seed) ? seed : throw new ArgumentException("--seed takes a whole number.") };
                    break;
                case "--script": options = options with { Script = Value(args, i++) }; break;
                case "--tokenizer-from": options = options with { TokenizerFrom = Value(args, i++) }; break;
                case "--model-type": options = options with { ModelType = Value(args, i++) }; break;
                case "--printable-bias":
                    options = options with { PrintableBias = float.TryParse(Value(args, i++), NumberStyles.Float, CultureInfo.InvariantCulture, out var bias) ? bias : throw new ArgumentException("--printable-bias takes a number.") };
                    break;
                default:
                    options = ParseRealShapeArgument(args, ref i, options);
                    break;
            }
        }

        if (directory is null && args.Count > 0)
        {
            throw new ArgumentException("--out DIR is required.");
        }

        return (options, directory);
    }

    private static string Value(IReadOnlyList<string> args, int index)
        => index + 1 < args.Count ? args[index + 1] : throw new ArgumentException($"{args[index]} needs a value.");

    private static int Int(IReadOnlyList<string> args, int index)
        => int.TryParse(Value(args, index), NumberStyles.None, CultureInfo.InvariantCulture, out var value)
            ? value
            : throw new ArgumentException($"{args[index]} takes a whole number.");
}
