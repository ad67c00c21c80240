// The official openai npm package against the running gateway: a streamed completion (with
// include_usage), a whole one, and an error. Prints one JSON object for tests/test_clients.py.
// Usage: node client.mjs <base_url ending in /v1> <api_key> <tag>
import OpenAI from "openai";

const [baseURL, apiKey, tag] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 30_000 });
const directive = (fields) => "@@sim@@ " + JSON.stringify(fields);
const out = { sdkVersion: OpenAI.VERSION ?? null };

const stream = await client.chat.completions.create({
  model: "decopy-deepseek-v3",
  stream: true,
  stream_options: { include_usage: true },
  messages: [{ role: "user", content: `${tag}-stream ` + directive({ reply: ["Node ", "streams ", "work. ✓"] }) }],
});
out.stream = { content: "", finish: null, usage: null, chunks: 0, ids: new Set() };
for await (const chunk of stream) {
  out.stream.chunks += 1;
  out.stream.ids.add(chunk.id);
  if (chunk.usage) out.stream.usage = chunk.usage;
  for (const choice of chunk.choices) {
    out.stream.content += choice.delta?.content ?? "";
    out.stream.finish = choice.finish_reason ?? out.stream.finish;
  }
}
out.stream.ids = [...out.stream.ids];

const { data: whole, response } = await client.chat.completions
  .create({
    model: "decopy-deepseek-r1",
    max_tokens: 3,
    messages: [
      { role: "system", content: "Be brief." },
      { role: "user", content: `${tag}-whole ` + directive({ think: "hm", reply: ["abcd", "efgh", "ijkl", "mnop"] }) },
    ],
  })
  .withResponse();
out.whole = {
  content: whole.choices[0].message.content,
  reasoning: whole.choices[0].message.reasoning_content ?? null,
  finish: whole.choices[0].finish_reason,
  usage: whole.usage,
  model: whole.model,
  requestId: response.headers.get("x-request-id"),
  processingMs: response.headers.get("openai-processing-ms"),
};

try {
  await client.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: tag }] });
  out.error = null;
} catch (err) {
  out.error = { name: err.constructor.name, status: err.status, code: err.code ?? null, param: err.param ?? null,
                isNotFound: err instanceof OpenAI.NotFoundError };
}

console.log(JSON.stringify(out));
