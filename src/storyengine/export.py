"""A Story as Markdown (the story to read), Fountain (the screenplay format) and JSON files;
`write_story` also writes the EPUB book of `epub.py`.

story.md reads as a story: the title, then each scene as prose (`StoryScene.prose`, or the
scene's summary when it has none) with its dialogue after it; the plot, the evaluation beside
the quality report computed by code, and the enhancement follow as an appendix. A story with
chapters has a table of contents after its premise (a link to each chapter's heading, by the id
GitHub gives it) and its scenes under `## Chapter N: Title` headings with the chapter's goal in
italics, each scene a level lower (`###`); the scenes are numbered through the whole story.

story.fountain is Fountain (https://fountain.io/syntax): a title page, a forced scene heading
per scene, the prose as action, character cues in capitals, parentheticals, dialogue; a
chapter is a section (`# Chapter N: Title`) with its goal as the section's synopsis. Text is
escaped so that a parser reads nothing as something else: an action line that would read as a
cue, heading, transition, section, synopsis, lyric, note or centered text is forced to action
with `!`; emphasis characters and note/boneyard openers are escaped inside every line.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path

import regex

from .epub import to_epub
from .errors import InputError
from .quality import quality_report, scene_prose
from .schemas import Chapter, Story, StoryScene


def to_json(story: Story) -> str:
    return json.dumps(story.model_dump(mode="json"), ensure_ascii=False, indent=2) + "\n"


# -- Markdown --


def to_markdown(story: Story) -> str:
    plot = story.plot
    out = [f"# {_md_inline(plot.title or 'Untitled story')}", "", f"*{_md_inline(story.premise)}*", ""]
    if story.chapters:  # the table of contents: a link to each chapter's heading
        names = [chapter_heading(n, chapter) for n, chapter in enumerate(story.chapters, 1)]
        out += [*(f"- [{_md_inline(name)}](#{_anchor(name)})" for name in names), ""]
    number = 0
    for n, (chapter, items) in enumerate(story.chapter_scenes(), 1):
        if chapter is not None:
            out += [f"## {_md_inline(chapter_heading(n, chapter))}", "", f"*{_md_inline(chapter.goal)}*", ""]
        for item in items:
            number += 1
            out += _scene_markdown(number, item, "###" if chapter else "##")
    out += ["---", "", "# Appendix", ""]
    out += _plot_section(story)
    if story.bible is not None:
        out += _bible_section(story)
    out += _evaluation_section(story)
    out += ["## Enhancement", ""]
    if story.enhancement is None:
        out += [f"*Missing: {_md_inline(story.gaps.get('enhancement', 'not made'))}*", ""]
    else:
        out += [_md_line(story.enhancement.summary), ""]
        out += [
            f"- **{_md_inline(s.target)}**: {_md_inline(s.problem)} → {_md_inline(s.change)}"
            for s in story.enhancement.suggestions
        ]
    return "\n".join(out).rstrip() + "\n"


def chapter_heading(number: int, chapter: Chapter) -> str:
    """A chapter as the exports name it: "Chapter 2: The Storm"."""
    return f"Chapter {number}: {_one_line(chapter.title)}"


def _scene_markdown(number: int, item: StoryScene, level: str) -> list[str]:
    """A scene under a heading of `level` ("##", or "###" inside a chapter): its setting, its prose
    and its dialogue."""
    scene = item.scene
    out = [f"{level} Scene {number}: {_md_inline(scene.title)}", "", f"*{_md_inline(scene.setting)}*", ""]
    for paragraph in _paragraphs(scene_prose(item)):
        out += [_md_line(paragraph), ""]
    for line in item.dialogue.lines:
        direction = f" *({_md_inline(line.direction)})*" if line.direction else ""
        out += [f"**{_md_inline(line.speaker)}**{direction}: {_md_inline(line.text)}", ""]
    return out


def _anchor(heading: str) -> str:
    """The id GitHub (as GitLab and pandoc's gfm) gives a heading of this text: lower case, every
    character but letters, marks, digits, connectors, spaces and hyphens dropped, spaces as hyphens."""
    return regex.sub(r"[^\p{L}\p{M}\p{N}\p{Pc} -]", "", heading.lower()).replace(" ", "-")


def _bible_section(story: Story) -> list[str]:
    assert story.bible is not None
    out = ["## Story bible", "", "| Name | Pronouns | Role | Who they are |", "|---|---|---|---|"]
    out += [
        f"| {_cell(c.name)} | {c.pronouns} | {_cell(c.role)} | {_cell(c.description)} |"
        for c in story.bible.characters
    ]
    out += ["", f"**Setting:** {_md_inline(story.bible.setting)}", ""]
    out += [f"- {_md_inline(fact)}" for fact in story.bible.facts]
    return [*out, ""]


def _plot_section(story: Story) -> list[str]:
    plot = story.plot
    out = [f"## Plot ({_md_inline(plot.structure_type)})", ""]
    if plot.characters:
        out += ["**Characters:** " + ", ".join(_md_inline(c) for c in plot.characters), ""]
    out += ["| # | Beat | Purpose | Tension |", "|---|---|---|---|"]
    for i, beat in enumerate(plot.beats, 1):
        out.append(f"| {i} | {_cell(beat.name)} | {_cell(beat.purpose)} | {beat.tension} |")
    out.append("")
    for i, item in enumerate(story.scenes, 1):
        realises = f" (beat: {_md_inline(item.scene.beat)})" if item.scene.beat else ""
        out.append(f"{i}. **{_md_inline(item.scene.title)}**{realises}: {_md_inline(item.scene.summary)}")
    return [*out, ""]


def _evaluation_section(story: Story) -> list[str]:
    ev = story.evaluation
    report = quality_report(story)
    out = ["## Evaluation", ""]
    if ev is None:
        missing = story.gaps.get("evaluation", "not made")
        out += [f"*The model's evaluation is missing: {_md_inline(missing)}*"]
    elif not report.rubric_reliable:
        out += [
            "**The model's scores below are not reliable:** "
            + "; ".join(map(_md_inline, report.rubric_notes)),
            "",
        ]
    if ev is not None:
        out += [f"The model's verdict: **{ev.overall}/10**. {_md_inline(ev.summary)}", ""]
        out += ["| Criterion | Score | Rationale |", "|---|---|---|"]
        out += [f"| {s.criterion} | {s.score} | {_cell(s.rationale)} |" for s in ev.scores]
    out += ["", "### Quality measured by code", "", "| Measure | Value |", "|---|---|"]
    out += [f"| {_cell(name)} | {_cell(value)} |" for name, value in report.as_rows()]
    return [*out, ""]


def _paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]


def _md_inline(text: str) -> str:
    """Text on one line, with the characters Markdown would read as markup escaped."""
    return re.sub(r"([\\`*_<>\[\]|])", r"\\\1", " ".join(text.split()))


def _md_line(text: str) -> str:
    """A paragraph: inline escapes, and no line start that makes a heading, quote or list."""
    line = _md_inline(text)
    return "\\" + line if re.match(r"(?:#|>|[-+=](?:\s|$)|\d+[.)](?:\s|$))", line) else line


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# -- Fountain --

# What a line must not start with in action (Fountain would read it as another element).
_SPECIAL_START = re.compile(r"^(?:[!@#=~>.]|\[\[|/\*|(?:INT|EXT|EST|INT\./EXT|INT/EXT|I/E)[. ])", re.I)


def to_fountain(story: Story) -> str:
    """The story as a Fountain screenplay: each scene's prose as action, its dialogue as dialogue."""
    title = _one_line(story.plot.title or "Untitled")
    out = [
        f"Title: {_fountain_text(title)}",
        "Credit: Written with storyengine",
        f"Notes: {_one_line(story.premise)}",
        "",
    ]
    for n, (chapter, items) in enumerate(story.chapter_scenes(), 1):
        if chapter is not None:  # a section, and its synopsis (neither is printed in a screenplay)
            section = _fountain_text(chapter_heading(n, chapter))
            out += ["", f"# {section}", f"= {_fountain_text(_one_line(chapter.goal))}", ""]
        for item in items:
            out += _fountain_scene(item)
    return "\n".join(out).rstrip() + "\n"


def _fountain_scene(item: StoryScene) -> list[str]:
    scene = item.scene
    heading = _fountain_text(_one_line(scene.setting).upper().lstrip(".!@#=~> ")) or "SCENE"
    # A leading "." forces a scene heading whatever the setting's words are.
    out = ["", f".{heading}", ""]
    for paragraph in _paragraphs(scene_prose(item)):
        out += [_action(paragraph), ""]
    for line in item.dialogue.lines:
        out.append(_cue(line.speaker))
        if line.direction:
            out.append(f"({_fountain_text(_one_line(line.direction)).strip('()')})")
        out += [_speech(line.text), ""]
    return out


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _fountain_text(text: str) -> str:
    """Inline escapes: emphasis markers, notes and boneyard openers are not markup here."""
    text = re.sub(r"([*_\\])", r"\\\1", text)
    return text.replace("[[", "[ [").replace("]]", "] ]").replace("/*", "/ *").replace("*/", "* /")


def _action(paragraph: str) -> str:
    """One action paragraph, forced to action (`!`) when Fountain would read it as anything else."""
    text = _fountain_text(_one_line(paragraph))
    letters = [c for c in text if c.isalpha()]
    looks_like_cue = bool(letters) and all(c.isupper() for c in letters)
    centered = text.startswith(">") or text.endswith("<")
    if looks_like_cue or centered or _SPECIAL_START.match(text) or text.upper().endswith("TO:"):
        return "!" + text
    return text


def _cue(speaker: str) -> str:
    """A character cue: the name in capitals, forced with `@` (a name with non-Latin letters or
    an extension-like ending would otherwise not read as a cue)."""
    name = _one_line(speaker).upper().lstrip("!@#=~>.")
    return f"@{name}"


def _speech(text: str) -> str:
    """A dialogue line on one line, without a start Fountain reads as lyrics or another element."""
    line = _fountain_text(_one_line(text))
    return re.sub(r"^[~!@#=>.]+\s*", "", line) or "..."


STORY_FILES = {
    "json": "story.json",
    "markdown": "story.md",
    "fountain": "story.fountain",
    "epub": "story.epub",
}
"""The files `write_story` writes into a story's folder, by kind."""


def write_story(story: Story, out_dir: Path) -> dict[str, Path]:
    """Write the story's four files into `out_dir`; their paths by kind.

    Every file is made whole first (an error leaves the folder as it was), written to a new temp
    file in the folder and renamed over its name: a reader never sees half a file, and a symlink
    in a file's place is replaced, never written through (it could point anywhere). Whether the
    folder may be written at all is `check_story_dir`'s question, asked before."""
    bodies = {
        "json": to_json(story).encode("utf-8"),
        "markdown": to_markdown(story).encode("utf-8"),
        "fountain": to_fountain(story).encode("utf-8"),
        "epub": to_epub(story),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {kind: out_dir / name for kind, name in STORY_FILES.items()}
    for kind, body in bodies.items():
        _replace_file(paths[kind], body)
    return paths


def _replace_file(path: Path, body: bytes) -> None:
    """Put `body` at `path` by a new file renamed over it (the rename replaces a link, it does not
    follow it); the temp file is opened O_EXCL|O_NOFOLLOW, and removed when anything fails."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)  # the umask applies, as for any file the user writes
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(body)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def story_run_of(run_id: str) -> str:
    """The run a story belongs to: a steering job's id (`RUN.steer-3f2a9c`) belongs to RUN."""
    return run_id.split(".steer-")[0]


def folder_story_run(out_dir: Path) -> str | None:
    """The run of the story in `out_dir`: None when it holds no story file; "" when it holds one
    whose run cannot be told (no readable story.json with a run id, or a story file that is a
    link, which is never trusted)."""
    present = [out_dir / name for name in STORY_FILES.values() if os.path.lexists(out_dir / name)]
    if not present:
        return None
    if any(path.is_symlink() for path in present):
        return ""
    try:
        data = json.loads((out_dir / STORY_FILES["json"]).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    meta = data.get("meta") if isinstance(data, dict) else None
    run_id = meta.get("run_id") if isinstance(meta, dict) else None
    return story_run_of(run_id) if isinstance(run_id, str) and run_id else ""


def check_story_dir(
    out_dir: Path, run_id: str | None, *, force: bool = False, what: str = "--out", instead: str = "folder"
) -> None:
    """InputError when `out_dir` holds a story of another run than `run_id` (None: a new run, so
    any story there is another's) and `force` is not set: writing would silently replace it.
    Rewriting the same run's folder (a resume, a revision of it) is allowed. `what` names the
    folder in the message, `instead` what to give instead."""
    found = folder_story_run(out_dir)
    if force or found is None or (run_id is not None and found == story_run_of(run_id)):
        return
    held = f"the story of run {found}" if found else "story files of an unknown run (or links)"
    raise InputError(
        f"{what} {out_dir} already holds {held}; give another {instead}, or --force to replace it"
    )
