using System.Text;

namespace KvChat.MicroBenchmarks;

/// <summary>What the console runs (<c>--paired</c>, <c>--threads</c>, <c>--prefill</c>, ...) share: the median of their rounds and writing their report.</summary>
internal static class RunReport
{
    /// <summary>Gets the median of <paramref name="values"/> (the mean of the two middle ones for an even count; NaN for none).</summary>
    public static double Median(IReadOnlyCollection<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length == 0 ? double.NaN
            : sorted.Length % 2 == 1 ? sorted[sorted.Length / 2]
            : (sorted[(sorted.Length / 2) - 1] + sorted[sorted.Length / 2]) / 2;
    }

    /// <summary>Prints the report and, when <paramref name="output"/> is given, writes it there; returns the exit code 0.</summary>
    public static int Write(StringBuilder text, string? output)
    {
        Console.Write(text);
        if (output is not null)
        {
            File.WriteAllText(output, text.ToString());
            Console.WriteLine($"wrote {output}");
        }

        return 0;
    }
}
