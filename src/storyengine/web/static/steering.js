// storyengine's page (see app.js): the jobs that make a new version of the story: an edited beat or
// bible, a regenerated scene or dialogue, the enhancement's suggestions applied, a resume.
"use strict";

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
