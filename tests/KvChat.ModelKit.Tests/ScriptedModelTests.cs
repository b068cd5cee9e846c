using KvChat.Testing;
using Microsoft.ML.OnnxRuntimeGenAI;
using Xunit;

namespace KvChat.ModelKit.Tests;

public sealed class ScriptedModelTests
{
    private const string Script = "Sure. <tool_call>\n{\"name\": \"lookup\", \"arguments\": {\"q\": [1, {\"x\": null}]}}\n</tool_call> STOP and more 日本 👍";

    public static TheoryData<ModelVariant, ChatTemplateFamily> AllVariants() => ModelLoadTests.AllVariants();

    [Theory]
    [MemberData(nameof(AllVariants))]
    public void ScriptedModel_Greedy_SaysItsScriptThenStops(ModelVariant variant, ChatTemplateFamily family)
    {
        var kit = TestModels.Get(ModelKitOptions.Tiny with { Variant = variant, TemplateFamily = family, Script = Script });
        using var model = new Model(kit.Directory);
        using var tokenizer = new Tokenizer(model);

        foreach (var messages in new[]
        {
            """[{"role":"user","content":"Hi"}]""",
            """[{"role":"system","content":"A much longer system prompt that moves every position along."},{"role":"user","content":"Hello again, with more words"}]""",
        })
        {
            var prompt = tokenizer.ApplyChatTemplate(null, messages, null, true);
            using var sequences = tokenizer.Encode(prompt);
            var tokens = RawGeneration.FreshGreedy(model, sequences[0], 400);
            Assert.Equal(kit.ScriptTokens(0), tokens);
            Assert.Equal(Script, tokenizer.Decode(tokens.ToArray()));
        }
    }

    [Fact]
    public void ScriptedModel_EncodingTheScript_GivesTheTokensItSays()
    {
        var kit = TestModels.Get(ModelKitOptions.Tiny with { Script = Script });
        using var model = new Model(kit.Directory);
        using var tokenizer = new Tokenizer(model);
        using var sequences = tokenizer.Encode(Script);
        Assert.Equal(kit.ScriptTokens(0), sequences[0].ToArray());
    }

    [Fact]
    public void ScriptByMessageCount_PicksTheReplyForTheMessagesBefore()
    {
        var options = ModelKitOptions.Tiny with
        {
            Script = "default",
            ScriptByMessageCount = new Dictionary<int, string> { [1] = "one message", [3] = "three messages" },
        };
        var kit = TestModels.Get(options);
        using var model = new Model(kit.Directory);
        using var tokenizer = new Tokenizer(model);

        Assert.Equal("one message", Say("""[{"role":"user","content":"a"}]"""));
        Assert.Equal("default", Say("""[{"role":"system","content":"s"},{"role":"user","content":"a"}]"""));
        Assert.Equal("three messages", Say("""[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"}]"""));
        Assert.Equal("default", Say("""[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"},{"role":"assistant","content":"d"},{"role":"user","content":"e"}]"""));

        string Say(string messages)
        {
            using var sequences = tokenizer.Encode(tokenizer.ApplyChatTemplate(null, messages, null, true));
            return tokenizer.Decode(RawGeneration.FreshGreedy(model, sequences[0], 100).ToArray());
        }
    }

    [Theory]
    [InlineData(ModelVariant.GroupQueryAttention)]
    [InlineData(ModelVariant.Concat)]
    public void ScriptedModel_KeptAliveAcrossTurns_SaysTheScriptEveryTurn(ModelVariant variant)
    {
        var kit = TestModels.Get(ModelKitOptions.Tiny with { Variant = variant, Script = "Same again." });
        using var model = new Model(kit.Directory);
        using var tokenizer = new Tokenizer(model);
        using var generator = RawGeneration.NewGenerator(model);
        using var first = tokenizer.Encode("<|im_start|>user\nOne<|im_end|>\n<|im_start|>assistant\n");
        generator.AppendTokens(first[0]);

        for (var turn = 0; turn < 3; turn++)
        {
            var said = new List<int>();
            while (true)
            {
                var before = generator.TokenCount();
                generator.GenerateNextToken();
                if (generator.TokenCount() == before)
                {
                    break;
                }

                said.Add(generator.GetSequence(0)[^1]);
            }

            Assert.Equal("Same again.", tokenizer.Decode(said.ToArray()));

            // End-of-sequence is not in the KV cache: the next turn starts with the end-of-turn marker.
            using var next = tokenizer.Encode($"<|im_end|>\n<|im_start|>user\nTurn {turn}<|im_end|>\n<|im_start|>assistant\n");
            generator.AppendTokens(next[0]);
        }
    }
}
