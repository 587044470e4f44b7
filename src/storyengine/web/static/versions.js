// storyengine's page (see app.js): the versions of a run, viewing and restoring one, comparing two.
"use strict";

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
