// Calls to Puente's own JSON APIs. The key goes in the Authorization header and nowhere else:
// not in a URL, not in a cookie (credentials: "omit"), so no other site can make the browser
// act with it.

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(key, json) {
  const out = { Authorization: `Bearer ${key}` };
  if (json) out["Content-Type"] = "application/json";
  return out;
}

async function failure(response) {
  let message = `HTTP ${response.status}`;
  let code = null;
  try {
    const body = await response.json();
    if (body && body.error) {
      message = body.error.message || message;
      code = body.error.code || null;
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, message, code);
}

export async function call(key, method, path, body) {
  const response = await fetch(path, {
    method,
    headers: headers(key, body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  if (!response.ok) throw await failure(response);
  return response.json();
}

// /ready answers 503 with the same body when a model is down: both are reports, not errors.
export async function readiness(key) {
  const response = await fetch("/ready", {
    headers: headers(key, false),
    credentials: "omit",
    cache: "no-store",
  });
  if (response.status !== 200 && response.status !== 503) throw await failure(response);
  return response.json();
}

// POST /v1/chat/completions with stream: true, read as Server-Sent Events. Calls
// on.open(response) once the headers are in, on.delta(text) per piece of content, on.chunk(chunk)
// for every chunk (usage and model included). Aborting `signal` closes the connection, which
// makes Puente cancel the upstream request.
export async function streamChat(key, body, signal, on) {
  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: headers(key, true),
    body: JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
    signal,
  });
  if (!response.ok) throw await failure(response);
  on.open?.(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replaceAll("\r\n", "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      if (handleFrame(frame, on)) return;
    }
  }
}

// True at [DONE]. An error event after the stream started becomes an ApiError.
function handleFrame(frame, on) {
  const data = frame
    .split("\n")
    .filter((line) => line.startsWith("data:"))
    .map((line) => line.slice(5).replace(/^ /, ""))
    .join("\n");
  if (!data) return false;
  if (data === "[DONE]") return true;
  const chunk = JSON.parse(data);
  if (chunk.error) throw new ApiError(200, chunk.error.message || "stream error", chunk.error.code);
  on.chunk?.(chunk);
  const content = chunk.choices?.[0]?.delta?.content;
  if (content) on.delta?.(content);
  return false;
}
