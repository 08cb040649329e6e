// "Show code": the conversation as a runnable openai-SDK Python program and a curl command.
// The key is never written in them: they read PUENTE_API_KEY, and a comment shows its mask.

export function maskKey(key) {
  if (!key) return "";
  return key.length > 12 ? `${key.slice(0, 7)}…${key.slice(-4)}` : "…";
}

// Parameters the openai SDK takes as keyword arguments; anything else goes in extra_body.
const SDK_PARAMS = new Set([
  "temperature", "max_tokens", "max_completion_tokens", "top_p", "n", "stop", "seed",
  "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs", "user", "response_format",
  "tools", "tool_choice", "logit_bias", "reasoning_effort",
]);

// A Python literal for JSON-like data. JSON string syntax is valid Python string syntax.
function py(value, indent) {
  const pad = "    ".repeat(indent + 1);
  const close = "    ".repeat(indent);
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number" || typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) {
    if (value.length === 0) return "[]";
    return `[\n${value.map((v) => pad + py(v, indent + 1)).join(",\n")},\n${close}]`;
  }
  const entries = Object.entries(value);
  if (entries.length === 0) return "{}";
  if (entries.every(([, v]) => v === null || typeof v !== "object")) {
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}: ${py(v, indent)}`).join(", ")}}`;
  }
  const lines = entries.map(([k, v]) => `${pad}${JSON.stringify(k)}: ${py(v, indent + 1)}`);
  return `{\n${lines.join(",\n")},\n${close}}`;
}

export function pythonSnippet({ baseUrl, key, body }) {
  const args = [];
  const extra = {};
  for (const [name, value] of Object.entries(body)) {
    if (name === "stream" || name === "stream_options") continue;
    if (name === "model" || name === "messages" || SDK_PARAMS.has(name)) {
      args.push(`    ${name}=${py(value, 1)},`);
    } else {
      extra[name] = value;
    }
  }
  if (Object.keys(extra).length) args.push(`    extra_body=${py(extra, 1)},`);
  args.push("    stream=True,");
  return [
    "import os",
    "",
    "from openai import OpenAI",
    "",
    `# export PUENTE_API_KEY=${maskKey(key)}`,
    `client = OpenAI(base_url=${JSON.stringify(baseUrl)}, api_key=os.environ["PUENTE_API_KEY"])`,
    "",
    "stream = client.chat.completions.create(",
    ...args,
    ")",
    "for chunk in stream:",
    "    if chunk.choices and chunk.choices[0].delta.content:",
    '        print(chunk.choices[0].delta.content, end="", flush=True)',
    "print()",
    "",
  ].join("\n");
}

function shellQuote(text) {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

export function curlSnippet({ baseUrl, key, body }) {
  const { stream_options: _, ...rest } = body;
  return [
    `# export PUENTE_API_KEY=${maskKey(key)}`,
    `curl -N ${baseUrl}/chat/completions \\`,
    '  -H "Authorization: Bearer $PUENTE_API_KEY" \\',
    '  -H "Content-Type: application/json" \\',
    `  -d ${shellQuote(JSON.stringify({ ...rest, stream: true }, null, 2))}`,
    "",
  ].join("\n");
}
