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
  else if (kind === "chapter") (story.chapters = story.chapters || [])[index] = event.value;
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
