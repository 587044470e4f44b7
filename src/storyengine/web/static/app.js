// storyengine's page: uses only the JSON API under /api. No framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";
const TERMINAL = new Set(["run_done", "run_failed", "steer_done", "steer_failed"]);

const state = {
  run: null,        // the run summary from the API
  versions: [],     // version summaries
  viewing: null,    // version number shown, or null while a job is live
  story: null,      // the story shown (a version's, or the one being assembled live)
  source: null,     // the open EventSource
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

// -- starting and opening runs --
async function loadProviders() {
  try {
    const { providers } = await api("GET", "/api/providers");
    const select = $("provider");
    for (const name of providers) select.append(h("option", { value: name }, name));
  } catch (error) {
    showError("form-error", `Could not list providers: ${error.message}`);
  }
}

async function startRun(event) {
  event.preventDefault();
  showError("form-error", "");
  const body = { premise: $("premise").value };
  if ($("scenes").value) body.scenes = Number($("scenes").value);
  if ($("seed").value) body.seed = Number($("seed").value);
  if ($("provider").value) body.provider = $("provider").value;
  $("start").disabled = true;
  try {
    const run = await api("POST", "/api/runs", body);
    await openRun(run.id);
  } catch (error) {
    showError("form-error", error.message);
  } finally {
    $("start").disabled = false;
  }
}

async function openRun(id) {
  closeStream();
  const run = await api("GET", `/api/runs/${encodeURIComponent(id)}`);
  state.run = run;
  state.versions = run.versions;
  history.replaceState(null, "", `#run=${encodeURIComponent(id)}`);
  showError("run-error", run.error || "");
  $("compare-view").hidden = true;
  if (run.story) {
    showVersion(run.version, run.story);
  } else {
    state.viewing = null;
    state.story = emptyStory(run.premise);
    render();
  }
  renderVersions();
  loadRuns();
  if (run.status === "running" && !run.busy && run.orphaned) {
    // its process died while writing it: what it finished is kept, and it can go on from there
    const owner = run.owner && run.owner.pid ? ` (process ${run.owner.pid} on ${run.owner.host})` : "";
    setStatus("stopped", `Stopped: the process writing it is gone${owner}`);
  } else if (run.status === "running" && !run.busy) {
    // kept in the run store, but being written by another process (alive: it renews its heartbeat)
    const owner = run.owner && run.owner.pid ? ` (process ${run.owner.pid} on ${run.owner.host})` : "";
    setStatus("elsewhere", `Being written by another process${owner}`);
  } else {
    setStatus(run.status === "failed" ? "failed" : run.busy ? "running" : "done",
      run.busy ? `Working: ${run.job}` : run.status === "failed" ? "Run failed" : "Finished");
  }
  if (run.busy) follow(run.job_after);
  else if (!run.story) follow(-1); // a failed run: replay what it finished
}

async function loadRuns() {
  const runs = await api("GET", "/api/runs");
  const list = $("runs");
  list.replaceChildren();
  if (!runs.length) list.append(h("li", { class: "muted" }, "none yet"));
  for (const run of runs) {
    const current = state.run && state.run.id === run.id;
    const premise = run.premise.length > 70 ? `${run.premise.slice(0, 70)}…` : run.premise;
    list.append(h("li", { class: current ? "current" : null, "data-run": run.id, onclick: () => openRun(run.id) },
      h("div", {}, premise), h("div", { class: "muted" }, `${run.status}${run.busy ? " · working" : ""} · ${run.versions.length} version(s)`)));
  }
}

// -- following a run's events --
function follow(after) {
  closeStream();
  const source = new EventSource(withToken(`${runPath("/events")}?after=${after}`));
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

function onEvent(event) {
  if (!state.run || event.run_id !== state.run.id) return;
  switch (event.event) {
    case "run_started": // openRun has set up the (empty or partial) story
      setStatus("running", "Writing the story");
      break;
    case "steer_started":
      state.run.busy = true;
      state.viewing = null;
      state.story = clone(versionStory(event.base) || state.story);
      setStatus("running", `Working: ${event.job}`);
      render();
      break;
    case "step_started":
    case "step_done":
      progress(event);
      if (event.event === "step_done" && applyStep(state.story, event)) render();
      break;
    case "version_added":
      if (!state.versions.some((v) => v.number === event.version.number)) state.versions.push(event.version);
      renderVersions();
      break;
    default:
      if (TERMINAL.has(event.event)) finished(event);
  }
}

function applyStep(story, event) {
  const parts = event.name.split(".");
  if (!story || parts[parts.length - 1] === "draft") return false;
  const [kind, index] = [parts[0], Number(parts[1])];
  if (kind === "plot") story.plot = event.value;
  else if (kind === "bible") story.bible = event.value;
  else if (kind === "evaluation") story.evaluation = event.value;
  else if (kind === "enhancement") story.enhancement = event.value;
  else if (kind === "scene" || kind === "dialogue") {
    // A new scene drops its old dialogue: the lines that follow are written for it.
    story.scenes[index] = kind === "scene" ? { scene: event.value } : { ...story.scenes[index], dialogue: event.value };
  } else return false;
  return true;
}

async function finished(event) {
  closeStream();
  state.run.busy = false;
  if (event.event === "run_failed") state.run.status = "failed";
  if (event.event === "run_done") state.run.status = "done";
  const failed = event.event.endsWith("failed");
  const latest = state.versions.length ? state.versions[state.versions.length - 1].number : null;
  // The status changes only once the finished version is on the page.
  if (failed) {
    if (latest !== null) await viewVersion(latest);
    else render();
    showError("run-error", event.error);
    setStatus("failed", event.event === "run_failed" ? "Run failed" : `Failed: ${event.job}`, event);
  } else {
    await viewVersion(event.version);
    showError("run-error", "");
    setStatus("done", event.event === "run_done" ? "Finished" : `Done: ${event.job}`, event);
  }
  loadRuns();
}

// -- status line --
function progress(event) {
  const where = event.index ? ` ${event.index} of ${event.total}` : "";
  const verb = event.event === "step_started" ? "writing" : "done";
  $("status-step").textContent = `${event.step}${where} · ${event.stage} · ${verb}`;
  setCounters(event);
}

function setCounters(event) {
  if (event && event.tokens !== undefined) {
    $("status-tokens").hidden = false;
    $("status-tokens").textContent = `${event.tokens.toLocaleString()} tokens`;
    $("status-elapsed").hidden = false;
    $("status-elapsed").textContent = `${Number(event.elapsed).toFixed(1)} s`;
  }
}

function setStatus(kind, text, event) {
  $("status").dataset.status = kind;
  const failed = kind === "failed" && state.run && state.run.status === "failed" && !state.versions.length;
  $("resume").hidden = !(failed || kind === "stopped");
  $("status-text").textContent = text;
  if (kind !== "running") $("status-step").textContent = "";
  setCounters(event);
}

// -- versions --
function versionStory(number) {
  return state.viewing === number ? state.story : null;
}

async function viewVersion(number) {
  const version = await api("GET", runPath(`/versions/${number}`));
  showVersion(number, version.story);
  renderVersions();
}

function showVersion(number, story) {
  state.viewing = number;
  state.story = story;
  render();
}

function renderVersions() {
  $("versions-panel").hidden = !state.versions.length;
  const list = $("versions");
  list.replaceChildren();
  const latest = state.versions.length ? state.versions[state.versions.length - 1].number : null;
  for (const v of state.versions) {
    const from = v.parent ? ` (from v${v.parent})` : "";
    list.append(h("li", { class: v.number === state.viewing ? "current" : null, "data-version": v.number },
      h("span", { class: "label" }, h("b", {}, `v${v.number}`),
        ` ${v.label}${from}${v.seed !== null && v.seed !== undefined ? ` · seed ${v.seed}` : ""} · ${v.overall === null || v.overall === undefined ? "not evaluated" : `overall ${v.overall}/10`}`),
      h("button", { type: "button", class: "small secondary", onclick: () => viewVersion(v.number) }, "View"),
      v.number !== latest
        ? h("button", { type: "button", class: "small secondary", onclick: () => restore(v.number) }, "Restore")
        : null));
  }
  for (const [id, pick] of [["compare-a", state.versions.length - 1], ["compare-b", state.versions.length]]) {
    const select = $(id);
    const keep = select.options.length === state.versions.length ? select.value : null;
    select.replaceChildren(...state.versions.map((v) => h("option", { value: v.number }, `v${v.number}`)));
    select.value = keep || String(Math.max(1, pick)); // a new version: compare it with the one before
  }
}

async function restore(number) {
  try {
    await api("POST", runPath(`/versions/${number}/restore`));
    state.versions = await api("GET", runPath("/versions"));
    await viewVersion(state.versions[state.versions.length - 1].number);
  } catch (error) {
    showError("run-error", error.message);
  }
}

async function compareVersions() {
  const a = $("compare-a").value;
  const b = $("compare-b").value;
  try {
    renderCompare(await api("GET", `${runPath("/compare")}?a=${a}&b=${b}`));
  } catch (error) {
    showError("run-error", error.message);
  }
}

const CONTEXT = 2; // unchanged lines kept around each change in the comparison

function numbered(noun, indexes) {
  const list = indexes.map((i) => i + 1).join(", ");
  return indexes.length === 1 ? `${noun} ${list}` : `${noun}s ${list}`;
}

function renderCompare(result) {
  const view = $("compare-view");
  const changed = result.changed;
  const parts = [];
  if (changed.beats.length) parts.push(numbered("beat", changed.beats));
  if (changed.scenes.length) parts.push(numbered("scene", changed.scenes));
  if (changed.dialogue.length) parts.push(`dialogue of ${numbered("scene", changed.dialogue)}`);
  if (changed.evaluation) parts.push("evaluation");
  if (changed.enhancement) parts.push("enhancement");
  const rows = [];
  result.diff.forEach((block, n) => {
    const count = Math.max(block.a.length, block.b.length);
    const keepHead = n === 0 ? 0 : CONTEXT;
    const keepTail = n === result.diff.length - 1 ? 0 : CONTEXT;
    for (let i = 0; i < count; i++) {
      const hidden = block.op === "equal" && i >= keepHead && i < count - keepTail;
      if (hidden && i === keepHead) {
        const skipped = count - keepHead - keepTail;
        rows.push(h("tr", { class: "skipped" }, h("td", { colspan: 2 }, `… ${skipped} unchanged line(s) …`)));
      }
      if (hidden) continue;
      rows.push(h("tr", { class: block.op }, h("td", { class: "a" }, block.a[i] ?? ""), h("td", { class: "b" }, block.b[i] ?? "")));
    }
  });
  view.replaceChildren(
    h("div", { class: "head" }, h("h3", {}, `v${result.a} ↔ v${result.b}`),
      h("button", { type: "button", class: "small secondary", onclick: () => { view.hidden = true; } }, "Close")),
    h("p", { class: "muted", id: "compare-summary" }, parts.length ? `Changed: ${parts.join("; ")}.` : "No differences."),
    h("table", { class: "diff" }, h("thead", {}, h("tr", {}, h("th", {}, `v${result.a}`), h("th", {}, `v${result.b}`))),
      h("tbody", {}, rows)));
  view.hidden = false;
}

// -- steering --
function canSteer() {
  return state.viewing !== null && state.run && !state.run.busy;
}

async function steer(path, body) {
  showError("run-error", "");
  try {
    const job = await api("POST", runPath(path), { ...body, base: state.viewing });
    state.run.busy = true;
    setStatus("running", `Working: ${job.job}`);
    render();
    follow(job.after);
  } catch (error) {
    showError("run-error", error.message);
  }
}

async function resumeRun() {
  showError("run-error", "");
  try {
    const job = await api("POST", runPath("/resume"));
    state.run.busy = true;
    state.run.status = "running";
    setStatus("running", "Resuming from the last finished step");
    follow(job.after);
  } catch (error) {
    showError("run-error", error.message);
  }
}

function editBeat(item, beat, index) {
  const name = h("input", { value: beat.name, "aria-label": "beat name" });
  const purpose = h("textarea", { rows: 2, "aria-label": "beat purpose" }, beat.purpose);
  const tension = h("input", { type: "number", min: 1, max: 10, value: beat.tension, "aria-label": "tension" });
  const save = () => steer(`/beats/${index}`, { name: name.value, purpose: purpose.value, tension: Number(tension.value) });
  item.replaceChildren(h("div", { class: "beat-edit" }, name, purpose, h("label", {}, "Tension ", tension),
    h("div", { class: "buttons" },
      h("button", { type: "button", class: "small", onclick: save }, "Save and regenerate from here"),
      h("button", { type: "button", class: "small secondary", onclick: render }, "Cancel"))));
}

// -- rendering the story --
function emptyStory(premise) {
  return { premise, plot: null, scenes: [], evaluation: null, enhancement: null, meta: {} };
}

function render() {
  const story = state.story;
  $("story").hidden = !story;
  if (!story) return;
  const plot = story.plot;
  const stopped = state.run && state.run.status === "failed";
  $("title").textContent = plot ? plot.title || "Untitled story" : stopped ? "The run stopped before the plot" : "Writing the plot…";
  $("premise-view").textContent = story.premise;
  renderExports();
  $("structure").textContent = plot ? `(${plot.structure_type})` : "";
  $("characters").textContent = !story.bible && plot ? `Characters: ${plot.characters.join("; ")}` : "";
  renderBible(story.bible, (story.gaps || {}).bible);
  $("chart").replaceChildren(plot ? tensionChart(plot.beats) : h("p", { class: "pending" }, "waiting for the plot…"));
  $("beats").replaceChildren(...(plot ? plot.beats.map(beatItem) : []));
  $("scenes-view").replaceChildren(...sceneCards(story));
  const gaps = story.gaps || {};
  renderEvaluation(story.evaluation, gaps.evaluation);
  renderQuality((story.meta && story.meta.quality) || null);
  renderEnhancement(story.enhancement, gaps.enhancement);
  renderRevision((story.meta && story.meta.revision) || null);
  renderCalls((story.meta && story.meta.calls) || []);
}

function renderExports() {
  const box = $("exports");
  box.replaceChildren();
  if (state.viewing === null) return;
  for (const [fmt, label] of [["json", "JSON"], ["markdown", "Markdown"], ["fountain", "Fountain"], ["epub", "EPUB"]]) {
    box.append(h("a", { href: withToken(runPath(`/versions/${state.viewing}/export/${fmt}`)), download: "", "data-format": fmt }, label));
  }
}

function tensionChart(beats) {
  const width = 640, height = 230, left = 34, right = 14, top = 28, bottom = 44;
  const step = (width - left - right) / beats.length;
  const x = (i) => left + step * (i + 0.5);
  const y = (t) => top + ((10 - t) / 9) * (height - top - bottom);
  const chart = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "tension arc", id: "tension-chart" });
  for (const t of [1, 4, 7, 10]) {
    chart.append(s("line", { class: "grid", x1: left, x2: width - right, y1: y(t), y2: y(t) }),
      s("text", { class: "axis-label", x: left - 8, y: y(t) + 4, "text-anchor": "end" }, t));
  }
  const points = beats.map((b, i) => `${x(i)},${y(b.tension)}`);
  const base = y(1);
  chart.append(s("polygon", { class: "area", points: `${x(0)},${base} ${points.join(" ")} ${x(beats.length - 1)},${base}` }));
  chart.append(s("polyline", { class: "arc", points: points.join(" ") }));
  beats.forEach((beat, i) => {
    const name = beat.name.length > 14 ? `${beat.name.slice(0, 13)}…` : beat.name;
    chart.append(
      s("circle", { class: "beat-point", cx: x(i), cy: y(beat.tension), r: 5, "data-beat": i, "data-tension": beat.tension },
        s("title", {}, `Beat ${i + 1}: ${beat.name} — tension ${beat.tension}`)),
      s("text", { class: "beat-value", x: x(i), y: y(beat.tension) - 10 }, beat.tension),
      s("text", { class: "axis-label", x: x(i), y: height - bottom + 18, "text-anchor": "middle" }, i + 1),
      s("text", { class: "axis-label", x: x(i), y: height - bottom + 32, "text-anchor": "middle" }, beats.length <= 8 ? name : ""));
  });
  chart.append(s("text", { class: "axis-label", x: 4, y: 11 }, "tension"));
  return chart;
}

function beatItem(beat, index) {
  const item = h("li", { class: "beat", "data-beat": index },
    h("b", {}, beat.name), " ", h("span", { class: "tension" }, `tension ${beat.tension}/10`), " — ", beat.purpose, " ");
  if (canSteer()) {
    item.append(h("button", { type: "button", class: "small secondary", onclick: () => editBeat(item, beat, index) }, "Edit"));
  }
  return item;
}

function sceneCards(story) {
  const total = story.plot ? Math.max(story.scenes.length, 0) : 0;
  if (!total) return [h("p", { class: "pending" }, "waiting for scenes…")];
  const cards = [];
  for (let i = 0; i < story.scenes.length; i++) {
    const item = story.scenes[i] || {};
    const scene = item.scene;
    const head = h("div", { class: "scene-head" },
      h("h4", {}, scene ? `Scene ${i + 1}: ${scene.title}` : `Scene ${i + 1}`),
      scene && scene.beat ? h("span", { class: "muted" }, `beat: ${scene.beat}`) : null);
    if (canSteer()) {
      head.append(
        h("button", { type: "button", class: "small secondary", "data-action": "regenerate-scene", onclick: () => steer(`/scenes/${i}/regenerate`, {}) }, "Regenerate scene"),
        h("button", { type: "button", class: "small secondary", "data-action": "regenerate-dialogue", onclick: () => steer(`/scenes/${i}/dialogue/regenerate`, {}) }, "Regenerate dialogue"));
    }
    cards.push(h("div", { class: "scene", "data-scene": i }, head, screenplay(scene, item.dialogue, item.prose)));
  }
  return cards;
}

function screenplay(scene, dialogue, prose) {
  const page = h("div", { class: "screenplay" });
  if (!scene) {
    add(page, h("p", { class: "pending" }, "writing…"));
    return page;
  }
  // The scene as the reader gets it: its prose (paragraphs), or its summary when it has none.
  const paragraphs = (prose || "").split(/\n\s*\n/).map((p) => p.trim()).filter(Boolean);
  add(page, h("div", { class: "slugline" }, scene.setting),
    ...(paragraphs.length ? paragraphs : [scene.summary]).map((p) => h("p", { class: "action prose" }, p)),
    scene.mood ? h("p", { class: "action muted" }, `Mood: ${scene.mood}`) : null);
  if (!dialogue) {
    add(page, h("p", { class: "pending" }, "dialogue being written…"));
    return page;
  }
  for (const line of dialogue.lines) {
    add(page, h("div", { class: "cue" }, line.speaker),
      line.direction ? h("div", { class: "parenthetical" }, `(${line.direction})`) : null,
      h("div", { class: "speech" }, line.text));
  }
  return page;
}

function renderEvaluation(evaluation, gap) {
  const box = $("evaluation");
  if (!evaluation) {
    box.replaceChildren(gap ? h("p", { class: "gap" }, `Missing: ${gap}`) : h("p", { class: "pending" }, "not yet evaluated"), retryGaps(gap));
    return;
  }
  box.replaceChildren(
    h("div", { class: "overall", id: "overall" }, `${evaluation.overall}/10`),
    h("p", {}, evaluation.summary),
    ...evaluation.scores.map((score) => h("div", { class: "score", title: score.rationale, "data-criterion": score.criterion },
      h("span", {}, score.criterion), h("div", { class: "bar" }, h("span", { style: `width:${score.score * 10}%` })),
      h("b", {}, score.score))));
}

// A story with a missing part (a gap) can ask for it again: a resume of its run.
function retryGaps(gap) {
  const latest = state.versions.length ? state.versions[state.versions.length - 1].number : null;
  if (!gap || !canSteer() || state.viewing !== latest) return null;
  return h("button", { type: "button", class: "small", "data-action": "retry-gaps", onclick: resumeRun }, "Try the missing parts again");
}

function renderQuality(quality) {
  const table = $("quality");
  if (!quality) {
    table.replaceChildren(h("tbody", {}, h("tr", {}, h("td", { class: "muted" }, "measured when the story is finished"))));
    return;
  }
  table.replaceChildren(h("tbody", {}, quality.rows.map(([name, value]) => h("tr", {}, h("td", {}, name), h("td", {}, value)))));
}

function renderEnhancement(enhancement, gap) {
  const box = $("enhancement");
  if (!enhancement) {
    box.replaceChildren(gap ? h("p", { class: "gap" }, `Missing: ${gap}`) : h("p", { class: "pending" }, "no suggestions yet"),
      state.story && state.story.evaluation ? retryGaps(gap) : null);
    return;
  }
  box.replaceChildren(h("p", {}, enhancement.summary), h("ul", { class: "suggestions" },
    enhancement.suggestions.map((item) => h("li", {}, h("b", {}, item.target), `: ${item.problem} → ${item.change}`))));
  if (canSteer()) {
    box.append(h("button", { type: "button", class: "small", "data-action": "apply-suggestions", onclick: applySuggestions },
      "Apply suggestions"));
  }
}

// -- revision: the suggestions applied as a new version --
async function applySuggestions() {
  showError("run-error", "");
  try {
    const job = await api("POST", runPath("/revise"), { base: state.viewing });
    state.run.busy = true;
    const skipped = job.untargeted.map((u) => `"${u.target}"`);
    setStatus("running", `Revising scene(s) ${[...new Set(job.applied.flatMap((a) => a.scenes))].join(", ")}` +
      (skipped.length ? `; not applied (they name nothing in the story): ${skipped.join(", ")}` : ""));
    render();
    follow(job.after);
  } catch (error) {
    showError("run-error", error.message);
  }
}

function renderRevision(revision) {
  const box = $("revision");
  box.hidden = !revision;
  if (!revision) return;
  const notes = [h("p", {}, `Revised from version ${revision.base}: rewrote scene(s) ${revision.revised.join(", ") || "none"}.`)];
  for (const [scene, worse] of Object.entries(revision.kept_earlier || {})) {
    notes.push(h("p", { class: "muted" }, `Scene ${scene} kept as it was: its rewrite made the story worse (${worse.join("; ")}).`));
  }
  for (const item of revision.untargeted || []) {
    notes.push(h("p", { class: "muted" }, `Not applied, it names nothing in the story: "${item.target}".`));
  }
  const rows = Object.entries(revision.before || {}).map(([name, before]) => {
    const after = (revision.after || {})[name];
    return h("tr", { "data-measure": name }, h("td", {}, name), h("td", {}, before ?? "-"), h("td", {}, after ?? "-"));
  });
  box.replaceChildren(h("h3", {}, "Revision"), ...notes,
    h("table", { class: "quality", id: "revision-measures" },
      h("thead", {}, h("tr", {}, h("th", {}, "quality by code"), h("th", {}, "before"), h("th", {}, "after"))),
      h("tbody", {}, rows)));
}

// -- the story bible: shown, and edited as a new version --
function renderBible(bible, gap) {
  const box = $("bible");
  if (!bible) {
    box.replaceChildren();
    return;
  }
  const people = bible.characters.map((c) => h("li", { "data-character": c.name },
    h("b", {}, c.name), ` (${c.pronouns}), ${c.role}: ${c.description}`));
  box.replaceChildren(h("h4", {}, "Story bible"), h("ul", { class: "people" }, people),
    h("p", {}, h("b", {}, "Setting: "), bible.setting),
    bible.facts.length ? h("ul", { class: "facts" }, bible.facts.map((f) => h("li", {}, f))) : null,
    gap ? h("p", { class: "gap" }, `Plain bible: ${gap}`) : null);
  if (canSteer()) {
    box.append(h("button", { type: "button", class: "small secondary", "data-action": "edit-bible", onclick: () => editBible(bible) }, "Edit bible"));
  }
}

function characterRow(c) {
  const pronouns = h("select", { "aria-label": "pronouns" },
    ["she/her", "he/him", "they/them"].map((p) => h("option", { value: p, selected: p === c.pronouns ? "" : null }, p)));
  const row = h("div", { class: "bible-person" },
    h("input", { value: c.name, "aria-label": "name", "data-field": "name" }),
    h("input", { value: c.role, "aria-label": "role", "data-field": "role" }),
    h("input", { value: c.description, "aria-label": "description", "data-field": "description" }),
    pronouns);
  row.append(h("button", { type: "button", class: "small secondary", onclick: () => row.remove() }, "Remove"));
  return row;
}

function editBible(bible) {
  const people = h("div", { class: "bible-people" }, bible.characters.map(characterRow));
  const setting = h("input", { value: bible.setting, "aria-label": "setting" });
  const facts = h("textarea", { rows: 3, "aria-label": "facts, one a line" }, bible.facts.join("\n"));
  const edited = () => ({
    characters: [...people.querySelectorAll(".bible-person")].map((row) => ({
      name: row.querySelector('[data-field="name"]').value,
      role: row.querySelector('[data-field="role"]').value,
      description: row.querySelector('[data-field="description"]').value,
      pronouns: row.querySelector("select").value,
    })),
    setting: setting.value,
    facts: facts.value.split("\n").map((f) => f.trim()).filter(Boolean),
  });
  const save = async () => {
    showError("run-error", "");
    try {
      const plan = await api("POST", runPath("/bible"), { bible: edited(), dry_run: true, base: state.viewing });
      const removed = plan.removed.length ? ` It removes ${plan.removed.join(", ")}.` : "";
      const what = plan.scenes.length ? `This regenerates scene(s) ${plan.scenes.join(", ")}.` : "No scene depends on this change.";
      if (!window.confirm(`${what}${removed} Continue?`)) return;
      await steer("/bible", { bible: edited() });
    } catch (error) {
      showError("run-error", error.message);
    }
  };
  $("bible").replaceChildren(h("h4", {}, "Edit the story bible"), people,
    h("button", { type: "button", class: "small secondary", onclick: () => people.append(characterRow({ name: "", role: "", description: "", pronouns: "they/them" })) }, "Add character"),
    h("label", {}, "Setting ", setting), h("label", {}, "Facts ", facts),
    h("div", { class: "buttons" },
      h("button", { type: "button", class: "small", "data-action": "save-bible", onclick: save }, "Save and regenerate"),
      h("button", { type: "button", class: "small secondary", onclick: render }, "Cancel")));
}

function renderCalls(calls) {
  const table = $("calls");
  const rows = calls.filter((c) => c.kind === "call");
  if (!rows.length) {
    table.replaceChildren(h("tbody", {}, h("tr", {}, h("td", { class: "muted" }, "the call log arrives with the finished story"))));
    return;
  }
  const head = ["component", "stage", "provider", "model", "attempts", "cache hit", "latency", "tokens", "outcome"];
  table.replaceChildren(h("thead", {}, h("tr", {}, head.map((name) => h("th", {}, name)))),
    h("tbody", {}, rows.map((c) => h("tr", { class: "call" },
      h("td", {}, c.component), h("td", {}, c.stage), h("td", {}, c.provider), h("td", {}, c.model),
      h("td", { class: "num" }, c.attempt), h("td", {}, c.cache_hit ? "yes" : "no"),
      h("td", { class: "num" }, `${Number(c.latency_s).toFixed(2)} s`),
      h("td", { class: "num" }, c.prompt_tokens + c.completion_tokens),
      h("td", { class: `outcome-${c.outcome}` }, c.outcome + (c.error ? `: ${c.error}` : ""))))));
}

// -- start --
$("run-form").addEventListener("submit", startRun);
$("compare").addEventListener("click", compareVersions);
$("resume").addEventListener("click", resumeRun);
loadProviders();
loadRuns().then(() => {
  const match = location.hash.match(/^#run=(.+)$/);
  if (match) openRun(decodeURIComponent(match[1])).catch((error) => showError("run-error", error.message));
});
