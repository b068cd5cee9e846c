// The npm `openai` package against the Chat Completions endpoint, as a node app would use a local server.
// Run by NodeOpenAIClientTests with KVCHAT_BASE_URL, KVCHAT_MODEL, KVCHAT_REPLY and KVCHAT_SCHEMA set; it asserts what
// a user would rely on and prints one line `RESULT {json}` with the usage the server reported.
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const model = process.env.KVCHAT_MODEL;
const reply = process.env.KVCHAT_REPLY;
const schema = JSON.parse(process.env.KVCHAT_SCHEMA);
const client = new OpenAI({ baseURL: process.env.KVCHAT_BASE_URL, apiKey: 'not-needed', maxRetries: 0, timeout: 60_000 });
const result = {};

async function streamText(request, options) {
  const stream = await client.chat.completions.create({ ...request, stream: true, stream_options: { include_usage: true } }, options);
  let text = '', pieces = 0, usage = null, finish = null, role = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      role ??= choice.delta.role ?? null;
      if (choice.delta.content) { text += choice.delta.content; pieces++; }
      finish = choice.finish_reason ?? finish;
    }
  }
  return { text, pieces, usage, finish, role };
}

// Models.
const models = [];
for await (const m of client.models.list()) models.push(m.id);
assert.deepEqual(models, [model]);

// Two turns, not streamed.
{
  const history = [{ role: 'user', content: 'Hello from node.' }];
  const first = await client.chat.completions.create({ model, messages: history, max_tokens: 48 });
  assert.equal(first.object, 'chat.completion');
  assert.equal(first.choices[0].message.content, reply);
  assert.equal(first.choices[0].finish_reason, 'stop');
  history.push(first.choices[0].message, { role: 'user', content: 'And again?' });
  const second = await client.chat.completions.create({ model, messages: history, max_completion_tokens: 48 });
  assert.equal(second.choices[0].message.content, reply);
  const cached = second.usage.prompt_tokens_details.cached_tokens;
  assert.ok(cached >= first.usage.prompt_tokens, `turn 2 cached ${cached}; turn 1's prompt was ${first.usage.prompt_tokens}`);
  result.turn2 = { prompt: second.usage.prompt_tokens, cached };
}

// Two turns, streamed.
{
  const history = [{ role: 'user', content: 'Stream to node.' }];
  const first = await streamText({ model, messages: history, temperature: 0, top_p: 1, seed: 1 });
  assert.equal(first.role, 'assistant');
  assert.equal(first.text, reply);
  assert.ok(first.pieces > 1, `${first.pieces} piece(s)`);
  assert.equal(first.finish, 'stop');
  history.push({ role: 'assistant', content: first.text }, { role: 'user', content: 'Once more?' });
  const second = await streamText({ model, messages: history, frequency_penalty: 0, presence_penalty: 0, stop: ['never'] });
  const cached = second.usage.prompt_tokens_details.cached_tokens;
  assert.ok(cached >= first.usage.prompt_tokens, `streamed turn 2 cached ${cached}; turn 1's prompt was ${first.usage.prompt_tokens}`);
  result.streamedTurn2 = { prompt: second.usage.prompt_tokens, cached };
}

// A tool call round trip, then the same call streamed.
{
  const tools = [{ type: 'function', function: { name: 'get_weather', description: 'The weather in a city.', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }];
  const messages = [{ role: 'system', content: 'You are a travel agent.' }, { role: 'user', content: 'Weather in Paris?' }];
  const call = await client.chat.completions.create({ model, messages, tools, tool_choice: 'auto' });
  assert.equal(call.choices[0].finish_reason, 'tool_calls');
  const toolCall = call.choices[0].message.tool_calls[0];
  assert.equal(toolCall.type, 'function');
  assert.equal(toolCall.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(toolCall.function.arguments), { city: 'Paris' });
  messages.push(call.choices[0].message, { role: 'tool', tool_call_id: toolCall.id, content: '18C and sunny' });
  const answer = await client.chat.completions.create({ model, messages, tools });
  assert.equal(answer.choices[0].message.content, reply);
  assert.ok(answer.usage.prompt_tokens_details.cached_tokens >= call.usage.prompt_tokens);
  result.toolStep2 = { prompt: answer.usage.prompt_tokens, cached: answer.usage.prompt_tokens_details.cached_tokens };

  const stream = await client.chat.completions.create({ model, messages: messages.slice(0, 2), tools, stream: true });
  const calls = [];
  let finish = null;
  for await (const chunk of stream) {
    for (const choice of chunk.choices) {
      for (const delta of choice.delta.tool_calls ?? []) {
        calls[delta.index] ??= { id: '', name: '', arguments: '' };
        calls[delta.index].id += delta.id ?? '';
        calls[delta.index].name += delta.function?.name ?? '';
        calls[delta.index].arguments += delta.function?.arguments ?? '';
      }
      finish = choice.finish_reason ?? finish;
    }
  }
  assert.equal(finish, 'tool_calls');
  assert.equal(calls.length, 1);
  assert.match(calls[0].id, /^call_/);
  assert.equal(calls[0].name, 'get_weather');
  assert.deepEqual(JSON.parse(calls[0].arguments), { city: 'Paris' });
}

// A JSON-schema response.
{
  const response = await client.chat.completions.create({
    model,
    messages: [{ role: 'user', content: 'The weather as JSON.' }],
    response_format: { type: 'json_schema', json_schema: { name: 'weather', schema, strict: true } },
  });
  assert.deepEqual(JSON.parse(response.choices[0].message.content), JSON.parse(reply));
}

// Errors are the SDK's typed errors.
{
  await assert.rejects(
    client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'Hi' }] }),
    e => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found');
  await assert.rejects(
    client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Hi' }], temperature: 5 }),
    e => e instanceof OpenAI.BadRequestError && e.param === 'temperature');
}

// A cancelled stream: abort after two pieces of text (the SDK ends the iteration quietly on an abort).
{
  const controller = new AbortController();
  let pieces = 0, text = '';
  const stream = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Slowly, node.' }], stream: true }, { signal: controller.signal });
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta.content ?? '';
    if (chunk.choices[0]?.delta.content && ++pieces === 2) controller.abort();
  }
  assert.ok(text.length < reply.length, `the stream went on after the abort: '${text}'`);
  result.cancelledAfterPieces = pieces;
}

console.log('RESULT ' + JSON.stringify(result));
