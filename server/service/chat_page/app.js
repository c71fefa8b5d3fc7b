// corvid chat: a plain-JavaScript client of the server's OpenAI-compatible API, served
// from the binary itself. It talks to the origin it came from only (the page's CSP
// forbids every other load): GET /v1/models fills the model list, POST
// /v1/chat/completions with stream:true is read as Server-Sent Events. Model text is
// always inserted as text (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const ui = {
  model: $("model"), reload: $("reload"), token: $("token"), rag: $("rag"),
  maxTokens: $("max-tokens"), temperature: $("temperature"), system: $("system"), clear: $("clear"),
  status: $("model-status"), log: $("log"), composer: $("composer"),
  prompt: $("prompt"), send: $("send"), stop: $("stop"),
};

// The conversation sent with every request after the system prompt: user and
// assistant turns (reasoning is shown, never sent back, as DeepSeek's API asks).
let history = [];
let running = null; // the AbortController of the generation in flight

function setStatus(text, isError) {
  ui.status.textContent = text;
  ui.status.classList.toggle("error", !!isError);
}

function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  const t = ui.token.value.trim();
  if (t) h["Authorization"] = "Bearer " + t;
  return h;
}

// The message of an OpenAI error object, or the status line.
async function errorText(resp) {
  let msg = resp.status + " " + resp.statusText;
  try {
    const body = await resp.json();
    if (body && body.error && body.error.message) msg = resp.status + ": " + body.error.message;
  } catch (e) { /* not JSON: keep the status line */ }
  if (resp.status === 401) msg += " (enter a bearer token above)";
  return msg;
}

async function loadModels() {
  const keep = ui.model.value;
  setStatus("Loading models…");
  let list;
  try {
    const resp = await fetch("/v1/models", { headers: headers(false) });
    if (!resp.ok) { setStatus(await errorText(resp), true); return; }
    list = (await resp.json()).data || [];
  } catch (e) {
    setStatus("Cannot list models: " + e.message, true);
    return;
  }
  ui.model.replaceChildren();
  // Model names are routed by the traffic weights; versions are pinned.
  const groups = { model: "Models (routed by traffic weight)", version: "Versions (pinned)" };
  for (const kind of Object.keys(groups)) {
    const entries = list.filter((m) => ((m.corvid && m.corvid.kind) || "version") === kind);
    if (!entries.length) continue;
    const g = document.createElement("optgroup");
    g.label = groups[kind];
    for (const m of entries) {
      const o = document.createElement("option");
      o.value = m.id;
      o.textContent = m.corvid && m.corvid.state ? m.id + " (" + m.corvid.state + ")" : m.id;
      g.append(o);
    }
    ui.model.append(g);
  }
  if (keep && [...ui.model.options].some((o) => o.value === keep)) ui.model.value = keep;
  setStatus(list.length ? list.length + " models and versions served" : "No model is served", !list.length);
}

// One entry of the log; returns its parts so a stream can fill them in.
function addMessage(role, text) {
  const li = document.createElement("li");
  li.className = "msg " + role;
  const who = document.createElement("div");
  who.className = "who";
  who.textContent = role === "user" ? "You" : "Assistant";
  const content = document.createElement("div");
  content.className = "content";
  content.textContent = text || "";
  const meta = document.createElement("div");
  meta.className = "meta";
  li.append(who, content, meta);
  ui.log.append(li);
  li.scrollIntoView({ block: "end" });
  return { li, content, meta, reasoning: null, reasoningText: null };
}

// The reasoning of a message: a <details> folded away, above the answer.
function reasoningOf(m) {
  if (!m.reasoning) {
    m.reasoning = document.createElement("details");
    m.reasoning.className = "reasoning";
    const s = document.createElement("summary");
    s.textContent = "Reasoning";
    m.reasoningText = document.createElement("div");
    m.reasoning.append(s, m.reasoningText);
    m.li.insertBefore(m.reasoning, m.content);
  }
  return m.reasoningText;
}

// Citations as a numbered list; only http(s) URLs become links.
function showCitations(m, citations) {
  if (!Array.isArray(citations) || !citations.length) return;
  const ol = document.createElement("ol");
  ol.className = "citations";
  ol.setAttribute("aria-label", "Sources");
  for (const c of citations) {
    const li = document.createElement("li");
    const label = c.title || c.document_id || c.url || "source";
    let href = null;
    try {
      const u = new URL(c.url);
      if (u.protocol === "http:" || u.protocol === "https:") href = u.href;
    } catch (e) { /* no URL or not absolute */ }
    if (href) {
      const a = document.createElement("a");
      a.href = href;
      a.target = "_blank";
      a.rel = "noopener noreferrer";
      a.textContent = label;
      li.append(a);
    } else {
      li.textContent = label;
    }
    if (c.source) li.append(" (" + c.source + ")");
    ol.append(li);
  }
  m.li.insertBefore(ol, m.meta);
}

// Server-Sent Events from a fetch body: calls onData with each event's data.
async function readEvents(body, onData) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut).replace(/^\r?\n\r?\n/, "");
      const data = block.split(/\r?\n/).filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
      if (data && onData(data) === false) { reader.cancel(); return; }
    }
  }
}

async function send(text) {
  const model = ui.model.value;
  history.push({ role: "user", content: text });
  addMessage("user", text);
  const m = addMessage("assistant", "");
  m.li.setAttribute("aria-busy", "true");
  const system = ui.system.value.trim();
  const req = {
    model, stream: true, stream_options: { include_usage: true },
    messages: system ? [{ role: "system", content: system }, ...history] : history,
    max_tokens: Number(ui.maxTokens.value) || 256,
    temperature: Number(ui.temperature.value),
  };
  if (ui.rag.checked) req.corvid = { rag: { enable: true } };

  const ctl = new AbortController();
  running = ctl;
  ui.send.disabled = true;
  ui.stop.disabled = false;
  const started = performance.now();
  let answer = "", finish = null, usage = null, version = null, ended = false;
  try {
    const resp = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(true), body: JSON.stringify(req), signal: ctl.signal,
    });
    if (!resp.ok) throw new Error(await errorText(resp));
    await readEvents(resp.body, (data) => {
      if (data === "[DONE]") { ended = true; return false; }
      const ev = JSON.parse(data);
      if (ev.error) throw new Error(ev.error.message || "generation failed");
      if (ev.citations) showCitations(m, ev.citations); // RAG: the first event, before any text
      if (ev.model) version = ev.model;
      if (ev.usage) usage = ev.usage;
      for (const c of ev.choices || []) {
        const d = c.delta || {};
        if (d.reasoning_content) reasoningOf(m).textContent += d.reasoning_content;
        if (d.content) { answer += d.content; m.content.textContent = answer; }
        if (c.finish_reason) finish = c.finish_reason;
      }
      m.li.scrollIntoView({ block: "end" });
      return true;
    });
    if (!ended) throw new Error("the stream ended without [DONE]");
  } catch (e) {
    if (e.name === "AbortError") {
      finish = "stopped";
    } else {
      m.li.classList.add("error");
      m.content.textContent = answer + (answer ? "\n" : "") + e.message;
      finish = "error";
    }
  } finally {
    running = null;
    ui.send.disabled = false;
    ui.stop.disabled = true;
    m.li.removeAttribute("aria-busy");
    m.li.dataset.finish = finish || "";
  }
  // A turn with no answer (stopped at once, or failed) is left out of the conversation.
  if (answer) history.push({ role: "assistant", content: answer });
  else history.pop();
  const secs = ((performance.now() - started) / 1000).toFixed(1);
  const parts = [version || model, secs + " s"];
  if (usage) parts.push(usage.completion_tokens + " tokens");
  if (finish) parts.push(finish === "stopped" ? "stopped by you" : "finish: " + finish);
  m.meta.textContent = parts.join(" · ");
}

ui.composer.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = ui.prompt.value.trim();
  if (!text || running) return;
  if (!ui.model.value) { setStatus("Pick a model first (Reload models)", true); return; }
  ui.prompt.value = "";
  send(text);
});
ui.prompt.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    ui.composer.requestSubmit();
  }
});
ui.stop.addEventListener("click", () => { if (running) running.abort(); });
ui.reload.addEventListener("click", loadModels);
ui.token.addEventListener("change", loadModels);
ui.clear.addEventListener("click", () => {
  if (running) running.abort();
  history = [];
  ui.log.replaceChildren();
  ui.prompt.focus();
});
document.getElementById("settings").addEventListener("submit", (e) => e.preventDefault());
loadModels();
