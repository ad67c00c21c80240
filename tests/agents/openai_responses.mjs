// The openai npm package's responses.create, streamed, against a base URL. Prints one JSON object
// (the text, the event types in order, the final response's status and usage) for tests/test_agents.py.
// Usage: node openai_responses.mjs <base_url ending in /v1> <api_key> <model> <prompt>
import OpenAI from "openai";

const [baseURL, apiKey, model, prompt] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60_000 });
const out = { sdkVersion: OpenAI.VERSION ?? null, text: "", events: [], sequence: [] };
const stream = await client.responses.create({ model, input: prompt, stream: true });
for await (const event of stream) {
  out.events.push(event.type);
  out.sequence.push(event.sequence_number ?? null);
  if (event.type === "response.output_text.delta") out.text += event.delta;
  if (event.type === "response.completed" || event.type === "response.failed" || event.type === "response.incomplete") {
    out.final = { status: event.response.status, usage: event.response.usage ?? null, id: event.response.id,
                  outputText: event.response.output_text ?? null };
  }
}
console.log(JSON.stringify(out));
