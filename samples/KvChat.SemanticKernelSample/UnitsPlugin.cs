using System.ComponentModel;
using System.Globalization;
using Microsoft.SemanticKernel;

namespace KvChat.SemanticKernelSample;

/// <summary>
/// A small Semantic Kernel plugin: two unit conversions. Added as plugin <c>units</c>, its functions reach the model as
/// <c>units_celsius_to_fahrenheit</c> and <c>units_kilometres_to_miles</c>. Each call is printed as a <c>tool&gt;</c> line.
/// </summary>
internal sealed class UnitsPlugin
{
    [KernelFunction("celsius_to_fahrenheit")]
    [Description("Converts a temperature from degrees Celsius to degrees Fahrenheit.")]
    public static double CelsiusToFahrenheit([Description("The temperature in degrees Celsius.")] double celsius) =>
        Report("celsius_to_fahrenheit", "celsius", celsius, Math.Round(celsius * 9 / 5 + 32, 2));

    [KernelFunction("kilometres_to_miles")]
    [Description("Converts a distance from kilometres to miles.")]
    public static double KilometresToMiles([Description("The distance in kilometres.")] double kilometres) =>
        Report("kilometres_to_miles", "kilometres", kilometres, Math.Round(kilometres / 1.609344, 2));

    private static double Report(string function, string parameter, double value, double result)
    {
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"tool> units.{function}({parameter}: {value}) = {result}"));
        return result;
    }
}
