using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace KvChat;

/// <summary>
/// Validates the <see cref="KvChatClientOptions"/> of one dependency-injection registration: <see cref="KvChatClientOptions.ModelPath"/>
/// must name a folder that exists and holds <c>genai_config.json</c>. (Numbers are checked by the options' setters and
/// by the configuration binder; the context length against the model by the client's constructor.)
/// </summary>
internal sealed class KvChatClientOptionsValidator : IValidateOptions<KvChatClientOptions>
{
    private readonly string _name;
    private readonly string _modelPathSetting;

    private KvChatClientOptionsValidator(string name, string? configurationPath)
    {
        _name = name;
        _modelPathSetting = configurationPath is null ? "KvChatClientOptions.ModelPath"
            : configurationPath.Length == 0 ? "ModelPath"
            : configurationPath + ":ModelPath";
    }

    /// <summary>Adds the validator of the options named <paramref name="name"/>, unless one is registered already.</summary>
    /// <param name="services">The service collection.</param>
    /// <param name="name">The options name.</param>
    /// <param name="configurationPath">The path of the configuration section the options are bound from, to name settings by; <see langword="null"/> for none.</param>
    public static void AddTo(IServiceCollection services, string name, string? configurationPath)
    {
        foreach (var descriptor in services)
        {
            if (descriptor.ServiceType == typeof(IValidateOptions<KvChatClientOptions>)
                && !descriptor.IsKeyedService
                && descriptor.ImplementationInstance is KvChatClientOptionsValidator existing
                && existing._name == name)
            {
                return;
            }
        }

        services.AddSingleton<IValidateOptions<KvChatClientOptions>>(new KvChatClientOptionsValidator(name, configurationPath));
    }

    /// <inheritdoc/>
    public ValidateOptionsResult Validate(string? name, KvChatClientOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (!string.Equals(name ?? Options.DefaultName, _name, StringComparison.Ordinal))
        {
            return ValidateOptionsResult.Skip;
        }

        var path = options.ModelPath;
        if (string.IsNullOrWhiteSpace(path))
        {
            return ValidateOptionsResult.Fail(
                $"{_modelPathSetting} is missing: set it to a GenAI model folder (genai_config.json, tokenizer.json and the ONNX model).");
        }

        if (!Directory.Exists(path))
        {
            return ValidateOptionsResult.Fail($"{_modelPathSetting} '{path}' is not a folder that exists.");
        }

        if (!File.Exists(Path.Combine(path, "genai_config.json")))
        {
            return ValidateOptionsResult.Fail($"{_modelPathSetting} '{path}' holds no genai_config.json: it is not a GenAI model folder.");
        }

        if (options.PrefixCacheDirectory is not null && options.SessionBackend == KvSessionBackend.Generator)
        {
            return ValidateOptionsResult.Fail(
                "PrefixCacheDirectory is set but SessionBackend is Generator: GenAI generators cannot save or load their KV, so prefixes cannot be kept on disk. Set SessionBackend to Auto or Owned, or leave PrefixCacheDirectory unset.");
        }

        return ValidateOptionsResult.Success;
    }
}
