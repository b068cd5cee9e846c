using System.Globalization;

namespace KvChat;

/// <summary>
/// Builds the exceptions for out-of-range options, so every message is one sentence that names the option and the value
/// it was given ("ChatOptions.Temperature is -1; it must be finite and at least 0."), whatever validates it.
/// </summary>
/// <remarks>
/// The value is written into the sentence and not passed as <see cref="ArgumentOutOfRangeException.ActualValue"/>,
/// which would append a second line ("Actual value was -1.") to the message.
/// </remarks>
internal static class OptionErrors
{
    /// <summary>Creates the exception for <paramref name="option"/> given <paramref name="value"/>.</summary>
    /// <param name="paramName">The parameter that carried the option (<c>options</c>, or <c>value</c> in a setter).</param>
    /// <param name="option">The option's full name, such as <c>ChatOptions.TopK</c>.</param>
    /// <param name="value">The value given.</param>
    /// <param name="requirement">What the value must be, completing "it must be ...", such as "at least 1".</param>
    public static ArgumentOutOfRangeException OutOfRange(string paramName, string option, object? value, string requirement) =>
        new(paramName, $"{option} is {Format(value)}; it must be {requirement}.");

    /// <summary>Writes a value as the message shows it: invariant culture, strings quoted, null as "null".</summary>
    public static string Format(object? value) => value switch
    {
        null => "null",
        string s => $"'{s}'",
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? "null",
    };
}
