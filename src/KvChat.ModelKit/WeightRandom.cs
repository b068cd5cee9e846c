using System.Runtime.InteropServices;

namespace KvChat.ModelKit;

/// <summary>Deterministic weights: SplitMix64, one stream per tensor name, so files are byte-identical for a seed.</summary>
internal static class WeightRandom
{
    public static byte[] Uniform(ulong seed, string tensorName, long count, float limit)
    {
        var bytes = new byte[checked(count * sizeof(float))];
        Fill(MemoryMarshal.Cast<byte, float>(bytes.AsSpan()), seed, tensorName, limit);
        return bytes;
    }

    /// <summary>The same values as <see cref="Uniform"/>, as floats.</summary>
    public static float[] UniformFloats(ulong seed, string tensorName, long count, float limit)
    {
        var values = new float[count];
        Fill(values, seed, tensorName, limit);
        return values;
    }

    private static void Fill(Span<float> values, ulong seed, string tensorName, float limit)
    {
        var state = seed ^ Fnv1a(tensorName);
        var scale = 2f * limit / (1 << 24);
        for (var i = 0; i < values.Length; i++)
        {
            var r = Next(ref state);
            values[i] = (int)(r >> 40) * scale - limit;
        }
    }

    public static byte[] Constant(long count, float value)
    {
        var bytes = new byte[checked(count * sizeof(float))];
        MemoryMarshal.Cast<byte, float>(bytes.AsSpan()).Fill(value);
        return bytes;
    }

    private static ulong Next(ref ulong state)
    {
        var z = state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    private static ulong Fnv1a(string text)
    {
        var hash = 0xCBF29CE484222325UL;
        foreach (var c in text)
        {
            hash = (hash ^ c) * 0x100000001B3UL;
        }

        return hash;
    }
}
