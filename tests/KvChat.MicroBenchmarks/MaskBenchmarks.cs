using System.Text;
using System.Text.Json;
using BenchmarkDotNet.Attributes;

namespace KvChat.MicroBenchmarks;

/// <summary>
/// The JSON-schema token mask (<see cref="GrammarConstraint.Mask"/>) per token, on real vocabularies of 32,000
/// (Llama 2) and 151,936 (Qwen3) logits (<see cref="MaskVocabularies"/>), in the states a reply passes through, and
/// averaged over a whole reply; against the greedy pick over the same logits, which every decode step pays anyway.
/// </summary>
/// <remarks>
/// The reply is a 150-byte object with nested objects, an array, an integer, escapes and CJK text, tokenized by the
/// longest allowed token at each step (close to what the tokenizer itself gives); <c>reply, per token</c> is the mean of
/// Mask + Accept over its tokens (the count is printed at setup).
/// </remarks>
[MemoryDiagnoser]
public class MaskBenchmarks
{
    private const string Schema = """
        {"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer","minimum":0,"maximum":150},
         "tags":{"type":"array","items":{"type":"string"}},"address":{"type":"object","properties":{"city":{"type":"string"},"zip":{"type":"string"}},"required":["city","zip"]},
         "note":{"type":["string","null"]}},"required":["name","age","tags","address","note"],"additionalProperties":false}
        """;

    private const string Reply = """{"name":"Zoë Smith","age":42,"tags":["admin","ops"],"address":{"city":"Paris","zip":"75001"},"note":"Enjoys 日本 food, says \"hi\"\n"}""";

    private ConstraintVocabulary _vocabulary = null!;
    private GrammarNode _grammar = null!;
    private float[] _logits = null!;
    private float[] _source = null!;
    private int[] _tokens = null!;
    private GrammarConstraint _inString = null!;
    private GrammarConstraint _atKey = null!;
    private GrammarConstraint _inNumber = null!;
    private LogitSampler _greedy = null!;

    [Params(MaskVocabularies.Llama2, MaskVocabularies.Qwen3)]
    public string Vocabulary { get; set; } = MaskVocabularies.Llama2;

    [GlobalSetup]
    public void Setup()
    {
        var (json, size) = MaskVocabularies.Get(Vocabulary);
        var eos = Vocabulary == MaskVocabularies.Qwen3 ? new[] { 151645, 151643 } : [2];
        _vocabulary = new ConstraintVocabulary(TokenBytes.Read(json, size), eos);
        using var schema = JsonDocument.Parse(Schema);
        _grammar = JsonSchemaGrammar.Compile(schema.RootElement);
        _source = new float[size];
        var random = new Random(3);
#pragma warning disable CA5394 // Benchmark data, not a secret.
        for (var i = 0; i < size; i++)
        {
            _source[i] = (float)random.NextDouble();
        }
#pragma warning restore CA5394
        _logits = new float[size];
        _greedy = new LogitSampler(SamplingSettings.Greedy, size);
        _tokens = Tokenize(Reply);
        Console.WriteLine($"// {Vocabulary}: the reply is {_tokens.Length} tokens; {_vocabulary.PlainStringCount} plain-string tokens, trie {_vocabulary.All.NodeCount} nodes, not-plain trie {_vocabulary.NotPlainString.NodeCount}");
        _inString = After("{\"name\":\"Zo");
        _atKey = After("{\"name\":\"Zoë Smith\",");
        _inNumber = After("{\"name\":\"Zoë Smith\",\"age\":4");
    }

    [Benchmark(Baseline = true, Description = "greedy pick alone")]
    public int Greedy()
    {
        _source.CopyTo(_logits, 0);
        return _greedy.Next(_logits);
    }

    [Benchmark(Description = "mask, inside a string")]
    public int InString() => MaskAndPick(_inString);

    [Benchmark(Description = "mask, at a key")]
    public int AtKey() => MaskAndPick(_atKey);

    [Benchmark(Description = "mask, inside a number")]
    public int InNumber() => MaskAndPick(_inNumber);

    [Benchmark(Description = "reply, whole (divide by its tokens)")]
    public int WholeReply()
    {
        var constraint = new GrammarConstraint(_grammar, _vocabulary);
        foreach (var token in _tokens)
        {
            _source.CopyTo(_logits, 0);
            constraint.Mask(_logits);
            constraint.Accept(token);
        }

        return constraint.LastAllowedCount;
    }

    private int MaskAndPick(GrammarConstraint constraint)
    {
        _source.CopyTo(_logits, 0);
        constraint.Mask(_logits);
        return _greedy.Next(_logits);
    }

    private GrammarConstraint After(string prefix)
    {
        var constraint = new GrammarConstraint(_grammar, _vocabulary);
        foreach (var token in Tokenize(prefix, complete: false))
        {
            constraint.Accept(token);
        }

        return constraint;
    }

    /// <summary>The longest allowed token that the remaining text starts with, step by step.</summary>
    private int[] Tokenize(string text, bool complete = true)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        var constraint = new GrammarConstraint(_grammar, _vocabulary);
        var tokens = new List<int>();
        var position = 0;
        while (position < bytes.Length)
        {
            var best = -1;
            for (var id = 0; id < _vocabulary.Count; id++)
            {
                var t = _vocabulary.Bytes[id];
                if (t.Length > 0 && (best < 0 || t.Length > _vocabulary.Bytes[best].Length) && bytes.AsSpan(position).StartsWith(t) && constraint.Allows(t))
                {
                    best = id;
                }
            }

            constraint.Accept(best);
            tokens.Add(best);
            position += _vocabulary.Bytes[best].Length;
        }

        return complete && !constraint.IsComplete ? throw new InvalidOperationException("The reply does not complete the schema.") : [.. tokens];
    }
}
