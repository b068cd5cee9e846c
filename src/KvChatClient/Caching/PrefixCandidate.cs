namespace KvChat;

/// <summary>
/// An entry of a <see cref="PrefixIndex{TEntry}"/> that shares a prefix with a prompt.
/// </summary>
/// <typeparam name="TEntry">The type of the indexed entries.</typeparam>
/// <param name="Entry">The entry.</param>
/// <param name="CommonPrefixLength">
/// The exact number of leading tokens that the entry's registered tokens and the prompt have in
/// common, verified token by token (never inferred from a hash).
/// </param>
internal readonly record struct PrefixCandidate<TEntry>(TEntry Entry, int CommonPrefixLength)
    where TEntry : class;
