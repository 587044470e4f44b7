// storyengine's page (see app.js): starting and opening runs, the list of runs, what each event of a
// run's stream does to the page, and the status line.
"use strict";

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
  if ($("chapters").value) body.chapters = Number($("chapters").value);
  if ($("scenes-per-chapter").value) body.scenes_per_chapter = Number($("scenes-per-chapter").value);
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
  state.drafts = {};
  state.parts = {};
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

// Stop the run's job: what it finished is kept, and Resume goes on from there. The stream ends
// with the same `run_stopped` event the answer carries (whichever comes first is shown).
async function stopRun() {
  showError("run-error", "");
  $("stop").disabled = true;
  try {
    const answer = await api("POST", runPath("/stop"));
    if (state.run && state.run.id === answer.run && answer.event) finished(answer);
  } catch (error) {
    $("stop").disabled = false;
    showError("run-error", error.message);
  }
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

// -- what a run's events do to the page --
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
      if (event.event === "step_done") doneStep(event);
      break;
    case "parts_started": // an object filled in parts (a small model's) is begun, or begun again
      state.parts[event.name] = [];
      break;
    case "part_done": // one part passed its checks: the plot's beats appear one by one
      (state.parts[event.name] ||= []).push(event);
      if (event.name === "plot" && event.of === "beats") render();
      break;
    case "draft_restarted": // a new attempt: what the last one showed is dropped
      state.drafts[event.name] = { ...event, text: "" };
      drawDrafts(event.name);
      break;
    case "draft_delta":
      (state.drafts[event.name] ||= { ...event, text: "" }).text += event.text;
      drawDrafts(event.name);
      break;
    case "version_added":
      if (!state.versions.some((v) => v.number === event.version.number)) state.versions.push(event.version);
      renderVersions();
      break;
    default:
      if (TERMINAL.has(event.event)) finished(event);
  }
}

// A finished draft stays on the page (its whole text) until its checked part replaces it.
function doneStep(event) {
  const draft = event.name.endsWith(".draft") && state.drafts[event.name];
  if (draft) {
    draft.text = String(event.value);
    drawDrafts(event.name);
  }
  delete state.parts[event.name]; // the checked object replaces its parts
  const replaced = `${event.name}.draft` in state.drafts;
  delete state.drafts[`${event.name}.draft`];
  if (applyStep(state.story, event) || replaced) render();
}

// Drafts grow a piece (a word) at a time: the page is updated at most once a frame. A draft that
// has no place on the page yet gets one from a render (which places every live draft).
const dirtyDrafts = new Set();
let draftFrame = null;

function drawDrafts(name) {
  dirtyDrafts.add(name);
  if (draftFrame === null) draftFrame = requestAnimationFrame(flushDrafts);
}

function flushDrafts() {
  draftFrame = null;
  let placed = true;
  for (const name of dirtyDrafts) {
    const draft = state.drafts[name];
    const el = document.querySelector(`pre.draft-live[data-draft="${CSS.escape(name)}"]`);
    if (draft && el) el.textContent = draft.text;
    else if (draft) placed = false;
  }
  dirtyDrafts.clear();
  if (!placed) render();
}

function applyStep(story, event) {
  const parts = event.name.split(".");
  if (!story || parts[parts.length - 1] === "draft") return false;
  const [kind, index] = [parts[0], Number(parts[1])];
  if (kind === "plot") story.plot = event.value;
  else if (kind === "bible") story.bible = event.value;
  else if (kind === "evaluation") story.evaluation = event.value;
  else if (kind === "enhancement") story.enhancement = event.value;
  else if (kind === "chapter") (story.chapters = story.chapters || [])[index] = event.value;
  else if (kind === "scene" || kind === "dialogue") {
    // A new scene drops its old dialogue: the lines that follow are written for it.
    story.scenes[index] = kind === "scene" ? { scene: event.value } : { ...story.scenes[index], dialogue: event.value };
  } else return false;
  return true;
}

async function finished(event) {
  if (event.seq !== undefined && event.seq === state.finishedSeq) return; // shown already
  state.finishedSeq = event.seq;
  closeStream();
  state.run.busy = false;
  state.drafts = {}; // a draft left unfinished is void
  state.parts = {};
  if (event.event === "run_stopped") {
    state.run.status = "failed"; // stopped: resumable, as a failed run is
    render();
    showError("run-error", "");
    const message = event.message || "stopped; resume to continue";
    setStatus("stopped", message.charAt(0).toUpperCase() + message.slice(1), event);
    loadRuns();
    return;
  }
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
  $("stop").hidden = !(kind === "running" && state.run && state.run.busy);
  $("stop").disabled = false;
  $("status-text").textContent = text;
  if (kind !== "running") $("status-step").textContent = "";
  setCounters(event);
}
