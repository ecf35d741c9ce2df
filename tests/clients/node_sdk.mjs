// Exercise the server with the official Node `openai` SDK (version pinned in package.json).
//
// Runs as its own process (`node tests/clients/node_sdk.mjs`, after setup.sh) with
// AISP_BASE_URL (ending in /v1), AISP_API_KEY, AISP_CHAT_MODEL and AISP_EMBED_MODEL set.
// Prints one JSON object summarising the replies; exits non-zero on anything unexpected.
import OpenAI from "openai";
import { VERSION as sdkVersion } from "openai/version";

const PROG = "node_sdk";

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function run() {
  const baseURL = env("AISP_BASE_URL");
  const chatModel = env("AISP_CHAT_MODEL");
  const embedModel = env("AISP_EMBED_MODEL");
  // No retries: a failure must surface, not be papered over.
  const client = new OpenAI({ baseURL, apiKey: env("AISP_API_KEY"), maxRetries: 0 });
  const messages = [{ role: "user", content: "Say hello in three words." }];

  const models = [];
  for await (const model of client.models.list()) models.push(model.id);

  const chat = await client.chat.completions.create({ model: chatModel, messages, max_tokens: 16 });

  const stream = await client.chat.completions.create({
    model: chatModel,
    messages,
    max_tokens: 16,
    stream: true,
    stream_options: { include_usage: true },
  });
  let streamChunks = 0;
  let streamText = "";
  let streamUsage = null;
  for await (const chunk of stream) {
    streamChunks += 1;
    streamText += chunk.choices[0]?.delta?.content ?? "";
    if (chunk.usage) streamUsage = chunk.usage;
  }
  check(streamUsage, "include_usage was set but no chunk carried usage");

  // The SDK asks for base64 and decodes it into Float32Arrays.
  const embeddings = await client.embeddings.create({
    model: embedModel,
    input: ["The quick brown fox.", "Jumped over the lazy dog."],
  });
  const dims = new Set(embeddings.data.map((item) => item.embedding.length));
  check(dims.size === 1, `embeddings of different sizes: ${[...dims]}`);
  check(
    embeddings.data.every((item) => item.embedding.every(Number.isFinite)),
    "embeddings hold non-finite values (was base64 asked for but not sent?)",
  );

  const response = await client.responses.create({
    model: chatModel,
    input: "Say hello in three words.",
    max_output_tokens: 16,
  });

  let errorStatus = null;
  try {
    await new OpenAI({ baseURL, apiKey: "sk-aisp-not-a-valid-key", maxRetries: 0 }).models.list();
  } catch (err) {
    if (!(err instanceof OpenAI.AuthenticationError)) throw err;
    errorStatus = err.status;
  }
  check(errorStatus !== null, "a request with a bad API key succeeded");

  return {
    sdk: `openai-node ${sdkVersion}`,
    models,
    chat_text: chat.choices[0].message.content,
    chat_finish_reason: chat.choices[0].finish_reason,
    chat_usage: chat.usage,
    stream_chunks: streamChunks,
    stream_text: streamText,
    stream_usage: streamUsage,
    embedding_count: embeddings.data.length,
    embedding_dims: [...dims][0],
    embedding_head: embeddings.data[0].embedding.slice(0, 3),
    responses_status: response.status,
    responses_text: response.output_text,
    responses_usage: response.usage,
    error_status: errorStatus,
  };
}

try {
  console.log(JSON.stringify(await run()));
} catch (err) {
  let reason = `${err.constructor.name}: ${err.message}`;
  for (let cause = err.cause; cause; cause = cause.cause) reason += ` <- ${cause.message ?? cause}`;
  console.error(`${PROG}: ${reason}`);
  process.exitCode = 1;
}
