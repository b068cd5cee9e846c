using KvChat.ModelKit;
using KvChat.Samples;

namespace KvChat.AgentSample;

/// <summary>
/// The model the sample runs on when no <c>--model</c> is given: the demo model's shape with a script, so that it
/// answers the default questions as a real model would, calling the tools on the way. The script is keyed by the number
/// of messages in the prompt (the instructions count as one): turn 1 calls <c>get_weather</c> and then
/// <c>get_local_time</c> and answers from both, turn 2 calls <c>convert_currency</c> and answers, turn 3 answers
/// directly. The cache lines it prints are real: the runtime, the KV cache and the agent loop are the ones a real model
/// runs through.
/// </summary>
internal static class ScriptedDemoModel
{
    /// <summary>The final answer of turn 1.</summary>
    public const string WeatherAnswer = "In Paris it is 18C with light rain, and the local time is 14:05.";

    /// <summary>The final answer of turn 2.</summary>
    public const string CurrencyAnswer = "50 EUR is 54 USD.";

    /// <summary>The answer to everything else (turn 3).</summary>
    public const string Farewell = "Take an umbrella and have a good trip to Paris!";

    /// <summary>
    /// Gets the model kit options: <see cref="DemoModel.Small"/> with the script, and a context of 4096 tokens (the
    /// scripted tokenizer spends a token on every byte, so the tools block alone is over a thousand).
    /// </summary>
    public static ModelKitOptions Options { get; } = DemoModel.Small with
    {
        ContextLength = 4096,
        Script = Farewell,
        ScriptByMessageCount = new Dictionary<int, string>
        {
            [2] = Call("get_weather", """{"city": "Paris"}"""),
            [4] = Call("get_local_time", """{"city": "Paris"}"""),
            [6] = WeatherAnswer,
            [8] = Call("convert_currency", """{"amount": 50, "from": "EUR", "to": "USD"}"""),
            [10] = CurrencyAnswer,
        },
    };

    private static string Call(string name, string arguments) =>
        $"<tool_call>\n{{\"name\": \"{name}\", \"arguments\": {arguments}}}\n</tool_call>";
}
