// storyengine's page (see app.js): the story shown (a version's, or the one being written): its plot
// and tension chart, beats, scenes as a screenplay (in folded chapters when it has chapters),
// evaluation, quality measured by code, enhancement, revision notes and the call log.
"use strict";

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
  if (!story.bible && liveDraft("bible.draft")) $("bible").replaceChildren(h("h4", {}, "Story bible"), liveDraft("bible.draft"));
  $("chart").replaceChildren(plot ? tensionChart(plot.beats) : liveDraft("plot.draft") || h("p", { class: "pending" }, "waiting for the plot…"));
  $("beats").replaceChildren(...(plot ? plot.beats.map(beatItem) : liveBeats()));
  $("scenes-view").replaceChildren(...sceneCards(story), ...otherDrafts());
  const gaps = story.gaps || {};
  renderEvaluation(story.evaluation, gaps.evaluation);
  if (!story.evaluation && liveDraft("evaluation.draft")) $("evaluation").replaceChildren(liveDraft("evaluation.draft"));
  renderQuality((story.meta && story.meta.quality) || null);
  renderEnhancement(story.enhancement, gaps.enhancement);
  if (!story.enhancement && liveDraft("enhancement.draft")) $("enhancement").replaceChildren(liveDraft("enhancement.draft"));
  renderRevision((story.meta && story.meta.revision) || null);
  renderCalls((story.meta && story.meta.calls) || []);
}

// A draft as it is being written (runs.js keeps `state.drafts` and grows the text in place), shown
// in the block of the part it drafts until the checked part replaces it; null when none is live.
function liveDraft(name) {
  const draft = state.drafts[name];
  return draft ? h("pre", { class: "draft-live", "data-draft": name }, draft.text) : null;
}

// Drafts of parts with no block of their own on the page (a chapter's plan), under the scenes.
const PLACED = new Set(["plot", "bible", "scene", "dialogue", "evaluation", "enhancement"]);

function otherDrafts() {
  return Object.keys(state.drafts).filter((name) => !PLACED.has(name.split(".")[0]))
    .map((name) => h("div", { class: "scene" }, h("h4", {}, name.replace(/\.draft$/, "").replace(".", " ")), liveDraft(name)));
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

// The plot's beats that passed their checks so far (part_done events), before the whole plot is.
function liveBeats() {
  return (state.parts.plot || []).filter((part) => part.of === "beats").map(({ value }, i) =>
    h("li", { class: "beat part-live", "data-beat": i }, h("b", {}, value.name), " ",
      h("span", { class: "tension" }, `tension ${value.tension}/10`), " — ", value.purpose));
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
  // a scene being drafted has its card (the scenes before it may still be in the works)
  const drafted = Object.keys(state.drafts).filter((name) => /^(scene|dialogue)\.\d+\.draft$/.test(name))
    .map((name) => Number(name.split(".")[1]) + 1);
  const total = story.plot ? Math.max(story.scenes.length, ...drafted, 0) : 0;
  if (!total) return [h("p", { class: "pending" }, "waiting for scenes…")];
  const cards = [];
  for (let i = 0; i < total; i++) {
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
    cards.push(h("div", { class: "scene", "data-scene": i }, head, screenplay(scene, item.dialogue, item.prose, i)));
  }
  return chapterBlocks(story.chapters || [], cards, story.scenes);
}

// A story with chapters shows each as a folded block of its scenes' cards. The first is open at
// first; a re-render (a live step, a steering job) keeps open the ones the reader opened.
function chapterBlocks(chapters, cards, scenes) {
  if (!chapters.filter(Boolean).length) return cards;
  const shown = [...$("scenes-view").querySelectorAll("details.chapter")];
  const open = new Set(shown.length ? shown.filter((d) => d.open).map((d) => d.dataset.chapter) : ["0"]);
  let start = 0;
  const blocks = chapters.map((chapter, i) => {
    const count = chapter.beats.length;
    const held = cards.slice(start, start + count);
    // While the run writes, a chapter says how many of its scenes have their dialogue.
    const written = scenes.slice(start, start + count).filter((item) => item && item.dialogue).length;
    start += count;
    const progress = written < count ? ` (${written} written)` : "";
    return h("details", { class: "chapter", "data-chapter": i, open: open.has(String(i)) },
      h("summary", {}, `Chapter ${i + 1}: ${chapter.title} — ${count} scene${count === 1 ? "" : "s"}${progress}`),
      h("p", { class: "muted chapter-goal" }, chapter.goal), ...held);
  });
  return [...blocks.filter(Boolean), ...cards.slice(start)]; // scenes no chapter holds (not yet planned)
}

function screenplay(scene, dialogue, prose, index) {
  const page = h("div", { class: "screenplay" });
  if (!scene) {
    add(page, liveDraft(`scene.${index}.draft`) || h("p", { class: "pending" }, "writing…"));
    return page;
  }
  // The scene as the reader gets it: its prose (paragraphs), or its summary when it has none.
  const paragraphs = (prose || "").split(/\n\s*\n/).map((p) => p.trim()).filter(Boolean);
  add(page, h("div", { class: "slugline" }, scene.setting),
    ...(paragraphs.length ? paragraphs : [scene.summary]).map((p) => h("p", { class: "action prose" }, p)),
    scene.mood ? h("p", { class: "action muted" }, `Mood: ${scene.mood}`) : null);
  if (!dialogue) {
    add(page, liveDraft(`dialogue.${index}.draft`) || h("p", { class: "pending" }, "dialogue being written…"));
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
