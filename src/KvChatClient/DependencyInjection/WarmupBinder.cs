using System.Globalization;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration;

namespace KvChat;

/// <summary>
/// Binds <see cref="KvChatClientOptions.WarmupPrompts"/> from the <c>Warmup</c> section of the options' configuration.
/// </summary>
/// <remarks>
/// Each item of the section is one prefix to prefill and pin:
/// <list type="bullet">
/// <item><description>a string, or an object <c>{ "System": "..." }</c>: one system message;</description></item>
/// <item><description>
/// an array of messages <c>[ { "Role": "system", "Content": "..." }, { "Role": "user", "Content": "..." } ]</c>
/// (roles system, user, assistant), or an object <c>{ "Messages": [ ... ] }</c> holding that array.
/// </description></item>
/// </list>
/// Every key that is none of these is an error naming its configuration path. Microsoft.Extensions.Configuration's
/// binder cannot build <see cref="ChatMessage"/> lists (no settable role and text from keys) nor name the bad key.
/// </remarks>
internal static class WarmupBinder
{
    /// <summary>The keys of the section (case-insensitive).</summary>
    public static readonly HashSet<string> Names = new(["Warmup", nameof(KvChatClientOptions.WarmupPrompts)], StringComparer.OrdinalIgnoreCase);

    /// <summary>Adds the section's prefixes to <paramref name="prompts"/>; returns the errors (one sentence each), or null.</summary>
    public static string? Bind(IConfigurationSection section, IList<IReadOnlyList<ChatMessage>> prompts)
    {
        List<string> errors = [];
        if (section.Value is { Length: > 0 })
        {
            errors.Add($"{section.Path} must be a list of prefixes (each a system prompt or a message list), not a single value.");
        }

        foreach (var item in Ordered(section))
        {
            if (ReadPrompt(item, errors) is { } prompt)
            {
                prompts.Add(prompt);
            }
        }

        return errors.Count == 0 ? null : string.Join(" ", errors);
    }

    private static ChatMessage[]? ReadPrompt(IConfigurationSection item, List<string> errors)
    {
        if (item.Value is { } text)
        {
            return Text(item, text, errors) is { } system ? [new ChatMessage(ChatRole.System, system)] : null;
        }

        var children = item.GetChildren().ToList();
        if (children.Count > 0 && children.All(c => IsIndex(c.Key)))
        {
            return ReadMessages(item, errors);
        }

        if (children.Count == 1 && children[0].Key.Equals("System", StringComparison.OrdinalIgnoreCase))
        {
            return Text(children[0], children[0].Value, errors) is { } system ? [new ChatMessage(ChatRole.System, system)] : null;
        }

        if (children.Count == 1 && children[0].Key.Equals("Messages", StringComparison.OrdinalIgnoreCase))
        {
            return ReadMessages(children[0], errors);
        }

        errors.Add($"{item.Path} must be a system prompt (a string or {{ \"System\": \"...\" }}) or a message list ([ {{ \"Role\": \"system\", \"Content\": \"...\" }} ] or {{ \"Messages\": [...] }}).");
        return null;
    }

    private static ChatMessage[]? ReadMessages(IConfigurationSection list, List<string> errors)
    {
        var messages = new List<ChatMessage>();
        var failed = false;
        foreach (var entry in Ordered(list))
        {
            string? role = null;
            string? content = null;
            foreach (var field in entry.GetChildren())
            {
                if (field.Key.Equals("Role", StringComparison.OrdinalIgnoreCase))
                {
                    role = field.Value;
                }
                else if (field.Key.Equals("Content", StringComparison.OrdinalIgnoreCase) || field.Key.Equals("Text", StringComparison.OrdinalIgnoreCase))
                {
                    content = field.Value;
                }
                else
                {
                    errors.Add($"{field.Path} is not a message field; a message has Role and Content.");
                    failed = true;
                }
            }

            var known = Role(role);
            if (known is null)
            {
                errors.Add($"{entry.Path}:Role is {OptionErrors.Format(role)}; it must be system, user or assistant.");
                failed = true;
            }

            if (Text(entry, content, errors, ":Content") is not { } text)
            {
                failed = true;
            }
            else if (known is { } r)
            {
                messages.Add(new ChatMessage(r, text));
            }
        }

        if (messages.Count == 0 && !failed)
        {
            errors.Add($"{list.Path} holds no messages.");
        }

        return failed || messages.Count == 0 ? null : [.. messages];
    }

    private static string? Text(IConfigurationSection at, string? text, List<string> errors, string suffix = "")
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            errors.Add($"{at.Path}{suffix} is empty; a warm-up message needs text.");
            return null;
        }

        return text;
    }

    private static ChatRole? Role(string? name)
    {
        foreach (var role in new[] { ChatRole.System, ChatRole.User, ChatRole.Assistant })
        {
            if (string.Equals(name?.Trim(), role.Value, StringComparison.OrdinalIgnoreCase))
            {
                return role;
            }
        }

        return null;
    }

    private static bool IsIndex(string key) => int.TryParse(key, NumberStyles.None, CultureInfo.InvariantCulture, out _);

    // Configuration orders keys as strings with numbers compared as numbers; sort explicitly so "10" follows "9".
    private static IEnumerable<IConfigurationSection> Ordered(IConfigurationSection section)
        => section.GetChildren().OrderBy(c => IsIndex(c.Key) ? int.Parse(c.Key, CultureInfo.InvariantCulture) : int.MaxValue);
}
