// ggserve demo page: ask with streaming (POST /v1/ask, SSE), show sources, send feedback.
// No framework and no CDN; every model or document string goes in with textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_SLOT = "ggserve.apiKey"; // sessionStorage only: gone when the tab closes
let responseId = null;

$("key").value = sessionStorage.getItem(KEY_SLOT) || "";
$("key").addEventListener("input", () => sessionStorage.setItem(KEY_SLOT, $("key").value));

function headers() {
  const h = { "Content-Type": "application/json", "Accept": "text/event-stream" };
  const key = $("key").value.trim();
  if (key) h["X-API-KEY"] = key;
  return h;
}

function setStatus(el, text, isError) {
  el.textContent = text;
  el.classList.toggle("error", Boolean(isError));
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return body.error && body.error.message ? body.error.message : response.statusText;
  } catch (_) {
    return response.statusText;
  }
}

function showSources(sources) {
  const list = $("sources");
  list.replaceChildren();
  for (const s of sources || []) {
    const item = document.createElement("li");
    const title = document.createElement("strong");
    title.textContent = [s.document, s.heading].filter(Boolean).join(" › ");
    const score = document.createElement("span");
    score.className = "muted";
    score.textContent = ` (score ${Number(s.score).toFixed(2)})`;
    const snippet = document.createElement("span");
    snippet.className = "snippet";
    snippet.textContent = s.snippet;
    item.append(title, score, snippet);
    list.append(item);
  }
}

// Server-sent events over fetch (EventSource cannot POST or send headers).
async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    // Normalise the whole buffer: a "\r\n" may be split across two reads.
    buffer = (buffer + decoder.decode(value, { stream: true })).replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(line[5] === " " ? 6 : 5));
      }
      if (data.length) yield { event, data: data.join("\n") };
    }
  }
}

async function ask(event) {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question) return;
  responseId = null;
  $("result").hidden = false;
  $("feedback").hidden = true;
  $("correction-box").hidden = true;
  $("answer").textContent = "";
  $("answer").dataset.tokens = "0";
  $("result").removeAttribute("data-response-id");
  showSources([]);
  setStatus($("feedback-status"), "");
  setStatus($("status"), "thinking…");
  $("ask").disabled = true;
  try {
    const response = await fetch("/v1/ask", {
      method: "POST",
      headers: headers(),
      body: JSON.stringify({ question, stream: true }),
    });
    if (!response.ok) {
      setStatus($("status"), `${response.status}: ${await errorMessage(response)}`, true);
      return;
    }
    for await (const { event: name, data } of sseEvents(response)) {
      if (name === "token") {
        $("answer").textContent += data;
        $("answer").dataset.tokens = String(Number($("answer").dataset.tokens) + 1);
      } else if (name === "sources") {
        showSources(JSON.parse(data).sources);
      } else if (name === "done") {
        const done = JSON.parse(data);
        showSources(done.sources);
        responseId = done.id || null;
        const t = done.timings || {};
        setStatus($("status"), `${done.usage.completion_tokens} tokens, ` +
          `${Math.round(t.total_ms || 0)} ms` + (done.grounded ? ", grounded" : ""));
      } else if (name === "error") {
        const err = JSON.parse(data).error || {};
        setStatus($("status"), err.message || "the answer was interrupted", true);
      }
    }
    if (responseId) {
      $("result").dataset.responseId = responseId;
      $("feedback").hidden = false;
    }
  } catch (err) {
    setStatus($("status"), String(err), true);
  } finally {
    $("ask").disabled = false;
  }
}

async function sendFeedback(rating, correction) {
  if (!responseId) return;
  const body = { response_id: responseId, rating };
  if (correction) body.correction = correction;
  const response = await fetch("/v1/feedback", {
    method: "POST", headers: headers(), body: JSON.stringify(body),
  });
  if (response.ok) {
    setStatus($("feedback-status"), correction ? "correction sent, thank you" : "thanks!");
    $("feedback-status").dataset.sent = String(Number($("feedback-status").dataset.sent || 0) + 1);
  } else {
    setStatus($("feedback-status"), `${response.status}: ${await errorMessage(response)}`, true);
  }
}

function choose(button) {
  for (const b of [$("thumb-up"), $("thumb-down")]) b.classList.toggle("chosen", b === button);
}

$("ask-form").addEventListener("submit", ask);
$("thumb-up").addEventListener("click", () => {
  choose($("thumb-up"));
  $("correction-box").hidden = true;
  sendFeedback(1);
});
$("thumb-down").addEventListener("click", () => {
  choose($("thumb-down"));
  $("correction-box").hidden = false;
  sendFeedback(-1);
});
$("send-correction").addEventListener("click", () => {
  const text = $("correction").value.trim();
  if (text) sendFeedback(-1, text);
});
