namespace KvChat.ModelKit;

/// <summary>The command line's weight precision and GGUF export arguments.</summary>
public static partial class ModelKitCommandLine
{
    private static ModelKitOptions ParseRealShapeArgument(IReadOnlyList<string> args, ref int i, ModelKitOptions options)
    {
        switch (args[i])
        {
            case "--precision":
                var value = Value(args, i++);
                return options with
                {
                    Precision = value.ToUpperInvariant() switch
                    {
                        "FP32" => WeightPrecision.Fp32,
                        "INT4" => WeightPrecision.Int4,
                        _ => throw new ArgumentException($"Unknown precision '{value}': use fp32 or int4."),
                    },
                };
            case "--accuracy-level":
                return options with
                {
                    Int4AccuracyLevel = int.TryParse(Value(args, i++), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var level) && level <= 4
                        ? level
                        : throw new ArgumentException("--accuracy-level takes 0 to 4."),
                };
            case "--gguf":
                return options with { WriteGguf = true };
            default:
                throw new ArgumentException($"Unknown argument '{args[i]}'.");
        }
    }
}
