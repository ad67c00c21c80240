// The Vercel AI SDK (ai + @ai-sdk/openai, its default Responses API model) against a base URL.
// Prints one JSON object for tests/test_agents.py.
// Usage: node ai_sdk.mjs <generate|stream|tools> <base_url ending in /v1> <api_key> <model> <prompt>
// "tools" offers one tool, get_weather({city}), whose result is "sunny in <city>", and lets the
// model take up to three steps: call the tool, read its result, answer.
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, jsonSchema, stepCountIs, streamText, tool } from "ai";

const [mode, baseURL, apiKey, modelId, prompt] = process.argv.slice(2);
const provider = createOpenAI({ baseURL, apiKey });
const model = provider(modelId); // the provider's default: the Responses API
const common = { model, prompt, maxRetries: 0 };
const out = { mode };

if (mode === "generate") {
  const r = await generateText(common);
  Object.assign(out, { text: r.text, finishReason: r.finishReason, usage: r.usage });
} else if (mode === "stream") {
  const r = streamText({ ...common, onError: ({ error }) => { out.streamError = String(error); } });
  out.deltas = [];
  for await (const delta of r.textStream) out.deltas.push(delta);
  Object.assign(out, { text: await r.text, finishReason: await r.finishReason, usage: await r.usage });
} else if (mode === "tools") {
  const calls = [];
  const getWeather = tool({
    description: "Get the current weather in a city.",
    inputSchema: jsonSchema({
      type: "object",
      properties: { city: { type: "string", description: "The city name" } },
      required: ["city"],
      additionalProperties: false,
    }),
    execute: async ({ city }) => {
      calls.push(city);
      return `sunny in ${city}`;
    },
  });
  const r = await generateText({ ...common, tools: { get_weather: getWeather }, stopWhen: stepCountIs(3) });
  Object.assign(out, {
    text: r.text,
    finishReason: r.finishReason,
    executed: calls,
    steps: r.steps.map((s) => ({
      finishReason: s.finishReason,
      text: s.text,
      toolCalls: s.toolCalls.map((c) => ({ toolName: c.toolName, input: c.input, toolCallId: c.toolCallId })),
      toolResults: s.toolResults.map((t) => ({ toolName: t.toolName, output: t.output })),
    })),
  });
} else {
  throw new Error(`unknown mode ${mode}`);
}
console.log(JSON.stringify(out));
