using KvChat.SemanticKernelSample;
using Microsoft.ML.OnnxRuntimeGenAI;

// GenAI's process handle: created first, disposed after the kernel's services (and the client in them) are gone.
using var genAi = new OgaHandle();
return await SemanticKernelChat.RunAsync(args);
