// A reasoning model through the npm `openai` package, as a node app would use a local server for one. Run by
// ReasoningTests with KVCHAT_BASE_URL, KVCHAT_MODEL, KVCHAT_THOUGHT and KVCHAT_ANSWER set; the package passes fields it
// does not define through as they are on the wire, so `reasoning_content` reaches the app. Prints `RESULT {json}`.
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const model = process.env.KVCHAT_MODEL;
const thought = process.env.KVCHAT_THOUGHT;
const answer = process.env.KVCHAT_ANSWER;
const client = new OpenAI({ baseURL: process.env.KVCHAT_BASE_URL, apiKey: 'not-needed', maxRetries: 0, timeout: 60_000 });
const result = {};

// Not streamed: the reasoning beside the answer.
{
  const reply = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Hello from node.' }] });
  assert.equal(reply.choices[0].message.reasoning_content, thought);
  assert.equal(reply.choices[0].message.content, answer);
}

// Streamed: reasoning pieces first, then the answer.
{
  const stream = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Stream to node.' }], stream: true });
  let reasoning = '', text = '', pieces = 0;
  for await (const chunk of stream) {
    for (const choice of chunk.choices) {
      if (choice.delta.reasoning_content) {
        assert.equal(text, '', 'reasoning after the answer began');
        reasoning += choice.delta.reasoning_content;
        pieces++;
      }
      text += choice.delta.content ?? '';
    }
  }
  assert.equal(reasoning, thought);
  assert.equal(text, answer);
  result.reasoningPieces = pieces;
}

// A tool loop: the reply message goes back into the history as the package returned it, reasoning_content included.
{
  const tools = [{ type: 'function', function: { name: 'get_weather', description: 'The weather in a city.', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];
  const messages = [{ role: 'system', content: 'You are a travel agent for node.' }, { role: 'user', content: 'Weather in Paris, node?' }];
  const call = await client.chat.completions.create({ model, messages, tools });
  assert.equal(call.choices[0].finish_reason, 'tool_calls');
  assert.equal(call.choices[0].message.reasoning_content, thought);
  const toolCall = call.choices[0].message.tool_calls[0];
  messages.push(call.choices[0].message, { role: 'tool', tool_call_id: toolCall.id, content: '18C and sunny' });
  const reply = await client.chat.completions.create({ model, messages, tools });
  assert.equal(reply.choices[0].message.content, answer);
  result.toolStep2 = {
    prompt: reply.usage.prompt_tokens,
    cached: reply.usage.prompt_tokens_details.cached_tokens,
    expected: call.usage.prompt_tokens + call.usage.completion_tokens,
  };
}

console.log('RESULT ' + JSON.stringify(result));
