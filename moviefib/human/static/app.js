// The annotation page: asks the server for the next question, shows it, sends the answer or the skip.
"use strict";

const $ = (id) => document.getElementById(id);
const STORE_KEY = "moviefib-human-annotator";
const READY_NAMES = ["nothing", "metadata", "current frame", "future frames", "enough data"];
let mode = "text";
let current = null;   // the question on screen
let shownAt = 0;      // performance.now() when it was shown (or its clip started playing)
let clipStarted = false;
let busy = false;

function say(text, ok) {
  $("message").textContent = text || "";
  $("message").className = ok ? "ok" : "";
}

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  const resp = await fetch(path, init);
  let data = null;
  try { data = await resp.json(); } catch (e) { data = {error: `server error (${resp.status})`}; }
  if (!resp.ok) {
    const err = new Error(data.error || `server error (${resp.status})`);
    err.status = resp.status;
    throw err;
  }
  return data;
}

function reportVideoState() {
  const v = $("clip");
  const cap = $("video-state");
  cap.dataset.readyState = String(v.readyState);
  const state = v.error ? `error ${v.error.code}` : `readyState ${v.readyState} (${READY_NAMES[v.readyState]})`;
  cap.textContent = `video: ${state}${v.paused ? "" : ", playing"}`;
}

function showProgress(p) {
  const text = `${p.done} done in ${mode} mode, ${p.remaining} to go`;
  $("progress").textContent = text;
  $("done-progress").textContent = text;
}

function annotator() { return localStorage.getItem(STORE_KEY) || ""; }

async function loadNext() {
  const data = await api(`/api/next?annotator=${encodeURIComponent(annotator())}`);
  showProgress(data.progress);
  // Questions left out because their clip cannot be served whole: say so instead of a partial clip.
  if (data.notices && data.notices.length) say(data.notices.join(" "));
  current = data.question;
  $("login").hidden = true;
  $("who").hidden = false;
  $("who-name").textContent = annotator();
  if (data.done) {
    $("task").hidden = true;
    $("done").hidden = false;
    $("clip").removeAttribute("src");
    return;
  }
  $("done").hidden = true;
  $("task").hidden = false;
  $("answer-form").dataset.questionId = current.question_id;
  $("before").textContent = current.before;
  $("after").textContent = current.after;
  $("answer").value = "";
  if (mode === "video") {
    const v = $("clip");
    clipStarted = false;
    v.src = current.clip_url;
    v.load();
    reportVideoState();
  }
  $("answer").focus();
  shownAt = performance.now();
}

async function send(skipped) {
  if (busy || !current) return;
  busy = true;
  $("submit").disabled = $("skip").disabled = true;
  try {
    await api("/api/answer", {
      annotator: annotator(), question_id: current.question_id, answer: skipped ? null : $("answer").value,
      seconds: (performance.now() - shownAt) / 1000, skipped: skipped});
    say(skipped ? "Skipped." : "Saved.", true);
    await loadNext();
  } catch (err) {
    say(err.message);
    // A refusal by the protocol (409) means this question is no longer for us: move on.
    if (err.status === 409) await loadNext().catch((e) => say(e.message));
  } finally {
    busy = false;
    $("submit").disabled = $("skip").disabled = false;
  }
}

async function start() {
  const name = $("annotator").value.trim();
  localStorage.setItem(STORE_KEY, name);
  try {
    say("");
    await loadNext();
  } catch (err) {
    localStorage.removeItem(STORE_KEY);
    $("login").hidden = false;
    say(err.message);
  }
}

async function init() {
  // Handlers first, synchronously: a form submitted before the config arrives must not reload the page.
  const config = api("/api/config");
  for (const ev of ["loadedmetadata", "loadeddata", "canplay", "canplaythrough", "playing", "pause", "error", "emptied"]) {
    $("clip").addEventListener(ev, reportVideoState);
  }
  // The clock starts when the clip can be watched, not while it is being fetched or transcoded.
  $("clip").addEventListener("playing", () => {
    if (!clipStarted) { clipStarted = true; shownAt = performance.now(); }
  });
  $("login-form").addEventListener("submit", (e) => { e.preventDefault(); config.then(start); });
  $("answer-form").addEventListener("submit", (e) => { e.preventDefault(); send(false); });
  $("skip").addEventListener("click", () => send(true));
  $("change").addEventListener("click", () => {
    localStorage.removeItem(STORE_KEY);
    location.reload();
  });
  const cfg = await config;
  mode = cfg.mode;
  $("mode").textContent = `${mode} mode`;
  $("title").textContent = cfg.title;
  $("video-box").hidden = mode !== "video";
  if (annotator()) {
    $("annotator").value = annotator();
    await start();
  }
}

init().catch((err) => say(err.message));
