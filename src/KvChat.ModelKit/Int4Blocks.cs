namespace KvChat.ModelKit;

/// <summary>
/// A weight matrix quantized to 4 bits in blocks of 32 along its input (K) dimension, one float scale per block,
/// symmetric (value = (q - 8) x scale). Rows are output units (N). The scales are rounded to half precision so the same
/// blocks are exact in both ONNX's <c>MatMulNBits</c> layout (uint8 <c>[N, K/32, 16]</c>, element 2j in the low
/// nibble of byte j, float scales <c>[N, K/32]</c>) and GGUF's <c>Q4_0</c> (per block a half scale and 16 bytes, element j
/// in the low nibble and element j + 16 in the high nibble of byte j).
/// </summary>
internal sealed class Int4Blocks
{
    public const int BlockSize = 32;

    /// <summary>Bytes per block in GGUF's Q4_0.</summary>
    public const int Q40BlockBytes = 2 + (BlockSize / 2);

    private Int4Blocks(int rows, int columns, byte[] codes, float[] scales)
    {
        Rows = rows;
        Columns = columns;
        Codes = codes;
        Scales = scales;
    }

    /// <summary>Output units (N).</summary>
    public int Rows { get; }

    /// <summary>Inputs (K), a multiple of <see cref="BlockSize"/>.</summary>
    public int Columns { get; }

    /// <summary>One 4-bit code (0..15) per weight, row-major <c>[N, K]</c>.</summary>
    private byte[] Codes { get; }

    /// <summary>One scale per block, <c>[N, K/32]</c>, each exactly representable in half precision.</summary>
    public float[] Scales { get; }

    public int BlocksPerRow => Columns / BlockSize;

    /// <summary>Quantizes a matrix given by an accessor <paramref name="weight"/>(row, column).</summary>
    public static Int4Blocks Quantize(int rows, int columns, Func<int, int, float> weight)
    {
        if (columns % BlockSize != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(columns), columns, $"The input dimension must be a multiple of {BlockSize}.");
        }

        var codes = new byte[(long)rows * columns];
        var scales = new float[(long)rows * (columns / BlockSize)];
        Span<float> block = stackalloc float[BlockSize];
        for (var row = 0; row < rows; row++)
        {
            for (var b = 0; b < columns / BlockSize; b++)
            {
                var max = 0f;
                for (var j = 0; j < BlockSize; j++)
                {
                    block[j] = weight(row, (b * BlockSize) + j);
                    max = MathF.Max(max, MathF.Abs(block[j]));
                }

                var scale = (float)(Half)(max / 7f);
                var index = ((long)row * (columns / BlockSize)) + b;
                scales[index] = scale;
                var inverse = scale == 0f ? 0f : 1f / scale;
                for (var j = 0; j < BlockSize; j++)
                {
                    codes[(index * BlockSize) + j] = (byte)Math.Clamp((int)MathF.Round(block[j] * inverse) + 8, 0, 15);
                }
            }
        }

        return new Int4Blocks(rows, columns, codes, scales);
    }

    /// <summary>Quantizes a <c>MatMul</c> weight stored row-major as <c>[K, N]</c> (x times W): its rows become columns.</summary>
    public static Int4Blocks FromMatMulWeight(float[] weight, int fanIn, int fanOut)
        => Quantize(fanOut, fanIn, (n, k) => weight[((long)k * fanOut) + n]);

    /// <summary>Quantizes a matrix stored row-major as <c>[N, K]</c> (an embedding table: one row per token).</summary>
    public static Int4Blocks FromRows(float[] weight, int rows, int columns)
        => Quantize(rows, columns, (n, k) => weight[((long)n * columns) + k]);

    public float Dequantized(int row, int column)
    {
        var index = ((long)row * Columns) + column;
        return (Codes[index] - 8) * Scales[index / BlockSize];
    }

    /// <summary>The dequantized matrix, row-major <c>[N, K]</c>.</summary>
    public float[] DequantizeRows()
    {
        var values = new float[Codes.LongLength];
        for (long i = 0; i < values.LongLength; i++)
        {
            values[i] = (Codes[i] - 8) * Scales[i / BlockSize];
        }

        return values;
    }

    /// <summary>MatMulNBits' <c>B</c>: uint8 <c>[N, K/32, 16]</c>, element 2j in the low nibble of byte j.</summary>
    public byte[] ToMatMulNBits()
    {
        var packed = new byte[Codes.LongLength / 2];
        for (long i = 0; i < packed.LongLength; i++)
        {
            packed[i] = (byte)(Codes[2 * i] | (Codes[(2 * i) + 1] << 4));
        }

        return packed;
    }

    /// <summary>GGUF's Q4_0 rows: per block a little-endian half scale, then element j | element j + 16 &lt;&lt; 4.</summary>
    public byte[] ToQ40()
    {
        var blocks = Codes.LongLength / BlockSize;
        var bytes = new byte[blocks * Q40BlockBytes];
        for (long b = 0; b < blocks; b++)
        {
            var offset = b * Q40BlockBytes;
            BitConverter.TryWriteBytes(bytes.AsSpan((int)offset, 2), (Half)Scales[b]);
            var code = b * BlockSize;
            for (var j = 0; j < BlockSize / 2; j++)
            {
                bytes[offset + 2 + j] = (byte)(Codes[code + j] | (Codes[code + j + (BlockSize / 2)] << 4));
            }
        }

        return bytes;
    }
}
