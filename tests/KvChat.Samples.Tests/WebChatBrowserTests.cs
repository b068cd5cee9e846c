using System.Text.Json;
using KvChat.HostingSample;
using KvChat.ModelKit;
using KvChat.Testing;
using OpenQA.Selenium;
using OpenQA.Selenium.Chrome;
using OpenQA.Selenium.Support.UI;
using Xunit;

namespace KvChat.Samples.Tests;

/// <summary>
/// The hosting sample's web chat in a real headless browser: Debian's <c>chromium</c> driven through its
/// <c>chromium-driver</c> by Selenium (<c>.ci/run</c> installs both when they are missing; nothing is downloaded).
/// </summary>
public sealed class WebChatBrowserTests
{
    public const string Chromium = "/usr/bin/chromium";
    public const string ChromeDriver = "/usr/bin/chromedriver";

    /// <summary>What the page's model says, so that the screenshot reads as a conversation.</summary>
    public const string Reply = "A KV cache keeps the keys and values of every token the model has read, so the next turn computes only the new tokens.";

    /// <summary>What the reasoning model reasons before it answers; its markup must reach the page as text.</summary>
    public const string Thought = "The user asks about <b>caches</b> & reuse, so I explain <img src=x onerror=alert(1)> why it helps.";

    /// <summary>What the reasoning model answers after its reasoning.</summary>
    public const string Answer = "Reusing the <i>KV</i> cache means the next turn prefills only its new tokens.";

    private static CancellationToken Cancel => TestContext.Current.CancellationToken;

    [Fact]
    public async Task TwoMessages_BothRepliesStream_TurnTwoReportsCachedTokens_Screenshot()
    {
        var model = TestModels.PathOf(ModelKitOptions.Tiny with { Script = Reply });
        await OnPageAsync(model, "kit-tiny-scripted", "web-chat.png", (driver, wait) =>
        {
            var first = Ask(driver, wait, "What is a KV cache?", turn: 1, Reply);
            var second = Ask(driver, wait, "Why does reusing it help?", turn: 2, Reply);
            Assert.Empty(driver.FindElements(By.CssSelector(".thinking"))); // a plain model's turns have no thinking block
            Assert.DoesNotContain("reasoning_content", (string)driver.ExecuteScript("return JSON.stringify(history)")!, StringComparison.Ordinal);

            Assert.Equal(0, first.Cached);
            Assert.Equal(first.Prompt, first.Prefilled);
            Assert.True(second.Cached >= first.Prompt, $"turn 2 cached {second.Cached}; turn 1's prompt was {first.Prompt}");
            Assert.Equal(second.Prompt, second.Cached + second.Prefilled);
            TestContext.Current.TestOutputHelper?.WriteLine($"web chat, turn 2: prompt {second.Prompt}, cached {second.Cached}, prefilled {second.Prefilled}, first token {second.Ttft} ms");
        });
    }

    [Fact]
    public async Task ReasoningModel_ThinkingStreamsAboveTheReplyAsText_AndGoesBackOnlyAsReasoningContent()
    {
        var model = TestModels.PathOf(Qwen3Scripts.Saying(Qwen3Scripts.Encode($"<think>\n{Thought}\n</think>\n\n{Answer}")[0]));
        await OnPageAsync(model, "kit-qwen3-reasoning", "web-chat-reasoning.png", (driver, wait) =>
        {
            // Longer than a block of the prefix index (16 tokens), so that turn 2 can find turn 1 by prefix.
            var first = Ask(driver, wait, "What is a KV cache, and why would a chat server keep one alive between the turns of a conversation?", turn: 1, Answer);
            var second = Ask(driver, wait, "Why does reusing it help?", turn: 2, Answer);
            Assert.True(second.Cached >= first.Prompt, $"turn 2 cached {second.Cached}; turn 1's prompt was {first.Prompt}");

            foreach (var turn in driver.FindElements(By.CssSelector(".turn.assistant")))
            {
                // The thinking block, then the reply, then the usage line; folded once the reply started.
                Assert.Equal(["thinking", "reply", "stats"], turn.FindElements(By.XPath("./*")).Select(e => e.GetAttribute("class")));
                var thinking = turn.FindElement(By.CssSelector(".thinking"));
                Assert.Equal("done", thinking.GetAttribute("data-state"));
                Assert.Null(thinking.GetAttribute("open"));
                Assert.Equal("Thought", thinking.FindElement(By.TagName("summary")).Text);
                var chunks = int.Parse(thinking.GetAttribute("data-chunks") ?? "0", System.Globalization.CultureInfo.InvariantCulture);
                Assert.True(chunks > 1, $"the reasoning arrived in {chunks} piece(s), not streamed");

                // The reasoning's markup is text: the block holds no element the model wrote.
                var thought = thinking.FindElement(By.CssSelector(".thought"));
                Assert.Equal(Thought, thought.GetDomProperty("textContent"));
                Assert.Empty(thought.FindElements(By.XPath("./*")));
                Assert.Empty(turn.FindElement(By.CssSelector(".reply")).FindElements(By.XPath("./*")));
            }

            // Unfolded by a click, the block shows the reasoning.
            var last = driver.FindElements(By.CssSelector(".thinking"))[^1];
            last.FindElement(By.TagName("summary")).Click();
            Assert.Equal(Thought, last.FindElement(By.CssSelector(".thought")).Text);

            // The history the page sends back: the reasoning only as reasoning_content, the content only the answer.
            var history = JsonDocument.Parse((string)driver.ExecuteScript("return JSON.stringify(history)")!).RootElement;
            var assistants = history.EnumerateArray().Where(m => m.GetProperty("role").GetString() == "assistant").ToList();
            Assert.Equal(2, assistants.Count);
            Assert.All(assistants, m =>
            {
                Assert.Equal(Answer, m.GetProperty("content").GetString());
                Assert.Equal(Thought, m.GetProperty("reasoning_content").GetString());
            });
            TestContext.Current.TestOutputHelper?.WriteLine($"web chat, reasoning model, turn 2: prompt {second.Prompt}, cached {second.Cached}, prefilled {second.Prefilled}");
        });
    }

    /// <summary>
    /// Runs the hosting sample on <paramref name="model"/>, opens its page in Chromium, waits until it is ready and shows
    /// <paramref name="modelId"/>, runs <paramref name="body"/>, then saves a screenshot to the test output folder.
    /// </summary>
    private static async Task OnPageAsync(string model, string modelId, string screenshotName, Action<ChromeDriver, WebDriverWait> body)
    {
        Assert.True(File.Exists(Chromium) && File.Exists(ChromeDriver),
            $"{Chromium} and {ChromeDriver} are needed: apt-get install -y chromium chromium-driver (.ci/run does it).");
        await using var app = HostingApp.Build(
            ["--urls", "http://127.0.0.1:0", "--Logging:Console:LogLevel:Default=None", $"--KvChat:ModelPath={model}", $"--KvChat:ModelId={modelId}"]);
        await app.StartAsync(Cancel);

        var profile = Directory.CreateTempSubdirectory("kvchat-chromium-");
        try
        {
            using var driver = StartChromium(profile.FullName);
            driver.Navigate().GoToUrl(app.Urls.Single() + "/");
            var wait = new WebDriverWait(driver, TimeSpan.FromSeconds(60));
            wait.Until(d => d.FindElement(By.TagName("body")).GetAttribute("data-ready") == "true");
            Assert.Equal(modelId, driver.FindElement(By.Id("model")).Text);
            body(driver, wait);

            var screenshot = Path.Combine(AppContext.BaseDirectory, screenshotName);
            ((ITakesScreenshot)driver).GetScreenshot().SaveAsFile(screenshot);
            Assert.True(new FileInfo(screenshot).Length > 10_000);
            TestContext.Current.TestOutputHelper?.WriteLine($"screenshot: {screenshot}");
        }
        finally
        {
            profile.Delete(recursive: true);
            await app.StopAsync(Cancel);
        }
    }

    private sealed record TurnStats(int Prompt, int Cached, int Prefilled, int Ttft);

    /// <summary>Types a message, sends it with Enter, waits for the streamed reply and reads the line under it.</summary>
    private static TurnStats Ask(ChromeDriver driver, WebDriverWait wait, string message, int turn, string expectedReply)
    {
        driver.FindElement(By.Id("input")).SendKeys(message + Keys.Enter);
        var reply = wait.Until(d =>
        {
            var replies = d.FindElements(By.CssSelector(".reply"));
            return replies.Count == turn && replies[^1].GetAttribute("data-state") is "done" or "error" ? replies[^1] : null;
        });
        Assert.Equal("done", reply.GetAttribute("data-state"));
        Assert.Equal(expectedReply, reply.Text);
        var chunks = int.Parse(reply.GetAttribute("data-chunks") ?? "0", System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(chunks > 1, $"reply {turn} arrived in {chunks} piece(s), not streamed");

        var stats = driver.FindElements(By.CssSelector(".stats"))[^1];
        Assert.Matches(@"^prompt \d+ · cached \d+ · prefilled \d+ · first token \d+ ms · \d+ reply tokens$", stats.Text);
        int Read(string name) => int.Parse(stats.GetAttribute("data-" + name)!, System.Globalization.CultureInfo.InvariantCulture);
        return new TurnStats(Read("prompt"), Read("cached"), Read("prefilled"), Read("ttft"));
    }

    private static ChromeDriver StartChromium(string profile)
    {
        var options = new ChromeOptions { BinaryLocation = Chromium };
        options.AddArguments(
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=960,720", $"--user-data-dir={profile}");
        var service = ChromeDriverService.CreateDefaultService(Path.GetDirectoryName(ChromeDriver)!, Path.GetFileName(ChromeDriver));
        service.HideCommandPromptWindow = true;
        service.SuppressInitialDiagnosticInformation = true;
        return new ChromeDriver(service, options, TimeSpan.FromSeconds(60));
    }
}
