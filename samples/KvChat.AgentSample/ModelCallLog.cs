using System.Runtime.CompilerServices;
using Microsoft.Extensions.AI;

namespace KvChat.AgentSample;

/// <summary>
/// Middleware under the agent that keeps the usage of every model call. The agent's function invocation sits above it,
/// so a turn that calls tools makes several calls here (one per step), and each step's usage tells what the KV cache
/// served (<see cref="UsageDetails.CachedInputTokenCount"/>) and what was prefilled. MEAI's own middleware sums usage
/// over a turn's calls; none keeps it per call, hence this small class.
/// </summary>
internal sealed class ModelCallLog(IChatClient inner) : DelegatingChatClient(inner)
{
    private readonly List<UsageDetails> _calls = [];
    private readonly Lock _lock = new();

    /// <summary>Returns the usage of each call since the last time, oldest first, and forgets it.</summary>
    public IReadOnlyList<UsageDetails> TakeCalls()
    {
        lock (_lock)
        {
            var calls = _calls.ToArray();
            _calls.Clear();
            return calls;
        }
    }

    /// <inheritdoc />
    public override async Task<ChatResponse> GetResponseAsync(
        IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var response = await base.GetResponseAsync(messages, options, cancellationToken).ConfigureAwait(false);
        Record(response.Usage ?? new UsageDetails());
        return response;
    }

    /// <inheritdoc />
    public override async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(
        IEnumerable<ChatMessage> messages, ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var usage = new UsageDetails();
        await foreach (var update in base.GetStreamingResponseAsync(messages, options, cancellationToken).ConfigureAwait(false))
        {
            foreach (var content in update.Contents.OfType<UsageContent>())
            {
                usage.Add(content.Details);
            }

            yield return update;
        }

        Record(usage);
    }

    private void Record(UsageDetails usage)
    {
        lock (_lock)
        {
            _calls.Add(usage);
        }
    }
}
