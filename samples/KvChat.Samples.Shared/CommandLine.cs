using System.Globalization;

namespace KvChat.Samples;

/// <summary>How the samples read their command lines: an option's value, and whole numbers.</summary>
public static class CommandLine
{
    /// <summary>Returns the value that follows the option at <paramref name="i"/>, and moves <paramref name="i"/> onto it.</summary>
    /// <exception cref="ArgumentException">The option is the last argument.</exception>
    public static string Value(IReadOnlyList<string> args, ref int i)
    {
        ArgumentNullException.ThrowIfNull(args);
        var name = args[i];
        if (i + 1 >= args.Count)
        {
            throw new ArgumentException($"{name} needs a value.");
        }

        i++;
        return args[i];
    }

    /// <summary>Parses the value of option <paramref name="name"/> as a whole number of at least <paramref name="min"/>.</summary>
    /// <exception cref="ArgumentException">The value is not such a number (the message names the option).</exception>
    public static int WholeNumber(string name, string text, int min) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value) && value >= min
            ? value
            : throw new ArgumentException($"{name} takes a whole number of at least {min}, not '{text}'.");
}
