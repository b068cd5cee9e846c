using System.Globalization;
using KvChat.ModelKit;

return ModelKitCommandLine.Run(args, Console.Out, Console.Error);
