using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntimeGenAI;

namespace KvChat;

/// <summary>
/// Reads the last position's logits of a GenAI <see cref="Generator"/> through the C API's
/// <c>OgaGenerator_GetLogits</c> ("only contains the last token logits even in prompt processing"), which the managed
/// 0.18 wrapper does not expose: after a prefill of P tokens it copies V values, where the managed
/// <c>GetOutput("logits")</c> copies P x V (737 ms for P = 1,000 at V = 151,936).
/// </summary>
/// <remarks>
/// <para>
/// Why by hand: no library wraps this function; the package's managed assembly keeps the generator's native handle in
/// a private field (<c>_generatorHandle</c>) and its P/Invoke table internal.
/// </para>
/// <para>
/// The guard. GenAI 0.18's assemblies carry no version to check (the managed assembly is version 0.0.0.0 without a file
/// version, and the native library exports no version function), so the contract itself is checked, once per process:
/// the managed assembly is <c>Microsoft.ML.OnnxRuntimeGenAI</c> and its <see cref="Generator"/> has the handle field,
/// of type <see cref="IntPtr"/>; the native library the managed assembly loads exports every function used here. On
/// every read: the call succeeds, the tensor is float32 and holds exactly one row of the vocabulary. And once per
/// process, <see cref="CrossCheck"/> compares a read with the managed wrapper's own copy of a one-token step (where
/// that copy is small). Anything else turns this reader off for the process (<see cref="IsAvailable"/>,
/// <see cref="UnavailableReason"/>) and callers fall back to the managed path.
/// </para>
/// <para>The native library is not thread-safe per generator; callers hold the generator's session lease.</para>
/// </remarks>
internal static unsafe class GeneratorLastLogits
{
    private const string ExpectedAssembly = "Microsoft.ML.OnnxRuntimeGenAI";
    private const int ElementTypeFloat32 = 1; // OgaElementType_float32 in ort_genai_c.h.

    private static readonly Functions? Native = Load(out _loadFailure);
    private static string? _loadFailure;
    private static volatile string? _disabledReason;
    private static volatile bool _crossChecked;

    /// <summary>Gets whether the native last-position read can be used.</summary>
    public static bool IsAvailable => Native is not null && _disabledReason is null;

    /// <summary>Gets why the native read is off (<see langword="null"/> when it is on).</summary>
    public static string? UnavailableReason => _disabledReason ?? _loadFailure;

    /// <summary>Gets whether a read was compared with the managed wrapper's copy in this process.</summary>
    public static bool IsCrossChecked => _crossChecked;

    /// <summary>
    /// Copies the last position's logits of <paramref name="generator"/> into <paramref name="destination"/> (exactly
    /// one vocabulary). Returns <see langword="false"/>, and turns the reader off, when the native read is unavailable
    /// or its result does not have the expected type and shape; the caller then reads through the managed wrapper.
    /// </summary>
    /// <exception cref="InvalidOperationException">GenAI reported an error (its message is included).</exception>
    public static bool TryRead(Generator generator, Span<float> destination)
    {
        var native = Native;
        if (native is null || _disabledReason is not null)
        {
            return false;
        }

        var handle = GeneratorHandle(generator);
        ObjectDisposedException.ThrowIf(handle == IntPtr.Zero, generator);

        IntPtr tensor;
        ThrowIfFailed(native, native.GetLogits(handle, &tensor));
        try
        {
            int type;
            ThrowIfFailed(native, native.GetElementType(tensor, &type));
            nuint rank;
            ThrowIfFailed(native, native.GetShapeRank(tensor, &rank));
            if (type != ElementTypeFloat32 || rank is 0 or > 4)
            {
                _disabledReason = $"OgaGenerator_GetLogits returned element type {type}, rank {rank}; expected float32.";
                return false;
            }

            var shape = stackalloc long[(int)rank];
            ThrowIfFailed(native, native.GetShape(tensor, shape, rank));
            var elements = 1L;
            for (var i = 0; i < (int)rank; i++)
            {
                elements *= shape[i];
            }

            if (elements != destination.Length)
            {
                _disabledReason = $"OgaGenerator_GetLogits returned {elements} values; expected one row of {destination.Length}.";
                return false;
            }

            void* data;
            ThrowIfFailed(native, native.GetData(tensor, &data));
            new ReadOnlySpan<float>(data, destination.Length).CopyTo(destination);
            return true;
        }
        finally
        {
            native.DestroyTensor(tensor);
            GC.KeepAlive(generator);
        }
    }

    /// <summary>
    /// Once per process, after a one-token append: compares <paramref name="nativeRead"/> with the managed wrapper's
    /// copy of the same logits and turns the native read off on any difference.
    /// </summary>
    /// <returns>Whether the native read stays on.</returns>
    public static bool CrossCheck(ReadOnlySpan<float> nativeRead, ReadOnlySpan<float> managedRead)
    {
        if (!nativeRead.SequenceEqual(managedRead))
        {
            _disabledReason = "OgaGenerator_GetLogits disagreed with GetOutput(\"logits\") on a one-token step.";
            return false;
        }

        _crossChecked = true;
        return true;
    }

    [UnsafeAccessor(UnsafeAccessorKind.Field, Name = "_generatorHandle")]
    private static extern ref IntPtr GeneratorHandle(Generator generator);

    private static void ThrowIfFailed(Functions native, IntPtr result)
    {
        if (result == IntPtr.Zero)
        {
            return;
        }

        try
        {
            var message = Marshal.PtrToStringUTF8(native.ResultGetError(result)) ?? "unknown error";
            throw new InvalidOperationException($"GenAI failed to read the logits: {message}");
        }
        finally
        {
            native.DestroyResult(result);
        }
    }

    private static Functions? Load(out string? failure)
    {
        try
        {
            var assembly = typeof(Generator).Assembly;
            if (assembly.GetName().Name != ExpectedAssembly)
            {
                failure = $"The GenAI managed assembly is '{assembly.GetName().Name}', not {ExpectedAssembly}.";
                return null;
            }

            var field = typeof(Generator).GetField("_generatorHandle", BindingFlags.Instance | BindingFlags.NonPublic);
            if (field is null || field.FieldType != typeof(IntPtr))
            {
                failure = "Generator has no IntPtr field _generatorHandle (another GenAI version).";
                return null;
            }

            if (!NativeLibrary.TryLoad("onnxruntime-genai", assembly, null, out var library))
            {
                failure = "The GenAI native library (onnxruntime-genai) could not be loaded.";
                return null;
            }

            IntPtr Export(string name) => NativeLibrary.TryGetExport(library, name, out var address)
                ? address
                : throw new EntryPointNotFoundException($"The GenAI native library exports no {name}.");

            var functions = new Functions(
                (delegate* unmanaged<IntPtr, IntPtr*, IntPtr>)Export("OgaGenerator_GetLogits"),
                (delegate* unmanaged<IntPtr, int*, IntPtr>)Export("OgaTensorGetType"),
                (delegate* unmanaged<IntPtr, nuint*, IntPtr>)Export("OgaTensorGetShapeRank"),
                (delegate* unmanaged<IntPtr, long*, nuint, IntPtr>)Export("OgaTensorGetShape"),
                (delegate* unmanaged<IntPtr, void**, IntPtr>)Export("OgaTensorGetData"),
                (delegate* unmanaged<IntPtr, void>)Export("OgaDestroyTensor"),
                (delegate* unmanaged<IntPtr, IntPtr>)Export("OgaResultGetError"),
                (delegate* unmanaged<IntPtr, void>)Export("OgaDestroyResult"));
            failure = null;
            return functions;
        }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException or BadImageFormatException)
        {
            failure = e.Message;
            return null;
        }
    }

    /// <summary>The C functions used, from <c>ort_genai_c.h</c>.</summary>
    private sealed class Functions(
        delegate* unmanaged<IntPtr, IntPtr*, IntPtr> getLogits,
        delegate* unmanaged<IntPtr, int*, IntPtr> getType,
        delegate* unmanaged<IntPtr, nuint*, IntPtr> getShapeRank,
        delegate* unmanaged<IntPtr, long*, nuint, IntPtr> getShape,
        delegate* unmanaged<IntPtr, void**, IntPtr> getData,
        delegate* unmanaged<IntPtr, void> destroyTensor,
        delegate* unmanaged<IntPtr, IntPtr> resultGetError,
        delegate* unmanaged<IntPtr, void> destroyResult)
    {
        public delegate* unmanaged<IntPtr, IntPtr*, IntPtr> GetLogits { get; } = getLogits;

        public delegate* unmanaged<IntPtr, int*, IntPtr> GetElementType { get; } = getType;

        public delegate* unmanaged<IntPtr, nuint*, IntPtr> GetShapeRank { get; } = getShapeRank;

        public delegate* unmanaged<IntPtr, long*, nuint, IntPtr> GetShape { get; } = getShape;

        public delegate* unmanaged<IntPtr, void**, IntPtr> GetData { get; } = getData;

        public delegate* unmanaged<IntPtr, void> DestroyTensor { get; } = destroyTensor;

        public delegate* unmanaged<IntPtr, IntPtr> ResultGetError { get; } = resultGetError;

        public delegate* unmanaged<IntPtr, void> DestroyResult { get; } = destroyResult;
    }
}
