using System.Globalization;
using System.Reflection;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Options;

namespace KvChat;

/// <summary>
/// Binds <see cref="KvChatClientOptions"/> from a configuration section, one setting at a time, so that every error
/// names its setting: a value that does not parse, a value a setter rejects (out of range), a key that is no setting.
/// </summary>
/// <remarks>
/// The options' setters validate their values; the configuration binder of Microsoft.Extensions.Configuration would
/// surface their exceptions as a bare <see cref="TargetInvocationException"/>. Settings are the public writable
/// properties of type string, int, long, bool or an enum (nullable or not); the logger and meter factories come from
/// code or the container.
/// </remarks>
internal static class KvChatClientOptionsBinder
{
    private static readonly Dictionary<string, PropertyInfo> Settings = typeof(KvChatClientOptions)
        .GetProperties(BindingFlags.Public | BindingFlags.Instance)
        .Where(p => p.CanWrite && IsSupported(p.PropertyType))
        .ToDictionary(p => p.Name, StringComparer.OrdinalIgnoreCase);

    /// <summary>Sets the options from the keys of <paramref name="configuration"/>.</summary>
    /// <exception cref="OptionsValidationException">One or more keys could not be applied; the failures name them all.</exception>
    public static void Bind(IConfiguration configuration, KvChatClientOptions options, string optionsName)
    {
        var isSection = configuration is IConfigurationSection;
        List<string>? errors = null;
        foreach (var child in configuration.GetChildren())
        {
            if (Apply(child, options, isSection) is { } error)
            {
                (errors ??= []).Add(error);
            }
        }

        if (errors is not null)
        {
            throw new OptionsValidationException(optionsName, typeof(KvChatClientOptions), errors);
        }
    }

    private static string? Apply(IConfigurationSection setting, KvChatClientOptions options, bool strict)
    {
        if (WarmupBinder.Names.Contains(setting.Key))
        {
            return WarmupBinder.Bind(setting, options.WarmupPrompts);
        }

        if (!Settings.TryGetValue(setting.Key, out var property))
        {
            return strict
                ? $"{setting.Path} is not a KvChatClientOptions setting; the settings are {string.Join(", ", Settings.Keys)}, Warmup."
                : null;
        }

        if (setting.Value is not { } text)
        {
            return setting.GetChildren().Any() ? $"{setting.Path} must be a single value, not a section." : null;
        }

        object? value;
        try
        {
            value = Parse(text, property.PropertyType);
        }
        catch (FormatException)
        {
            return $"{setting.Path} = '{text}' is not {Describe(property.PropertyType)}.";
        }
        catch (OverflowException)
        {
            return $"{setting.Path} = '{text}' is out of range for {Describe(property.PropertyType)}.";
        }

        try
        {
            property.SetValue(options, value);
            return null;
        }
        catch (TargetInvocationException e) when (e.InnerException is ArgumentException rejected)
        {
            return $"{setting.Path} = '{text}' is out of range: {Reason(rejected)}";
        }
    }

    private static bool IsSupported(Type type)
    {
        type = Nullable.GetUnderlyingType(type) ?? type;
        return type == typeof(string) || type == typeof(int) || type == typeof(long) || type == typeof(bool) || type.IsEnum;
    }

    private static object? Parse(string text, Type type)
    {
        if (Nullable.GetUnderlyingType(type) is { } underlying)
        {
            if (string.IsNullOrWhiteSpace(text))
            {
                return null;
            }

            type = underlying;
        }

        if (type == typeof(string))
        {
            return text;
        }

        text = text.Trim();
        if (type == typeof(int))
        {
            return int.Parse(text, NumberStyles.Integer, CultureInfo.InvariantCulture);
        }

        if (type == typeof(long))
        {
            return long.Parse(text, NumberStyles.Integer, CultureInfo.InvariantCulture);
        }

        if (type == typeof(bool))
        {
            return bool.Parse(text);
        }

        // Enums by name only: a number would set values the enum does not define.
        if (!text.AsSpan().ContainsAnyInRange('0', '9') && Enum.TryParse(type, text, ignoreCase: true, out var member) && Enum.IsDefined(type, member))
        {
            return member;
        }

        throw new FormatException();
    }

    private static string Describe(Type type)
    {
        type = Nullable.GetUnderlyingType(type) ?? type;
        return type == typeof(int) ? "an integer (Int32)"
            : type == typeof(long) ? "an integer (Int64)"
            : type == typeof(bool) ? "true or false"
            : $"one of {string.Join(", ", Enum.GetNames(type))}";
    }

    /// <summary>
    /// What the setter requires, from its message "KvChatClientOptions.MaxSessions is 0; it must be at least 1."
    /// (<see cref="OptionErrors"/>): "it must be at least 1." (the setting and the value are already named).
    /// </summary>
    private static string Reason(ArgumentException rejected)
    {
        var message = rejected.Message;
        var cut = message.IndexOf(" (Parameter '", StringComparison.Ordinal);
        if (cut >= 0)
        {
            message = message[..cut];
        }

        var requirement = message.IndexOf("; it must be ", StringComparison.Ordinal);
        if (requirement >= 0)
        {
            message = message[(requirement + 2)..];
        }

        return message.EndsWith('.') ? message : message + ".";
    }
}
