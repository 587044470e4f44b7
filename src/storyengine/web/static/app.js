// storyengine's page: uses only the JSON API under /api. No framework, no build step.
//
// The page is plain scripts that share one global scope, run in this order:
// - app.js (this one): the page's state, the DOM helpers, and everything that talks to the server
//   (the API with the access token, a run's event stream, the download links); it loads the others;
// - runs.js: starting and opening runs, the list of runs, following a run's events, the status line;
// - versions.js: the versions of a run, restoring one, comparing two;
// - steering.js: the jobs that make a new version (edited beats and bible, regenerated scenes, applied
//   suggestions, a resume);
// - story.js: the story on the page (plot, tension chart, scenes, evaluation, quality, calls).
// Once the last has run, `start` wires the page.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";
const TERMINAL = new Set(["run_done", "run_failed", "run_stopped", "steer_done", "steer_failed"]);

const state = {
  run: null,        // the run summary from the API
  versions: [],     // version summaries
  viewing: null,    // version number shown, or null while a job is live
  story: null,      // the story shown (a version's, or the one being assembled live)
  source: null,     // the open EventSource
  drafts: {},       // the drafts being written, by name ("scene.0.draft"): {step, index, total, text}
  parts: {},        // the parts of an object being structured that passed, by step name (part_done)
  finishedSeq: null, // the seq of the last job end shown (a stop's answer and its event are one)
};

// -- small helpers --
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  return add(el, ...children);
}

// Append children, skipping null, undefined and false (plain `append` would print "null").
function add(el, ...children) {
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) {
      el.append(child instanceof Node ? child : String(child));
    }
  }
  return el;
}

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    // The page's Content-Security-Policy refuses style attributes; a style set by script is fine.
    else if (key === "style") el.style.cssText = String(value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
}

// The access token of a server bound beyond loopback: given once as ?token= in the page's URL,
// kept for this tab, sent with every API call (as a header, or in the URL where none can be set).
const TOKEN = (() => {
  const given = new URLSearchParams(location.search).get("token");
  try {
    if (given) sessionStorage.setItem("storyengine-token", given);
    return given || sessionStorage.getItem("storyengine-token") || "";
  } catch (error) {
    return given || "";
  }
})();
const withToken = (path) => (TOKEN ? `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(TOKEN)}` : path);

// Every POST is JSON, also one without a body: the server refuses any other (a form or text/plain
// body is what another site's page could send).
async function api(method, path, body) {
  const options = { method, headers: {} };
  if (TOKEN) options.headers.Authorization = `Bearer ${TOKEN}`;
  if (body !== undefined || method !== "GET") {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body === undefined ? {} : body);
  }
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
  return data;
}

function showError(id, message) {
  const el = $(id);
  el.textContent = message || "";
  el.hidden = !message;
}

const clone = (value) => JSON.parse(JSON.stringify(value));
const runPath = (suffix = "") => `/api/runs/${encodeURIComponent(state.run.id)}${suffix}`;

// -- following a run's events (what each event does to the page: runs.js) --
function follow(after) {
  closeStream();
  // drafts=true: also the text of each draft as it is written (not replayed: only what is live)
  const source = new EventSource(withToken(`${runPath("/events")}?after=${after}&drafts=true`));
  state.source = source;
  source.onmessage = (message) => onEvent(JSON.parse(message.data));
  source.onerror = () => {
    if (state.source === source && !(state.run && state.run.busy)) closeStream();
  };
}

function closeStream() {
  if (state.source) state.source.close();
  state.source = null;
}

// -- the download links of the version shown --
function renderExports() {
  const box = $("exports");
  box.replaceChildren();
  if (state.viewing === null) return;
  for (const [fmt, label] of [["json", "JSON"], ["markdown", "Markdown"], ["fountain", "Fountain"], ["epub", "EPUB"]]) {
    box.append(h("a", { href: withToken(runPath(`/versions/${state.viewing}/export/${fmt}`)), download: "", "data-format": fmt }, label));
  }
}

// -- start: once the page's other scripts have run --
const PARTS = ["runs.js", "versions.js", "steering.js", "story.js"];

function start() {
  $("run-form").addEventListener("submit", startRun);
  $("compare").addEventListener("click", compareVersions);
  $("resume").addEventListener("click", resumeRun);
  $("stop").addEventListener("click", stopRun);
  loadProviders();
  loadRuns().then(() => {
    const match = location.hash.match(/^#run=(.+)$/);
    if (match) openRun(decodeURIComponent(match[1])).catch((error) => showError("run-error", error.message));
  });
}

PARTS.forEach((name, i) => {
  const script = h("script", { src: `/static/${name}`, onload: i === PARTS.length - 1 ? start : null });
  script.async = false; // run in order, not as each arrives
  document.body.append(script);
});
