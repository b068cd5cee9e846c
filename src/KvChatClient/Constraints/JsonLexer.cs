namespace KvChat;

/// <summary>
/// The byte-level lexer of a JSON string's body (after the opening quote): escapes, <c>\uXXXX</c> (no lone
/// surrogates: a character outside the BMP is written as raw UTF-8), and well-formed UTF-8 (no overlong forms, no
/// surrogates, at most U+10FFFF), so a token that ends inside a character leaves the lexer waiting for the rest.
/// </summary>
/// <remarks>
/// States: 0 between characters; 8-31 inside a UTF-8 character (remaining bytes x 8 + the range of the next byte);
/// 64 after a backslash; 80-86 inside <c>\u</c>. <see cref="Step"/> returns 0 exactly when a character completed.
/// </remarks>
internal static class JsonLexer
{
    /// <summary>The byte is not allowed here.</summary>
    public const int Reject = -1;

    /// <summary>The byte is the closing quote.</summary>
    public const int Closed = -2;

    private const int Backslash = 64;
    private const int Hex = 80;

    /// <summary>The next state after <paramref name="b"/>, or <see cref="Reject"/> or <see cref="Closed"/>.</summary>
    public static int Step(int state, byte b)
    {
        if (state == 0)
        {
            return b switch
            {
                (byte)'"' => Closed,
                (byte)'\\' => Backslash,
                < 0x20 => Reject,
                < 0x80 => 0,
                >= 0xC2 and <= 0xDF => Pending(1, 0),
                0xE0 => Pending(2, 1),
                0xED => Pending(2, 2),
                >= 0xE1 and <= 0xEF => Pending(2, 0),
                0xF0 => Pending(3, 3),
                >= 0xF1 and <= 0xF3 => Pending(3, 0),
                0xF4 => Pending(3, 4),
                _ => Reject,
            };
        }

        if (state < Backslash)
        {
            var remaining = state >> 3;
            var (low, high) = (state & 7) switch
            {
                1 => (0xA0, 0xBF),
                2 => (0x80, 0x9F),
                3 => (0x90, 0xBF),
                4 => (0x80, 0x8F),
                _ => (0x80, 0xBF),
            };
            return b < low || b > high ? Reject : remaining == 1 ? 0 : Pending(remaining - 1, 0);
        }

        if (state == Backslash)
        {
            return b switch
            {
                (byte)'"' or (byte)'\\' or (byte)'/' or (byte)'b' or (byte)'f' or (byte)'n' or (byte)'r' or (byte)'t' => 0,
                (byte)'u' => Hex,
                _ => Reject,
            };
        }

        var digit = HexValue(b);
        if (digit < 0)
        {
            return Reject;
        }

        return state switch
        {
            Hex => digit == 0xD ? Hex + 3 : Hex + 2,
            Hex + 3 => digit >= 8 ? Reject : Hex + 4, // \uD800-\uDFFF: surrogates only come in pairs; use raw UTF-8.
            Hex + 2 => Hex + 4,
            Hex + 4 => Hex + 6,
            _ => 0,
        };
    }

    /// <summary>Whether the byte sequence, lexed from between characters, stays in the string and ends between characters.</summary>
    public static bool IsPlainRun(ReadOnlySpan<byte> bytes)
    {
        var state = 0;
        foreach (var b in bytes)
        {
            if (b == '\\')
            {
                return false;
            }

            state = Step(state, b);
            if (state < 0)
            {
                return false;
            }
        }

        return state == 0;
    }

    private static int Pending(int remaining, int range) => (remaining << 3) | range;

    private static int HexValue(byte b) => b switch
    {
        >= (byte)'0' and <= (byte)'9' => b - '0',
        >= (byte)'a' and <= (byte)'f' => b - 'a' + 10,
        >= (byte)'A' and <= (byte)'F' => b - 'A' + 10,
        _ => -1,
    };
}
