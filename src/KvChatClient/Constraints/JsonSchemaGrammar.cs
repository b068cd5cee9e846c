using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace KvChat;

/// <summary>
/// Compiles a JSON schema into a <see cref="GrammarNode"/> graph: the subset that <c>AIJsonUtilities.CreateJsonSchema</c>
/// and Microsoft.Extensions.AI emit for .NET types (see <see cref="Supported"/>). Any other keyword is a
/// <see cref="NotSupportedException"/> that names it, so the caller can fall back or fail loudly; nothing is dropped.
/// </summary>
/// <remarks>
/// Stricter than the schema in a few harmless ways, all of them valid JSON the schema accepts: whitespace is exactly the
/// chosen <see cref="JsonWhitespace"/>; numbers have no exponent, at most 15 integer and 12 fraction digits;
/// <c>\u</c> escapes never name a surrogate (characters beyond the BMP are raw UTF-8); keys are never repeated;
/// <c>enum</c> and <c>const</c> values are written in their canonical compact form; an object schema that lists
/// <c>properties</c> and says nothing of <c>additionalProperties</c> gets only the listed ones. <c>oneOf</c> is matched as
/// <c>anyOf</c> (the alternatives MEAI emits are disjoint). <c>format</c> is kept as a plain string.
/// </remarks>
internal sealed class JsonSchemaGrammar
{
    /// <summary>The keywords that shape the grammar.</summary>
    public static readonly string[] Supported =
    [
        "type", "enum", "const", "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
        "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "anyOf", "oneOf",
        "allOf (one schema)", "$ref (local)", "$defs", "definitions",
    ];

    /// <summary>The keywords read as annotations: they never change what is valid (format is kept as a plain string).</summary>
    public static readonly string[] Annotations =
    [
        "$schema", "$id", "$comment", "title", "description", "default", "examples", "readOnly", "writeOnly", "deprecated",
        "format", "contentEncoding", "contentMediaType", "x-*",
    ];

    private static readonly HashSet<string> AnnotationSet =
    [
        "$schema", "$id", "$comment", "title", "description", "default", "examples", "readOnly", "writeOnly", "deprecated",
        "format", "contentEncoding", "contentMediaType", "$defs", "definitions",
    ];

    private static readonly JsonSerializerOptions Canonical = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private readonly JsonElement _root;
    private readonly JsonWhitespace _whitespace;
    private readonly Dictionary<string, ChoiceNode> _refs = new(StringComparer.Ordinal);
    private JsonValueNode? _any;

    private JsonSchemaGrammar(JsonElement root, JsonWhitespace whitespace)
    {
        _root = root;
        _whitespace = whitespace;
    }

    /// <summary>Compiles <paramref name="schema"/>.</summary>
    /// <exception cref="NotSupportedException">A keyword outside the supported subset (named), or a schema no value satisfies.</exception>
    public static GrammarNode Compile(JsonElement schema, JsonWhitespace whitespace = JsonWhitespace.Compact)
        => new JsonSchemaGrammar(schema, whitespace).Node(schema);

    /// <summary>Any JSON value (the schema <c>true</c>).</summary>
    public static GrammarNode AnyValue(JsonWhitespace whitespace) => new JsonSchemaGrammar(default, whitespace).Any();

    private JsonValueNode Any()
    {
        if (_any is null)
        {
            _any = new JsonValueNode { Whitespace = _whitespace };
            _any.Items = _any;
            _any.AdditionalProperties = _any;
        }

        return _any;
    }

    private static NotSupportedException Unsupported(string keyword, string? detail = null)
        => new($"The JSON schema keyword '{keyword}' is not supported by constrained decoding{(detail is null ? "" : ": " + detail)}.");

    private GrammarNode Node(JsonElement schema)
    {
        switch (schema.ValueKind)
        {
            case JsonValueKind.True:
                return Any();
            case JsonValueKind.False:
                return new ChoiceNode([]);
            case JsonValueKind.Object:
                break;
            default:
                throw new NotSupportedException($"A JSON schema must be an object or a boolean, not {schema.ValueKind}.");
        }

        var constraints = new List<string>();
        foreach (var property in schema.EnumerateObject())
        {
            var name = property.Name;
            if (AnnotationSet.Contains(name) || name.StartsWith("x-", StringComparison.Ordinal))
            {
                continue;
            }

            if (name is not ("type" or "enum" or "const" or "properties" or "required" or "additionalProperties" or "items"
                or "minItems" or "maxItems" or "minLength" or "maxLength" or "minimum" or "maximum" or "exclusiveMinimum"
                or "exclusiveMaximum" or "anyOf" or "oneOf" or "allOf" or "$ref"))
            {
                throw Unsupported(name);
            }

            constraints.Add(name);
        }

        foreach (var combinator in (string[])["$ref", "anyOf", "oneOf", "allOf"])
        {
            if (constraints.Contains(combinator) && constraints.Count > 1)
            {
                throw Unsupported(combinator, $"together with '{constraints.First(c => c != combinator)}' in the same schema");
            }
        }

        if (schema.TryGetProperty("$ref", out var reference))
        {
            return Ref(reference.GetString() ?? throw Unsupported("$ref", "not a string"));
        }

        if (schema.TryGetProperty("anyOf", out var anyOf) || schema.TryGetProperty("oneOf", out anyOf))
        {
            if (anyOf.ValueKind != JsonValueKind.Array)
            {
                throw Unsupported("anyOf", "not an array");
            }

            return new ChoiceNode([.. anyOf.EnumerateArray().Select(Node)]);
        }

        if (schema.TryGetProperty("allOf", out var allOf))
        {
            if (allOf.ValueKind != JsonValueKind.Array || allOf.GetArrayLength() != 1)
            {
                throw Unsupported("allOf", "only an allOf of exactly one schema is supported");
            }

            return Node(allOf[0]);
        }

        var types = Types(schema);
        if (schema.TryGetProperty("const", out var constant))
        {
            return Literals([constant], types);
        }

        if (schema.TryGetProperty("enum", out var values))
        {
            if (values.ValueKind != JsonValueKind.Array)
            {
                throw Unsupported("enum", "not an array");
            }

            return Literals([.. values.EnumerateArray()], types);
        }

        var node = new JsonValueNode { Types = types, Whitespace = _whitespace };
        Strings(schema, node);
        Numbers(schema, node);
        Arrays(schema, node);
        Objects(schema, node);
        return node;
    }

    private static JsonTypes Types(JsonElement schema)
    {
        if (!schema.TryGetProperty("type", out var type))
        {
            return JsonTypes.Any;
        }

        if (type.ValueKind == JsonValueKind.String)
        {
            return TypeOf(type.GetString());
        }

        if (type.ValueKind != JsonValueKind.Array)
        {
            throw Unsupported("type", "not a string or an array of strings");
        }

        var types = JsonTypes.None;
        foreach (var t in type.EnumerateArray())
        {
            types |= TypeOf(t.GetString());
        }

        return types;
    }

    private static JsonTypes TypeOf(string? name) => name switch
    {
        "null" => JsonTypes.Null,
        "boolean" => JsonTypes.Boolean,
        "integer" => JsonTypes.Integer,
        "number" => JsonTypes.Number | JsonTypes.Integer,
        "string" => JsonTypes.String,
        "array" => JsonTypes.Array,
        "object" => JsonTypes.Object,
        _ => throw Unsupported("type", $"unknown type '{name}'"),
    };

    private static LiteralSetNode Literals(JsonElement[] values, JsonTypes types)
    {
        var encoded = new List<byte[]>();
        foreach (var value in values)
        {
            var kind = value.ValueKind switch
            {
                JsonValueKind.Null => JsonTypes.Null,
                JsonValueKind.True or JsonValueKind.False => JsonTypes.Boolean,
                JsonValueKind.Number => value.TryGetInt64(out _) ? JsonTypes.Integer | JsonTypes.Number : JsonTypes.Number,
                JsonValueKind.String => JsonTypes.String,
                JsonValueKind.Array => JsonTypes.Array,
                _ => JsonTypes.Object,
            };
            if ((kind & types) != 0)
            {
                encoded.Add(value.ValueKind == JsonValueKind.Number
                    ? Encoding.UTF8.GetBytes(value.GetRawText())
                    : JsonSerializer.SerializeToUtf8Bytes(value, Canonical));
            }
        }

        return encoded.Count == 0
            ? throw new NotSupportedException("The JSON schema's enum or const has no value of an allowed type: no value can satisfy it.")
            : new LiteralSetNode(ByteTrie.Build(encoded));
    }

    private static int Count(JsonElement schema, string keyword, int fallback)
    {
        if (!schema.TryGetProperty(keyword, out var value))
        {
            return fallback;
        }

        return value.ValueKind == JsonValueKind.Number && value.TryGetDecimal(out var d) && d >= 0 && d == decimal.Truncate(d) && d <= int.MaxValue
            ? (int)d
            : throw Unsupported(keyword, "not a non-negative integer");
    }

    private static decimal? Bound(JsonElement schema, string keyword)
    {
        if (!schema.TryGetProperty(keyword, out var value))
        {
            return null;
        }

        return value.ValueKind == JsonValueKind.Number && value.TryGetDecimal(out var d) ? d : throw Unsupported(keyword, "not a number");
    }

    private static void Strings(JsonElement schema, JsonValueNode node)
    {
        node.MinLength = Count(schema, "minLength", 0);
        node.MaxLength = Count(schema, "maxLength", -1);
        if (node.MaxLength >= 0 && node.MinLength > node.MaxLength && (node.Types & JsonTypes.String) != 0)
        {
            node.Types &= ~JsonTypes.String;
        }
    }

    private static void Numbers(JsonElement schema, JsonValueNode node)
    {
        node.Minimum = Bound(schema, "minimum");
        node.Maximum = Bound(schema, "maximum");
        if (schema.TryGetProperty("exclusiveMinimum", out var exMin))
        {
            if (exMin.ValueKind is JsonValueKind.True or JsonValueKind.False)
            {
                node.ExclusiveMinimum = exMin.ValueKind == JsonValueKind.True && node.Minimum is not null; // Draft 4.
            }
            else if (Bound(schema, "exclusiveMinimum") is { } m && (node.Minimum is not { } current || m >= current))
            {
                (node.Minimum, node.ExclusiveMinimum) = (m, true);
            }
        }

        if (schema.TryGetProperty("exclusiveMaximum", out var exMax))
        {
            if (exMax.ValueKind is JsonValueKind.True or JsonValueKind.False)
            {
                node.ExclusiveMaximum = exMax.ValueKind == JsonValueKind.True && node.Maximum is not null;
            }
            else if (Bound(schema, "exclusiveMaximum") is { } m && (node.Maximum is not { } current || m <= current))
            {
                (node.Maximum, node.ExclusiveMaximum) = (m, true);
            }
        }

        if ((node.Types & JsonTypes.Number) == 0 && (node.Types & JsonTypes.Integer) != 0)
        {
            // Integers: the closed integer bounds.
            if (node.Minimum is { } min)
            {
                node.Minimum = node.ExclusiveMinimum ? decimal.Floor(min) + 1 : decimal.Ceiling(min);
                node.ExclusiveMinimum = false;
            }

            if (node.Maximum is { } max)
            {
                node.Maximum = node.ExclusiveMaximum ? decimal.Ceiling(max) - 1 : decimal.Floor(max);
                node.ExclusiveMaximum = false;
            }
        }

        var limit = 1_000_000_000_000_000m; // 10^15: numbers have at most 15 integer digits.
        if (node.Minimum >= limit || node.Maximum <= -limit)
        {
            throw Unsupported(node.Minimum >= limit ? "minimum" : "maximum", "bounds beyond 15 digits");
        }

        if (node.Minimum is { } lo && node.Maximum is { } hi && (lo > hi || (lo == hi && (node.ExclusiveMinimum || node.ExclusiveMaximum))))
        {
            node.Types &= ~(JsonTypes.Integer | JsonTypes.Number);
        }
    }

    private void Arrays(JsonElement schema, JsonValueNode node)
    {
        node.MinItems = Count(schema, "minItems", 0);
        node.MaxItems = Count(schema, "maxItems", -1);
        if (node.MaxItems >= 0 && node.MinItems > node.MaxItems)
        {
            node.Types &= ~JsonTypes.Array;
        }

        if (schema.TryGetProperty("items", out var items))
        {
            if (items.ValueKind == JsonValueKind.Array)
            {
                throw Unsupported("items", "an array of schemas (a tuple)");
            }

            node.Items = Node(items);
        }
        else
        {
            node.Items = Any();
        }
    }

    private void Objects(JsonElement schema, JsonValueNode node)
    {
        // Listed properties and no word on others: only the listed ones are written (stricter, and what a .NET type
        // reads; a free key would also let a model ramble past the required ones).
        var hasProperties = schema.TryGetProperty("properties", out _);
        node.AdditionalProperties = schema.TryGetProperty("additionalProperties", out var additional) ? Node(additional) : hasProperties ? null : Any();
        if (additional.ValueKind == JsonValueKind.False)
        {
            node.AdditionalProperties = null;
        }

        var names = new List<string>();
        var values = new List<GrammarNode>();
        if (schema.TryGetProperty("properties", out var properties))
        {
            if (properties.ValueKind != JsonValueKind.Object)
            {
                throw Unsupported("properties", "not an object");
            }

            foreach (var property in properties.EnumerateObject())
            {
                names.Add(property.Name);
                values.Add(Node(property.Value));
            }
        }

        var required = 0UL;
        if (schema.TryGetProperty("required", out var requiredNames))
        {
            if (requiredNames.ValueKind != JsonValueKind.Array)
            {
                throw Unsupported("required", "not an array");
            }

            foreach (var name in requiredNames.EnumerateArray().Select(r => r.GetString() ?? throw Unsupported("required", "a name that is not a string")))
            {
                var index = names.IndexOf(name);
                if (index < 0)
                {
                    if (node.AdditionalProperties is null)
                    {
                        node.Types &= ~JsonTypes.Object; // Required but not allowed: no object satisfies it.
                        continue;
                    }

                    index = names.Count;
                    names.Add(name);
                    values.Add(node.AdditionalProperties);
                }

                if (index < 64)
                {
                    required |= 1UL << index;
                }
            }
        }

        if (names.Count > 64)
        {
            throw Unsupported("properties", $"{names.Count} properties; at most 64 are supported");
        }

        node.PropertyNames = [.. names];
        node.PropertyValues = [.. values];
        node.Required = required;
        if (names.Count > 0)
        {
            // A key's bytes after its opening quote: the escaped name, then the closing quote.
            node.Keys = ByteTrie.Build([.. names.Select(n => JsonSerializer.SerializeToUtf8Bytes(n, Canonical)[1..])]);
        }
    }

    private ChoiceNode Ref(string reference)
    {
        if (_refs.TryGetValue(reference, out var known))
        {
            return known;
        }

        if (reference != "#" && !reference.StartsWith("#/", StringComparison.Ordinal))
        {
            throw Unsupported("$ref", $"'{reference}' is not a local reference (# or #/...)");
        }

        var target = _root;
        if (reference.Length > 1)
        {
            foreach (var raw in reference[2..].Split('/'))
            {
                var segment = Uri.UnescapeDataString(raw).Replace("~1", "/", StringComparison.Ordinal).Replace("~0", "~", StringComparison.Ordinal);
                if (target.ValueKind == JsonValueKind.Object && target.TryGetProperty(segment, out var next))
                {
                    target = next;
                }
                else if (target.ValueKind == JsonValueKind.Array && int.TryParse(segment, out var index) && index >= 0 && index < target.GetArrayLength())
                {
                    target = target[index];
                }
                else
                {
                    throw Unsupported("$ref", $"'{reference}' points nowhere in the schema");
                }
            }
        }

        var placeholder = new ChoiceNode([]);
        _refs[reference] = placeholder;
        placeholder.Alternatives = [Node(target)];
        return placeholder;
    }
}
