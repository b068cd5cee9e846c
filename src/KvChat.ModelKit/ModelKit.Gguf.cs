namespace KvChat.ModelKit;

/// <summary>The GGUF file the kit writes beside the GenAI folder when <see cref="ModelKitOptions.WriteGguf"/> is set.</summary>
public static partial class ModelKit
{
    /// <summary>The name of the GGUF file in the model folder (llama.cpp's format: same network, weights and tokenizer).</summary>
    public const string GgufFileName = GgufExport.FileName;
}
