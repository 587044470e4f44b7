"""Reading a story to measure it: story.json loaded as a `Story`, the text a reader gets of a scene,
the story's language, every string a model wrote (with its field's name for the text rules), and
the text findings its steps recorded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError

from ..schemas import Story
from ..text.language import detect
from ..text.review import review
from ..text.rules import Context


class NotAStory(ValueError):
    """The text is not a storyengine Story (not JSON, or not the shape of one)."""


def load_story(text: str) -> tuple[Story, bool]:
    """The Story in `text` (story.json), and whether the text rules find nothing in it that code
    cannot repair (text/review.py). Its shape must be a Story's; its words never stop it
    loading, so that it can be measured. Raises NotAStory.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotAStory(f"not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise NotAStory(f"a JSON {type(data).__name__}, not a story object")
    try:
        story = Story.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the top level"
        raise NotAStory(f"{exc.error_count()} problem(s), first at {where}: {first['msg']}") from None
    reviewed = review(Story, data, Context(language=story_language(story)))
    return story, not reviewed.open


def scene_prose(item: Any) -> str:
    """What a reader gets as a scene's prose: its prose, else its summary."""
    return (item.prose or "").strip() or item.scene.summary


def story_language(story: Story) -> str:
    """The language of a story: detected once, from its premise and the prose of its first scenes."""
    told = " ".join([story.premise, *(scene_prose(item) for item in story.scenes[:2])])
    return detect(told)


def story_fields(story: Story) -> Iterator[tuple[str, str, str]]:
    """(where, key, text) for every string a model wrote; key is the field's name for the text rules."""
    plot = story.plot
    yield "plot.title", "title", plot.title
    yield "plot.structure_type", "structure_type", plot.structure_type
    for i, name in enumerate(plot.characters):
        yield f"plot.characters[{i}]", "character", name
    if story.bible is not None:
        for i, person in enumerate(story.bible.characters):
            yield f"bible.characters[{i}].name", "character", person.name
            yield f"bible.characters[{i}].role", "role", person.role
            yield f"bible.characters[{i}].description", "description", person.description
        yield "bible.setting", "setting", story.bible.setting
        for i, fact in enumerate(story.bible.facts):
            yield f"bible.facts[{i}]", "fact", fact
    for i, beat in enumerate(plot.beats):
        yield f"plot.beats[{i}].name", "name", beat.name
        yield f"plot.beats[{i}].purpose", "purpose", beat.purpose
        if beat.description:
            yield f"plot.beats[{i}].description", "description", beat.description
    for i, item in enumerate(story.scenes):
        scene = item.scene
        for key in ("title", "setting", "summary", "mood", "beat"):
            value = getattr(scene, key)
            if value:
                yield f"scenes[{i}].{key}", key, value
        for j, name in enumerate(scene.characters):
            yield f"scenes[{i}].characters[{j}]", "character", name
        if item.prose:
            yield f"scenes[{i}].prose", "prose", item.prose
        for j, line in enumerate(item.dialogue.lines):
            yield f"scenes[{i}].lines[{j}].speaker", "speaker", line.speaker
            yield f"scenes[{i}].lines[{j}].text", "text", line.text
            if line.direction:
                yield f"scenes[{i}].lines[{j}].direction", "direction", line.direction
    if story.evaluation is not None:
        for i, score in enumerate(story.evaluation.scores):
            yield f"evaluation.scores[{i}].rationale", "rationale", score.rationale
        yield "evaluation.summary", "critique", story.evaluation.summary
    if story.enhancement is not None:
        for i, s in enumerate(story.enhancement.suggestions):
            yield f"enhancement.suggestions[{i}].target", "target", s.target
            yield f"enhancement.suggestions[{i}].problem", "problem", s.problem
            yield f"enhancement.suggestions[{i}].change", "change", s.change
        yield "enhancement.summary", "critique", story.enhancement.summary


def _story_path(step: str) -> str | None:
    """Where a step's object sits in the story: "scene.2" -> "scenes[2].", "plot" -> "plot."."""
    parts = step.split(".")
    if len(parts) == 1 and parts[0] in ("plot", "bible", "evaluation", "enhancement"):
        return f"{parts[0]}."
    if len(parts) == 2 and parts[0] in ("scene", "dialogue") and parts[1].isdigit():
        return f"scenes[{parts[1]}]."
    if len(parts) == 3 and parts[0] == "scene" and parts[1].isdigit() and parts[2] == "draft":
        return f"scenes[{parts[1]}]."  # its prose
    return None


def step_findings(story: Story) -> list[dict[str, str]]:
    """The text findings of the steps that made the story, each with its field's path in the story."""
    found = []
    for step, meta in (story.meta.get("steps") or {}).items():
        prefix = _story_path(step)
        if prefix is None or not isinstance(meta, dict):
            continue
        for finding in meta.get("findings") or []:
            found.append({**finding, "field": prefix + str(finding.get("field", ""))})
    return found
