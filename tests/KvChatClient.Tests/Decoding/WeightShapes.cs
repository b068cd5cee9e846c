namespace KvChatClient.Tests.Decoding;

/// <summary>Hand-made weight vectors of named shapes, for the nucleus tests (selection and rejection alike).</summary>
internal static class WeightShapes
{
    /// <summary>
    /// Gets <paramref name="count"/> weights of <paramref name="shape"/>: "lognormal", "nearly equal", "few distinct"
    /// (four values, many ties), "with zeros", or otherwise one heavy weight at <paramref name="heavy"/> over a tail of
    /// weights below <paramref name="tail"/>.
    /// </summary>
    public static float[] Make(string shape, int count, Random random, int heavy, float tail) => shape switch
    {
        "lognormal" => [.. Enumerable.Range(0, count).Select(_ => MathF.Exp(-8f * random.NextSingle() * random.NextSingle() * 5f))],
        "nearly equal" => [.. Enumerable.Range(0, count).Select(_ => 1f - (random.NextSingle() * 1e-4f))],
        "few distinct" => [.. Enumerable.Range(0, count).Select(_ => (random.Next(4) + 1) / 4f)],
        "with zeros" => [.. Enumerable.Range(0, count).Select(_ => random.Next(3) == 0 ? 0f : random.NextSingle())],
        _ => [.. Enumerable.Range(0, count).Select(i => i == heavy ? 1f : random.NextSingle() * tail)],
    };
}
