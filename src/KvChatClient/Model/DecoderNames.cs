using System.Globalization;
using System.Text.Json;

namespace KvChat;

/// <summary>
/// The decoder's file and the names of its inputs and outputs, as <c>genai_config.json</c>'s <c>model.decoder</c> gives
/// them (<c>%d</c> in a KV name is the layer), with GenAI's defaults for names it leaves out. Every name the section holds
/// is kept, so that a session backend can decline one it does not understand (<c>inputs_embeds</c>, say).
/// </summary>
internal sealed record DecoderNames
{
    public string FileName { get; init; } = "model.onnx";

    public string InputIds { get; init; } = "input_ids";

    public string AttentionMask { get; init; } = "attention_mask";

    public string PositionIds { get; init; } = "position_ids";

    public string PastKey { get; init; } = "past_key_values.%d.key";

    public string PastValue { get; init; } = "past_key_values.%d.value";

    public string Logits { get; init; } = "logits";

    public string PresentKey { get; init; } = "present.%d.key";

    public string PresentValue { get; init; } = "present.%d.value";

    /// <summary>Input keys of <c>model.decoder.inputs</c> other than the ones above.</summary>
    public IReadOnlyList<string> OtherInputs { get; init; } = [];

    /// <summary>Output keys of <c>model.decoder.outputs</c> other than the ones above.</summary>
    public IReadOnlyList<string> OtherOutputs { get; init; } = [];

    /// <summary>The execution providers named in <c>session_options.provider_options</c>.</summary>
    public IReadOnlyList<string> Providers { get; init; } = [];

    /// <summary><c>session_options.intra_op_num_threads</c>, when given.</summary>
    public int? IntraOpThreads { get; init; }

    public static string Layer(string pattern, int layer) => pattern.Replace("%d", layer.ToString(CultureInfo.InvariantCulture), StringComparison.Ordinal);

    public static DecoderNames Read(JsonElement decoder)
    {
        var names = new DecoderNames();
        if (decoder.TryGetProperty("filename", out var file) && file.ValueKind == JsonValueKind.String && file.GetString() is { Length: > 0 } fileName)
        {
            names = names with { FileName = fileName };
        }

        var otherInputs = new List<string>();
        if (decoder.TryGetProperty("inputs", out var inputs) && inputs.ValueKind == JsonValueKind.Object)
        {
            foreach (var input in inputs.EnumerateObject())
            {
                var value = input.Value.ValueKind == JsonValueKind.String ? input.Value.GetString()! : input.Value.GetRawText();
                names = input.Name switch
                {
                    "input_ids" => names with { InputIds = value },
                    "attention_mask" => names with { AttentionMask = value },
                    "position_ids" => names with { PositionIds = value },
                    "past_key_names" => names with { PastKey = value },
                    "past_value_names" => names with { PastValue = value },
                    _ => Add(otherInputs, input.Name, names),
                };
            }
        }

        var otherOutputs = new List<string>();
        if (decoder.TryGetProperty("outputs", out var outputs) && outputs.ValueKind == JsonValueKind.Object)
        {
            foreach (var output in outputs.EnumerateObject())
            {
                var value = output.Value.ValueKind == JsonValueKind.String ? output.Value.GetString()! : output.Value.GetRawText();
                names = output.Name switch
                {
                    "logits" => names with { Logits = value },
                    "present_key_names" => names with { PresentKey = value },
                    "present_value_names" => names with { PresentValue = value },
                    _ => Add(otherOutputs, output.Name, names),
                };
            }
        }

        var providers = new List<string>();
        int? threads = null;
        if (decoder.TryGetProperty("session_options", out var session) && session.ValueKind == JsonValueKind.Object)
        {
            if (session.TryGetProperty("provider_options", out var list) && list.ValueKind == JsonValueKind.Array)
            {
                foreach (var provider in list.EnumerateArray())
                {
                    if (provider.ValueKind == JsonValueKind.Object)
                    {
                        providers.AddRange(provider.EnumerateObject().Select(p => p.Name));
                    }
                }
            }

            if (session.TryGetProperty("intra_op_num_threads", out var t) && t.ValueKind == JsonValueKind.Number && t.TryGetInt32(out var n) && n > 0)
            {
                threads = n;
            }
        }

        return names with { OtherInputs = otherInputs, OtherOutputs = otherOutputs, Providers = providers, IntraOpThreads = threads };
    }

    private static DecoderNames Add(List<string> list, string key, DecoderNames names)
    {
        list.Add(key);
        return names;
    }
}
