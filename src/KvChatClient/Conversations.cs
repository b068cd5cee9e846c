using Microsoft.Extensions.AI;

namespace KvChat;

/// <summary>The stateful mode's memory: each conversation's messages, by id, least recently used forgotten first.</summary>
internal sealed class Conversations
{
    private readonly LruCache<string, Conversation> _byId;

    public Conversations(int capacity) => _byId = new LruCache<string, Conversation>(capacity, StringComparer.Ordinal);

    public Conversation Get(string id)
        => _byId.TryGet(id, out var conversation)
            ? conversation
            : throw new InvalidOperationException(
                $"ConversationId '{id}' is unknown or was forgotten (the client remembers {_byId.Capacity} conversations): send the whole history without a ConversationId.");

    public Conversation Create()
    {
        var conversation = new Conversation("kvc_" + Guid.NewGuid().ToString("N"));
        _byId.Set(conversation.Id, conversation);
        return conversation;
    }

    /// <summary>One conversation; its gate serializes requests so each sees the previous reply.</summary>
    internal sealed class Conversation(string id)
    {
        public string Id { get; } = id;

        public SemaphoreSlim Gate { get; } = new(1, 1);

        public List<ChatMessage> History { get; } = [];

        public int Version { get; set; }
    }
}
