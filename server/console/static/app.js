// The console: login, a hash router (#playground, #compare, #admin) and the three views.
// Every string from the server or a model is put in the page with textContent.

import { ApiError, call, readiness, streamChat } from "./api.js";
import { language, pickLanguage, setLanguage, t } from "./i18n.js";
import { renderMarkdown } from "./markdown.js";
import { curlSnippet, maskKey, pythonSnippet } from "./snippets.js";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "puente.console.key"; // only with "remember me"
const LANG_STORE = "puente.console.lang";

const session = {
  key: null, // in memory; in localStorage only when the user asked to be remembered
  models: [], // /v1/models for this key
  chatRefusal: null, // why this key cannot use /v1/* (an admin-only key), or null
};

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function message(error) {
  if (error instanceof ApiError) return error.message;
  if (error instanceof TypeError) return t("error.network");
  return String(error?.message || error);
}

// -- language ------------------------------------------------------------------------------

function initLanguage() {
  const lang = pickLanguage(localStorage.getItem(LANG_STORE), navigator.language);
  $("lang").value = lang;
  setLanguage(lang);
  $("lang").addEventListener("change", () => {
    localStorage.setItem(LANG_STORE, $("lang").value);
    setLanguage($("lang").value);
    refreshDynamicText();
  });
}

// Text built by scripts (not data-i18n) that must follow a language switch.
function refreshDynamicText() {
  showWho();
  $("pg-code").textContent = t($("code-panel").hidden ? "pg.showCode" : "pg.hideCode");
  fillModelPicker();
  for (const stats of document.querySelectorAll(".stats")) renderStats(stats);
  showChatRefusal();
  if (!$("view-admin").hidden) openAdmin(); // tables and cards built from data: fetch again
}

// -- login ---------------------------------------------------------------------------------

async function login(key, remember) {
  let models = [];
  let chatRefusal = null;
  try {
    models = (await call(key, "GET", "/v1/models")).data;
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 401) throw error;
    // Not a key for /v1; the admin key (PUENTE_ADMIN_KEY) is only good for /admin.
    await call(key, "GET", "/admin/keys").catch(() => {
      throw error;
    });
    chatRefusal = error.message;
  }
  session.key = key;
  session.models = models;
  session.chatRefusal = chatRefusal;
  if (remember) localStorage.setItem(KEY_STORE, key);
  showWho();
  $("nav").hidden = false;
  $("logout").hidden = false;
  fillModelPicker();
  fillCompare();
  route(location.hash.slice(1) || (chatRefusal ? "admin" : "playground"));
}

function logout() {
  stopAll();
  session.key = null;
  session.models = [];
  localStorage.removeItem(KEY_STORE);
  // Nothing of the last user stays on the page.
  location.hash = "";
  location.reload();
}

function showWho() {
  const key = session.key;
  $("who").textContent = !key ? "" : session.chatRefusal ? t("who.admin") : t("who.user", { hint: key.slice(-4) });
}

function initLogin() {
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("login-error").textContent = "";
    $("login-status").textContent = t("login.checking");
    $("login-submit").disabled = true;
    try {
      await login($("login-key").value.trim(), $("login-remember").checked);
      $("login-key").value = "";
    } catch (error) {
      $("login-error").textContent = t("login.failed", { message: message(error) });
    } finally {
      $("login-status").textContent = "";
      $("login-submit").disabled = false;
    }
  });
  $("logout").addEventListener("click", logout);
}

// -- routing -------------------------------------------------------------------------------

const VIEWS = ["login", "playground", "compare", "admin"];

// "#playground?model=NAME" opens the playground on that model (the control room's "try it").
function route(hash) {
  const [view, query] = hash.split("?");
  let name = view;
  const wanted = new URLSearchParams(query || "").get("model");
  if (wanted && session.models.some((m) => m.id === wanted)) {
    $("pg-model").value = wanted;
    describeModel();
  }
  if (!session.key) name = "login";
  if (!VIEWS.includes(name) || name === "login" && session.key) name = "playground";
  for (const view of VIEWS) $(`view-${view}`).hidden = view !== name;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.view === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (name === "playground" || name === "compare") showChatRefusal();
  if (name === "admin") openAdmin();
}

function showChatRefusal() {
  const refused = session.chatRefusal;
  for (const id of ["pg-refused", "cmp-refused"]) {
    $(id).hidden = !refused;
    $(id).textContent = refused ? t("pg.cannotChat", { message: refused }) : "";
  }
}

// -- playground ----------------------------------------------------------------------------

const chat = {
  history: [], // {role, content} turns sent and answered, without the system prompt
  controller: null,
};

function isPersona(card) {
  return card.owned_by === "puente";
}

function fillModelPicker() {
  const select = $("pg-model");
  const chosen = select.value;
  select.replaceChildren();
  for (const card of session.models) {
    const label = isPersona(card) ? `${card.id} (${t("pg.persona")})` : card.id;
    const option = el("option", label);
    option.value = card.id;
    select.append(option);
  }
  if (chosen && session.models.some((m) => m.id === chosen)) select.value = chosen;
  describeModel();
  if (session.key && !session.chatRefusal && session.models.length === 0) {
    $("pg-error").textContent = t("pg.noModels");
  }
}

function describeModel() {
  const card = session.models.find((m) => m.id === $("pg-model").value);
  $("pg-model-desc").textContent = card?.description || "";
}

// The request the next Send makes (or, with no draft, the one the last Send made).
function requestBody(draft) {
  const messages = [];
  const system = $("pg-system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  const turns = chat.history.slice();
  if (draft) turns.push({ role: "user", content: draft });
  else if (turns.length && turns[turns.length - 1].role === "assistant") turns.pop();
  messages.push(...turns);
  const body = { model: $("pg-model").value, messages };
  const temperature = $("pg-temperature").value;
  if (temperature !== "") body.temperature = Number(temperature);
  const maxTokens = $("pg-max-tokens").value;
  if (maxTokens !== "") body.max_tokens = Number(maxTokens);
  Object.assign(body, extraParameters());
  body.stream = true;
  body.stream_options = { include_usage: true };
  return body;
}

function extraParameters() {
  const text = $("pg-extra").value.trim();
  if (!text) return {};
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    value = null;
  }
  if (!value || typeof value !== "object" || Array.isArray(value)) {
    throw new Error(t("pg.extra.invalid"));
  }
  return value;
}

function addMessage(role, text) {
  const item = el("li", null, `msg ${role}`);
  const head = el("div", null, "msg-head");
  head.append(el("span", t(role === "user" ? "pg.you" : "pg.assistant"), "role"));
  const content = el("div", null, "content");
  item.append(head, content);
  if (role === "user") {
    content.textContent = text;
    const edit = el("button", t("pg.edit"), "link edit");
    edit.type = "button";
    edit.addEventListener("click", () => editFrom(item, text));
    head.append(edit);
  } else {
    renderMarkdown(content, text);
  }
  item.dataset.turn = String(chat.history.length);
  $("pg-log").append(item);
  $("pg-empty").hidden = true;
  return item;
}

// "Edit": the conversation goes back to before this message, and its text to the composer.
function editFrom(item, text) {
  if (chat.controller) return;
  chat.history.length = Number(item.dataset.turn);
  while (item.nextSibling) item.nextSibling.remove();
  item.remove();
  $("pg-input").value = text;
  $("pg-input").focus();
  updateCode();
}

// One streamed answer into `item`; resolves with what it got. Shared by the playground and
// the comparison columns.
async function runStream(body, item, controller) {
  const content = item.querySelector(".content");
  const stats = el("p", null, "stats");
  item.append(stats);
  const record = { requested: body.model, started: performance.now(), first: null, end: null };
  let text = "";
  let pending = false;
  const paint = () => {
    pending = false;
    renderMarkdown(content, text);
  };
  item.setAttribute("aria-busy", "true");
  try {
    await streamChat(session.key, body, controller.signal, {
      open(response) {
        record.answeredBy = response.headers.get("x-puente-model");
      },
      chunk(chunk) {
        if (chunk.usage) record.usage = chunk.usage;
        if (chunk.model && !record.answeredBy) record.answeredBy = chunk.model;
      },
      delta(piece) {
        if (record.first === null) record.first = performance.now();
        text += piece;
        if (!pending) {
          pending = true;
          requestAnimationFrame(paint);
        }
      },
    });
    record.outcome = "done";
  } catch (error) {
    if (error.name === "AbortError") {
      record.outcome = "stopped";
    } else {
      record.outcome = "error";
      item.append(el("p", t("error.generic", { message: message(error) }), "error"));
    }
  } finally {
    record.end = performance.now();
    item.removeAttribute("aria-busy");
    paint();
    item.dataset.outcome = record.outcome;
    if (record.outcome === "stopped") item.append(el("p", t("pg.stopped"), "hint stopped"));
    stats.record = record;
    renderStats(stats);
  }
  return { text, record };
}

// x-puente-model percent-encodes anything outside printable ASCII.
function headerText(value) {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

function renderStats(stats) {
  const r = stats.record;
  if (!r) return;
  const parts = [];
  if (r.usage) {
    parts.push(["in", t("stats.in", { n: r.usage.prompt_tokens })]);
    parts.push(["out", t("stats.out", { n: r.usage.completion_tokens })]);
  }
  if (r.first !== null) {
    parts.push(["ttft", t("stats.ttft", { ms: Math.round(r.first - r.started) })]);
    const seconds = (r.end - r.first) / 1000;
    if (r.usage && seconds > 0) {
      parts.push(["tps", t("stats.tps", { tps: (r.usage.completion_tokens / seconds).toFixed(1) })]);
    }
  }
  if (r.answeredBy) {
    const answeredBy = headerText(r.answeredBy);
    parts.push(["model", t("stats.model", { model: answeredBy })]);
    // A persona is always answered by another model; only a plain model's stand-in is news.
    const card = session.models.find((m) => m.id === r.requested);
    if (card && !isPersona(card) && answeredBy !== r.requested) {
      parts.push(["fallback", t("stats.fallback")]);
    }
  }
  stats.replaceChildren(...parts.map(([name, text]) => {
    const span = el("span", text);
    span.dataset.stat = name;
    return span;
  }));
}

async function sendChat() {
  const draft = $("pg-input").value.trim();
  $("pg-error").textContent = "";
  if (!draft || chat.controller) return;
  let body;
  try {
    body = requestBody(draft);
  } catch (error) {
    $("pg-error").textContent = error.message;
    return;
  }
  $("pg-input").value = "";
  addMessage("user", draft);
  chat.history.push({ role: "user", content: draft });
  const item = addMessage("assistant", "");
  const controller = (chat.controller = new AbortController());
  setBusy(true);
  const { text, record } = await runStream(body, item, controller);
  chat.controller = null;
  setBusy(false);
  if (text) chat.history.push({ role: "assistant", content: text });
  else if (record.outcome === "error") chat.history.pop(); // a refused turn is not history
  $("pg-status").textContent = t("pg.done");
  updateCode();
}

function setBusy(busy) {
  $("pg-send").disabled = busy;
  $("pg-stop").disabled = !busy;
}

function stopAll() {
  chat.controller?.abort();
  for (const controller of compare.controllers) controller.abort();
}

function updateCode() {
  if ($("code-panel").hidden || !session.key) return;
  let body;
  try {
    body = requestBody($("pg-input").value.trim());
  } catch (error) {
    $("pg-error").textContent = error.message;
    return;
  }
  const context = { baseUrl: `${location.origin}/v1`, key: session.key, body };
  $("code-python").textContent = pythonSnippet(context);
  $("code-curl").textContent = curlSnippet(context);
}

function initPlayground() {
  $("pg-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sendChat();
  });
  $("pg-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendChat();
    }
  });
  $("pg-stop").addEventListener("click", () => chat.controller?.abort());
  $("pg-model").addEventListener("change", () => {
    describeModel();
    updateCode();
  });
  $("pg-new").addEventListener("click", () => {
    chat.controller?.abort();
    chat.history = [];
    $("pg-log").replaceChildren();
    $("pg-empty").hidden = false;
    updateCode();
  });
  $("pg-code").addEventListener("click", () => {
    const panel = $("code-panel");
    panel.hidden = !panel.hidden;
    $("pg-code").setAttribute("aria-expanded", String(!panel.hidden));
    $("pg-code").textContent = t(panel.hidden ? "pg.showCode" : "pg.hideCode");
    updateCode();
  });
  for (const id of ["pg-system", "pg-temperature", "pg-max-tokens", "pg-extra", "pg-input"]) {
    $(id).addEventListener("input", updateCode);
  }
}

function initCopyButtons() {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const status = button.closest("section")?.querySelector("[role=status]");
      try {
        await navigator.clipboard.writeText($(button.dataset.copy).textContent);
        if (status) status.textContent = t("code.copied");
      } catch (error) {
        if (status) status.textContent = message(error);
      }
    });
  }
}

// -- compare -------------------------------------------------------------------------------

const compare = { controllers: [] };

function fillCompare() {
  const box = $("cmp-models");
  box.replaceChildren();
  session.models.forEach((card, index) => {
    const label = el("label", null, "check");
    const input = document.createElement("input");
    input.type = "checkbox";
    input.value = card.id;
    input.id = `cmp-model-${index}`;
    label.append(input, document.createTextNode(` ${card.id}`));
    box.append(label);
  });
}

async function sendCompare() {
  const chosen = [...document.querySelectorAll("#cmp-models input:checked")].map((i) => i.value);
  const prompt = $("cmp-input").value.trim();
  $("cmp-error").textContent = "";
  if (compare.controllers.length || !prompt) return;
  if (chosen.length < 2 || chosen.length > 3) {
    $("cmp-error").textContent = t("cmp.pick");
    return;
  }
  const columns = $("cmp-cols");
  columns.replaceChildren();
  $("cmp-send").disabled = true;
  $("cmp-stop").disabled = false;
  const runs = chosen.map((model) => {
    const column = el("article", null, "column msg assistant");
    column.dataset.model = model;
    column.append(el("h2", model), el("div", null, "content"));
    columns.append(column);
    const controller = new AbortController();
    compare.controllers.push(controller);
    const body = {
      model,
      messages: [{ role: "user", content: prompt }],
      stream: true,
      stream_options: { include_usage: true },
    };
    return runStream(body, column, controller);
  });
  await Promise.allSettled(runs);
  compare.controllers = [];
  $("cmp-send").disabled = false;
  $("cmp-stop").disabled = true;
}

function initCompare() {
  $("cmp-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sendCompare();
  });
  $("cmp-stop").addEventListener("click", () => {
    for (const controller of compare.controllers) controller.abort();
  });
}

// -- control room --------------------------------------------------------------------------

let usageRows = null;

async function openAdmin() {
  $("admin-refused").hidden = true;
  try {
    await loadKeys();
  } catch (error) {
    // The server refuses /admin/* to every key but PUENTE_ADMIN_KEY; say so, show nothing.
    $("admin-body").hidden = true;
    $("admin-refused").hidden = false;
    $("admin-refused").textContent = t("admin.refused", { message: message(error) });
    return;
  }
  $("admin-body").hidden = false;
  await Promise.allSettled([loadUsage(), loadModels(), loadPersonas()]);
}

function date(seconds) {
  return seconds ? new Date(seconds * 1000).toISOString().slice(0, 10) : "";
}

function limitsText(key) {
  const parts = [];
  if (key.rpm) parts.push(`rpm ${key.rpm}`);
  if (key.tpm) parts.push(`tpm ${key.tpm}`);
  if (key.budget_day) parts.push(`${t("keys.budgetDay")} ${key.budget_day}`);
  if (key.expires_at) parts.push(`→ ${date(key.expires_at)}`);
  return parts.join(", ") || "—";
}

async function loadKeys() {
  const keys = (await call(session.key, "GET", "/admin/keys")).data;
  const body = $("keys-table").tBodies[0];
  body.replaceChildren();
  if (keys.length === 0) {
    const row = body.insertRow();
    const cell = row.insertCell();
    cell.colSpan = 7;
    cell.textContent = t("keys.none");
  }
  for (const key of keys) {
    const row = body.insertRow();
    row.dataset.key = key.name;
    row.dataset.state = key.state;
    for (const text of [key.name, key.hint, key.models.join(", "), limitsText(key), key.state, date(key.created_at)]) {
      row.insertCell().textContent = text;
    }
    const actions = row.insertCell();
    if (key.state === "active") {
      const revoke = el("button", t("keys.revoke"), "danger small");
      revoke.type = "button";
      revoke.setAttribute("aria-label", `${t("keys.revoke")} ${key.name}`);
      revoke.addEventListener("click", () => revokeKey(key.name, revoke));
      actions.append(revoke);
    }
  }
}

// Two clicks: the first arms the button, the second revokes (no window.confirm dialog).
async function revokeKey(name, button) {
  if (!button.dataset.armed) {
    button.dataset.armed = "1";
    button.textContent = t("keys.confirm");
    return;
  }
  $("key-error").textContent = "";
  try {
    await call(session.key, "DELETE", `/admin/keys/${encodeURIComponent(name)}`);
  } catch (error) {
    $("key-error").textContent = t("error.generic", { message: message(error) });
  }
  await loadKeys().catch(() => {});
}

function optionalNumber(id) {
  const value = $(id).value;
  return value === "" ? undefined : Number(value);
}

async function createKey() {
  $("key-error").textContent = "";
  const models = $("key-models").value.split(",").map((m) => m.trim()).filter(Boolean);
  const request = {
    name: $("key-name").value.trim(),
    models: models.length ? models : ["*"],
    rpm: optionalNumber("key-rpm"),
    tpm: optionalNumber("key-tpm"),
    budget_day: optionalNumber("key-budget"),
    expires: $("key-expires").value.trim() || undefined,
  };
  try {
    const created = await call(session.key, "POST", "/admin/keys", request);
    $("key-secret-value").textContent = created.key;
    $("key-secret").hidden = false;
    $("key-form").reset();
    $("key-models").value = "*";
  } catch (error) {
    $("key-error").textContent = t("error.generic", { message: message(error) });
    return;
  }
  await loadKeys().catch(() => {});
}

// -- usage -----------------------------------------------------------------------------------

async function loadUsage() {
  $("usage-error").textContent = "";
  $("usage-refresh").disabled = true;
  try {
    await fetchUsage();
  } finally {
    $("usage-refresh").disabled = false;
  }
}

async function fetchUsage() {
  const params = new URLSearchParams();
  if ($("usage-since").value) params.set("since", $("usage-since").value);
  if ($("usage-until").value) params.set("until", $("usage-until").value);
  try {
    const answer = await call(session.key, "GET", `/admin/usage?${params}`);
    usageRows = answer.data;
    if (!$("usage-since").value) $("usage-since").value = answer.since;
    if (!$("usage-until").value) $("usage-until").value = answer.until;
  } catch (error) {
    $("usage-error").textContent = t("error.generic", { message: message(error) });
    return;
  }
  drawUsage();
}

function drawUsage() {
  const body = $("usage-table").tBodies[0];
  body.replaceChildren();
  if (usageRows.length === 0) {
    const cell = body.insertRow().insertCell();
    cell.colSpan = 8;
    cell.textContent = t("usage.none");
  }
  for (const row of usageRows) {
    const tr = body.insertRow();
    tr.dataset.key = row.key ?? "";
    tr.dataset.model = row.model;
    const cells = [row.day, row.key ?? "—", row.model, row.requests, row.errors,
      row.prompt_tokens, row.completion_tokens, row.total_tokens];
    cells.forEach((value, i) => {
      const cell = tr.insertCell();
      cell.textContent = String(value);
      if (i >= 3) cell.className = "num";
    });
  }
  drawChart();
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

// What the chart can show: each measure is one or more stacked series of the usage rows.
const MEASURES = {
  tokens: [
    ["prompt_tokens", "usage.prompt", "bar-prompt"],
    ["completion_tokens", "usage.completion", "bar-completion"],
  ],
  requests: [["requests", "usage.requests", "bar-prompt"]],
  errors: [["errors", "usage.errors", "bar-completion"]],
};

// Horizontal bars (they fit a phone), one per key, model or day, its series stacked.
function drawChart() {
  const group = $("usage-group").value;
  const measure = $("usage-measure").value;
  const series = MEASURES[measure];
  const totals = new Map();
  for (const row of usageRows) {
    const label = row[group] ?? "—";
    const total = totals.get(label) || series.map(() => 0);
    series.forEach(([field], i) => {
      total[i] += row[field];
    });
    totals.set(label, total);
  }
  const entries = [...totals.entries()];
  if (group === "day") entries.sort((a, b) => a[0].localeCompare(b[0]));
  const chart = $("usage-chart");
  $("usage-chart-title").textContent = t("usage.chart", {
    measure: t(`usage.m.${measure}`),
    group: t(`usage.by${group[0].toUpperCase()}${group.slice(1)}`),
  });
  // Drawn at the size it is shown, so its text stays readable on a phone.
  const width = Math.max(300, Math.min(720, chart.parentElement.clientWidth || 600));
  const labelWidth = Math.round(Math.min(170, width * 0.32));
  const labelChars = Math.floor(labelWidth / 7);
  const rowHeight = 26;
  const top = 28;
  const height = top + Math.max(entries.length, 1) * rowHeight + 6;
  chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
  chart.replaceChildren();
  series.forEach(([, name, className], i) => {
    const x = (i * width) / 2;
    chart.append(
      svg("rect", { x, y: 6, width: 12, height: 12, class: className }),
      svg("text", { x: x + 18, y: 17, class: "legend" }, t(name)),
    );
  });
  const sum = (values) => values.reduce((a, b) => a + b, 0);
  const max = Math.max(1, ...entries.map(([, values]) => sum(values)));
  const span = width - labelWidth - 60;
  entries.forEach(([label, values], i) => {
    const y = top + i * rowHeight;
    const bar = svg("g", { class: "bar" });
    bar.dataset.label = label;
    bar.dataset.value = String(sum(values));
    const shown = label.length > labelChars ? `${label.slice(0, labelChars - 1)}…` : label;
    bar.append(
      svg("title", {}, `${label}: ${values.join(" + ")}`),
      svg("text", { x: labelWidth - 6, y: y + 16, "text-anchor": "end" }, shown),
    );
    let x = labelWidth;
    values.forEach((value, j) => {
      const w = (value / max) * span;
      bar.append(svg("rect", { x, y: y + 3, width: w, height: 18, class: series[j][2] }));
      x += w;
    });
    bar.append(svg("text", { x: x + 6, y: y + 16 }, String(sum(values))));
    chart.append(bar);
  });
}

// A cell a spreadsheet would run as a formula (=, +, -, @) is prefixed with a quote.
function csvCell(value) {
  let text = String(value ?? "");
  if (/^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

function exportCsv() {
  if (!usageRows) return;
  const columns = ["day", "key", "model", "requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens"];
  const lines = [columns.join(",")];
  for (const row of usageRows) lines.push(columns.map((c) => csvCell(row[c])).join(","));
  const blob = new Blob([`${lines.join("\n")}\n`], { type: "text/csv" });
  const link = el("a");
  link.href = URL.createObjectURL(blob);
  link.download = `puente-usage-${$("usage-since").value}-${$("usage-until").value}.csv`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 0);
}

// -- models, engines and reload ----------------------------------------------------------------

async function loadModels() {
  const body = $("models-table").tBodies[0];
  let report;
  try {
    report = await readiness(session.key);
  } catch (error) {
    $("models-overall").textContent = t("error.generic", { message: message(error) });
    return;
  }
  $("models-overall").textContent = t(report.status === "ready" ? "models.ready" : "models.notReady");
  body.replaceChildren();
  for (const [name, model] of Object.entries(report.models || {})) {
    const row = body.insertRow();
    row.dataset.model = name;
    const breaker = model.breaker || {};
    const endpoints = Object.entries(model.endpoints || {}).map(([url, state]) => `${url}: ${state}`);
    const required = model.required === undefined ? "" : t(model.required ? "yes" : "no");
    const cells = [name, model.state, required, breaker.state || "", endpoints.join("\n"),
      model.detail || breaker.last_error || ""];
    cells.forEach((text, i) => {
      const cell = row.insertCell();
      cell.textContent = text;
      if (i === 1) cell.className = `state state-${model.state}`;
    });
  }
}

function definition(list, term, value) {
  if (value === null || value === undefined || value === "" || value.length === 0) return;
  list.append(el("dt", term));
  const dd = el("dd");
  if (Array.isArray(value)) {
    const items = el("ul");
    for (const item of value) items.append(el("li", item));
    dd.append(items);
  } else {
    dd.textContent = value;
  }
  list.append(dd);
}

function samplingText(persona) {
  const parts = [];
  for (const [group, values] of [["=", persona.defaults], ["≤", persona.caps]]) {
    for (const [name, value] of Object.entries(values || {})) {
      if (value !== null && value !== undefined) parts.push(`${name} ${group} ${value}`);
    }
  }
  return parts.join(", ");
}

async function loadPersonas() {
  $("personas-error").textContent = "";
  let personas;
  try {
    personas = (await call(session.key, "GET", "/admin/personas")).data;
  } catch (error) {
    $("personas-error").textContent = t("error.generic", { message: message(error) });
    return;
  }
  $("personas-none").hidden = personas.length > 0;
  const list = $("personas-list");
  list.replaceChildren();
  for (const persona of personas) {
    const card = el("article", null, "persona");
    card.dataset.persona = persona.name;
    card.append(el("h3", persona.name));
    if (persona.description) card.append(el("p", persona.description, "hint"));
    const facts = el("dl");
    definition(facts, t("personas.model"), persona.available
      ? persona.model : `${persona.model} (${t("personas.unavailable")})`);
    definition(facts, t("personas.system"), persona.system);
    definition(facts, t("personas.rules"), persona.rules);
    definition(facts, t("personas.farewell"), persona.farewell);
    definition(facts, t("personas.clientSystem"), t(`personas.policy.${persona.client_system}`));
    definition(facts, t("personas.limits"), samplingText(persona));
    card.append(facts);
    if (persona.available) {
      const link = el("a", t("personas.try", { name: persona.name }), "try");
      link.href = `#playground?model=${encodeURIComponent(persona.name)}`;
      card.append(link);
    }
    list.append(card);
  }
}

async function reload() {
  const result = $("reload-result");
  result.textContent = "";
  $("reload").disabled = true;
  try {
    const done = await call(session.key, "POST", "/admin/reload");
    result.textContent = t("reload.done", {
      models: done.models.length,
      modelNames: done.models.join(", "),
      personas: done.personas.length,
      personaNames: done.personas.join(", "),
    });
    await Promise.allSettled([loadModels(), loadPersonas()]);
  } catch (error) {
    result.textContent = t("reload.failed", { message: message(error) });
  } finally {
    $("reload").disabled = false;
  }
}

function initAdmin() {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    createKey();
  });
  $("key-secret-done").addEventListener("click", () => {
    $("key-secret-value").textContent = "";
    $("key-secret").hidden = true;
  });
  $("usage-form").addEventListener("submit", (event) => {
    event.preventDefault();
    loadUsage();
  });
  for (const id of ["usage-group", "usage-measure"]) {
    $(id).addEventListener("change", () => usageRows && drawChart());
  }
  $("usage-csv").addEventListener("click", exportCsv);
  $("models-refresh").addEventListener("click", loadModels);
  $("reload").addEventListener("click", reload);
}

// -- start -----------------------------------------------------------------------------------

function start() {
  initLanguage();
  initLogin();
  initPlayground();
  initCompare();
  initAdmin();
  initCopyButtons();
  window.addEventListener("hashchange", () => {
    route(location.hash.slice(1));
    // A screen reader or keyboard user lands on the new page's heading, not the old link.
    document.querySelector(".view:not([hidden]) h1")?.focus();
  });
  document.body.dataset.ready = language();
  const remembered = localStorage.getItem(KEY_STORE);
  if (remembered) {
    login(remembered, true).catch(() => {
      localStorage.removeItem(KEY_STORE);
      route("login");
    });
  } else {
    route("login");
  }
}

start();
