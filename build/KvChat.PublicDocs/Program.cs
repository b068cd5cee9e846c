using System.Reflection;
using System.Reflection.Metadata;
using System.Reflection.PortableExecutable;
using System.Xml.Linq;

// Keeps the XML docs of the public API only: the compiler writes docs for every documented member, internal ones
// included, and a package's docs describe what its users can see (public types and their public or protected members).
// Hand-written: no package does this. The doc ids of the file are matched against the assembly's metadata: a type by its
// full name, a member by its type, name and number of parameters. Idempotent.
if (args.Length != 2)
{
    Console.Error.WriteLine("usage: KvChat.PublicDocs ASSEMBLY DOCUMENTATION.xml");
    return 2;
}

var assemblyPath = args[0];
var documentation = args[1];
if (!File.Exists(documentation) || !File.Exists(assemblyPath))
{
    return 0;
}

var types = new HashSet<string>(StringComparer.Ordinal);
var members = new HashSet<string>(StringComparer.Ordinal); // "Type|Name|ParameterCount", count -1 for any
using (var stream = File.OpenRead(assemblyPath))
using (var pe = new PEReader(stream))
{
    var md = pe.GetMetadataReader();
    Func<TypeDefinition, string> nameOf = null!;
    nameOf = t =>
    {
        var name = md.GetString(t.Name);
        var outer = t.GetDeclaringType();
        return outer.IsNil ? (t.Namespace.IsNil ? name : md.GetString(t.Namespace) + "." + name) : nameOf(md.GetTypeDefinition(outer)) + "." + name;
    };
    Func<TypeDefinition, bool> visible = null!;
    visible = t =>
    {
        var v = t.Attributes & TypeAttributes.VisibilityMask;
        var outer = t.GetDeclaringType();
        if (outer.IsNil)
        {
            return v == TypeAttributes.Public;
        }

        return (v == TypeAttributes.NestedPublic || v == TypeAttributes.NestedFamily || v == TypeAttributes.NestedFamORAssem)
            && visible(md.GetTypeDefinition(outer));
    };
    Func<MethodAttributes, bool> seen = a =>
    {
        var access = a & MethodAttributes.MemberAccessMask;
        return access == MethodAttributes.Public || access == MethodAttributes.Family || access == MethodAttributes.FamORAssem;
    };
    Func<MethodDefinitionHandle, int> parameterCount = h =>
    {
        var reader = md.GetBlobReader(md.GetMethodDefinition(h).Signature);
        var header = reader.ReadSignatureHeader();
        if (header.IsGeneric)
        {
            reader.ReadCompressedInteger();
        }

        return reader.ReadCompressedInteger();
    };
    foreach (var handle in md.TypeDefinitions)
    {
        var type = md.GetTypeDefinition(handle);
        if (!visible(type))
        {
            continue;
        }

        var typeName = nameOf(type);
        types.Add(typeName);
        foreach (var m in type.GetMethods())
        {
            var method = md.GetMethodDefinition(m);
            if (seen(method.Attributes))
            {
                members.Add(typeName + "|" + md.GetString(method.Name).Replace('.', '#') + "|" + parameterCount(m));
            }
        }

        foreach (var p in type.GetProperties())
        {
            var property = md.GetPropertyDefinition(p);
            var accessors = property.GetAccessors();
            if ((!accessors.Getter.IsNil && seen(md.GetMethodDefinition(accessors.Getter).Attributes))
                || (!accessors.Setter.IsNil && seen(md.GetMethodDefinition(accessors.Setter).Attributes)))
            {
                members.Add(typeName + "|" + md.GetString(property.Name) + "|-1");
            }
        }

        foreach (var e in type.GetEvents())
        {
            var ev = md.GetEventDefinition(e);
            var adder = ev.GetAccessors().Adder;
            if (!adder.IsNil && seen(md.GetMethodDefinition(adder).Attributes))
            {
                members.Add(typeName + "|" + md.GetString(ev.Name) + "|-1");
            }
        }

        foreach (var f in type.GetFields())
        {
            var field = md.GetFieldDefinition(f);
            var access = field.Attributes & FieldAttributes.FieldAccessMask;
            if (access == FieldAttributes.Public || access == FieldAttributes.Family || access == FieldAttributes.FamORAssem)
            {
                members.Add(typeName + "|" + md.GetString(field.Name) + "|-1");
            }
        }
    }
}

Func<string, bool> keep = id =>
{
    if (id.Length < 3 || id[1] != ':')
    {
        return false;
    }

    var body = id.Substring(2);
    if (id[0] == 'T')
    {
        return types.Contains(body);
    }

    var open = body.IndexOf('(');
    var head = open < 0 ? body : body.Substring(0, open);
    var tilde = head.IndexOf('~');
    if (tilde >= 0)
    {
        head = head.Substring(0, tilde);
    }

    var dot = head.LastIndexOf('.');
    if (dot < 0)
    {
        return false;
    }

    var typeName = head.Substring(0, dot);
    var name = head.Substring(dot + 1);
    var arity = name.IndexOf("``", StringComparison.Ordinal);
    if (arity >= 0)
    {
        name = name.Substring(0, arity);
    }

    if (!types.Contains(typeName))
    {
        return false;
    }

    if (id[0] != 'M')
    {
        return members.Contains(typeName + "|" + name + "|-1");
    }

    var count = 0;
    if (open >= 0)
    {
        var depth = 0;
        var any = false;
        foreach (var c in body.Substring(open + 1))
        {
            if (c == '(' || c == '{' || c == '[') depth++;
            else if (c == ')' || c == '}' || c == ']') { if (depth == 0) break; depth--; }
            else if (c == ',' && depth == 0) count++;
            any = true;
        }

        count = any ? count + 1 : 0;
    }

    return members.Contains(typeName + "|" + name + "|" + count);
};

var document = XDocument.Load(documentation, LoadOptions.PreserveWhitespace);
var all = document.Root!.Element("members")!.Elements("member").ToList();
var dropped = 0;
foreach (var member in all)
{
    if (!keep((string?)member.Attribute("name") ?? ""))
    {
        member.Remove();
        dropped++;
    }
}

if (dropped > 0)
{
    document.Save(documentation);
    Console.WriteLine($"KeepPublicXmlDocs: dropped {dropped} of {all.Count} members from {documentation}");
}
  

return 0;
