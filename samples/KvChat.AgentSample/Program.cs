using KvChat.AgentSample;
using Microsoft.ML.OnnxRuntimeGenAI;

// GenAI's process handle: created first, disposed after the agent's client (and its model) is gone.
using var genAi = new OgaHandle();
return await AgentChat.RunAsync(args);
