using System.ComponentModel;
using System.Globalization;
using Microsoft.Extensions.AI;

namespace KvChat.AgentSample;

/// <summary>
/// The agent's three tools, offered to the model through <see cref="AIFunctionFactory"/>: the weather and the local
/// time in a city, and a currency conversion. Their answers are canned (the sample runs offline); each call is printed
/// as a <c>tool&gt;</c> line.
/// </summary>
internal static class TravelTools
{
    /// <summary>Gets the tools as the agent offers them.</summary>
    public static IList<AITool> All { get; } =
    [
        AIFunctionFactory.Create(GetWeather, "get_weather"),
        AIFunctionFactory.Create(GetLocalTime, "get_local_time"),
        AIFunctionFactory.Create(ConvertCurrency, "convert_currency"),
    ];

    [Description("Gets the current weather in a city.")]
    private static string GetWeather([Description("The city, e.g. Paris.")] string city) =>
        Report($"get_weather(city: {city})", city == "Paris" ? "18C, light rain" : "21C, sunny");

    [Description("Gets the local time in a city, as HH:mm.")]
    private static string GetLocalTime([Description("The city, e.g. Paris.")] string city) =>
        Report($"get_local_time(city: {city})", "14:05");

    [Description("Converts an amount of money from one currency to another.")]
    private static double ConvertCurrency(
        [Description("The amount to convert.")] double amount,
        [Description("The ISO code of the amount's currency, e.g. EUR.")] string from,
        [Description("The ISO code of the currency wanted, e.g. USD.")] string to)
    {
        var rate = (from, to) switch { ("EUR", "USD") => 1.08, ("USD", "EUR") => 1 / 1.08, _ => 1.0 };
        var result = Math.Round(amount * rate, 2);
        Report(string.Create(CultureInfo.InvariantCulture, $"convert_currency(amount: {amount}, from: {from}, to: {to})"), result.ToString(CultureInfo.InvariantCulture));
        return result;
    }

    private static string Report(string call, string result)
    {
        Console.WriteLine($"tool> {call} = {result}");
        return result;
    }
}
