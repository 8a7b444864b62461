// The hcx web chat (SPEC §8): multi-turn chat streamed from /v1/chat/completions.
// Everything the model or the user wrote is shown with textContent, never parsed as HTML.
// A module: strict, deferred, and nothing leaks into the global scope.

const $ = (id) => document.getElementById(id);
const log = $("log");
const input = $("input");
const sendButton = $("send");
const stopButton = $("stop");
const statusLine = $("status");
const settings = {
  system: $("system"),
  temperature: $("temperature"),
  topP: $("top-p"),
  maxTokens: $("max-tokens"),
  apiKey: $("api-key"),
};

let history = []; // {role, content} of finished turns
let controller = null; // AbortController of the request in flight
let composing = false; // an IME (Korean, Japanese, ...) is composing a character

function headers() {
  const result = { "Content-Type": "application/json" };
  const key = settings.apiKey.value.trim();
  if (key) result.Authorization = `Bearer ${key}`;
  return result;
}

function bubble(role, text) {
  const item = document.createElement("div");
  item.className = `msg ${role}`;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "나 · You" : role === "assistant" ? "hcx" : "error";
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  item.append(who, body);
  log.append(item);
  log.scrollTop = log.scrollHeight;
  return body;
}

function setBusy(busy) {
  sendButton.disabled = busy;
  stopButton.hidden = !busy;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return body.error?.message ?? `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

// Server-sent events arrive in arbitrary slices: keep the unfinished tail for the next read.
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (data === "[DONE]") return;
      if (data) yield JSON.parse(data);
    }
  }
}

function requestBody() {
  const messages = [];
  const system = settings.system.value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...history);
  return {
    messages,
    stream: true,
    stream_options: { include_usage: true },
    temperature: Number(settings.temperature.value),
    top_p: Number(settings.topP.value),
    max_tokens: Number(settings.maxTokens.value),
  };
}

async function send() {
  const text = input.value;
  if (!text.trim() || controller) return;
  input.value = "";
  history.push({ role: "user", content: text });
  bubble("user", text);
  const answer = bubble("assistant", "");
  const item = answer.parentElement;
  item.dataset.state = "streaming";
  controller = new AbortController();
  setBusy(true);
  statusLine.textContent = "";
  let reply = "";
  try {
    const response = await fetch("v1/chat/completions", {
      method: "POST",
      headers: headers(),
      body: JSON.stringify(requestBody()),
      signal: controller.signal,
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    for await (const chunk of events(response)) {
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) {
        const u = chunk.usage;
        statusLine.textContent = `${u.prompt_tokens} prompt + ${u.completion_tokens} generated tokens`;
      }
      const choice = chunk.choices?.[0];
      if (choice?.delta?.content) {
        reply += choice.delta.content;
        answer.textContent = reply;
        log.scrollTop = log.scrollHeight;
      }
      if (choice?.finish_reason === "length") item.dataset.truncated = "true";
    }
    history.push({ role: "assistant", content: reply });
    item.dataset.state = "done";
  } catch (error) {
    if (error.name === "AbortError") {
      // Stopped by the user: the partial answer stays part of the conversation.
      history.push({ role: "assistant", content: reply });
      item.dataset.state = "stopped";
    } else {
      history.pop();
      item.dataset.state = "error";
      item.classList.add("failed");
      bubble("error", error.message);
    }
  } finally {
    controller = null;
    setBusy(false);
    input.focus();
  }
}

function reset() {
  if (controller) controller.abort();
  history = [];
  log.replaceChildren();
  statusLine.textContent = "";
  input.value = "";
  input.focus();
}

async function showModel() {
  try {
    const response = await fetch("v1/models", { headers: headers() });
    if (response.ok) $("model").textContent = (await response.json()).data[0].id;
  } catch {
    // the page works without the model name
  }
}

function bindSetting(element, storageKey, output) {
  const saved = localStorage.getItem(storageKey);
  if (saved !== null) element.value = saved;
  const show = () => {
    if (output) output.textContent = element.value;
  };
  element.addEventListener("input", () => {
    localStorage.setItem(storageKey, element.value);
    show();
  });
  show();
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});
// Enter sends, but not while an IME composes: the Enter that commits a Hangul syllable is not a send.
input.addEventListener("compositionstart", () => {
  composing = true;
});
input.addEventListener("compositionend", () => {
  composing = false;
});
input.addEventListener("keydown", (event) => {
  if (event.key !== "Enter" || event.shiftKey) return;
  if (composing || event.isComposing || event.keyCode === 229) return;
  event.preventDefault();
  send();
});
stopButton.addEventListener("click", () => controller?.abort());
$("reset").addEventListener("click", reset);
bindSetting(settings.system, "hcx.system");
bindSetting(settings.temperature, "hcx.temperature", $("temperature-value"));
bindSetting(settings.topP, "hcx.top_p", $("top-p-value"));
bindSetting(settings.maxTokens, "hcx.max_tokens");
settings.apiKey.value = sessionStorage.getItem("hcx.api_key") ?? "";
settings.apiKey.addEventListener("change", () => {
  sessionStorage.setItem("hcx.api_key", settings.apiKey.value);
  showModel();
});
showModel();
input.focus();
