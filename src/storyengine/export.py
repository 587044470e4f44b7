"""A Story as Markdown, Fountain (the screenplay format) and JSON files."""

from __future__ import annotations

import json
from pathlib import Path

from .schemas import Story


def to_json(story: Story) -> str:
    return json.dumps(story.model_dump(mode="json"), ensure_ascii=False, indent=2) + "\n"


def to_markdown(story: Story) -> str:
    plot = story.plot
    out = [f"# {plot.title or 'Untitled story'}", "", f"*{story.premise}*", ""]
    out += [f"## Plot ({plot.structure_type})", ""]
    if plot.characters:
        out += ["**Characters:** " + ", ".join(plot.characters), ""]
    out += ["| # | Beat | Purpose | Tension |", "|---|---|---|---|"]
    for i, beat in enumerate(plot.beats, 1):
        out.append(f"| {i} | {_cell(beat.name)} | {_cell(beat.purpose)} | {beat.tension} |")
    out.append("")
    for i, item in enumerate(story.scenes, 1):
        scene = item.scene
        out += [f"## Scene {i}: {scene.title}", ""]
        out += [f"*{scene.setting}*" + (f" — beat: {scene.beat}" if scene.beat else ""), ""]
        out += [scene.summary, "", "**Characters:** " + ", ".join(scene.characters), ""]
        for line in item.dialogue.lines:
            direction = f" *({line.direction})*" if line.direction else ""
            out.append(f"> **{line.speaker}**{direction}: {line.text}  ")
        out.append("")
    ev = story.evaluation
    out += ["## Evaluation", ""]
    if ev is None:
        out += [f"*Missing: {story.gaps.get('evaluation', 'not made')}*"]
    else:
        out += [f"Overall: **{ev.overall}/10**. {ev.summary}", ""]
        out += ["| Criterion | Score | Rationale |", "|---|---|---|"]
        out += [f"| {s.criterion} | {s.score} | {_cell(s.rationale)} |" for s in ev.scores]
    out += ["", "## Enhancement", ""]
    if story.enhancement is None:
        out += [f"*Missing: {story.gaps.get('enhancement', 'not made')}*"]
    else:
        out += [story.enhancement.summary, ""]
        out += [f"- **{s.target}**: {s.problem} → {s.change}" for s in story.enhancement.suggestions]
    return "\n".join(out) + "\n"


def to_fountain(story: Story) -> str:
    """The scenes and their dialogue as a Fountain screenplay (https://fountain.io syntax)."""
    out = [f"Title: {story.plot.title or 'Untitled'}", f"Notes: {story.premise}", ""]
    for item in story.scenes:
        scene = item.scene
        heading = scene.setting.upper().replace("\n", " ")
        # A leading "." forces a scene heading whatever the setting's words are.
        out += ["", f".{heading}", "", scene.summary, ""]
        for line in item.dialogue.lines:
            out.append(f"@{line.speaker.upper()}" if not line.speaker.isupper() else line.speaker)
            if line.direction:
                out.append(f"({line.direction})")
            out += [line.text, ""]
    return "\n".join(out).rstrip() + "\n"


def write_story(story: Story, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "story.json",
        "markdown": out_dir / "story.md",
        "fountain": out_dir / "story.fountain",
    }
    paths["json"].write_text(to_json(story), encoding="utf-8")
    paths["markdown"].write_text(to_markdown(story), encoding="utf-8")
    paths["fountain"].write_text(to_fountain(story), encoding="utf-8")
    return paths


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
