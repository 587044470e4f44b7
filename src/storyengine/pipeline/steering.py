"""Steering: a new version of a story, made by the run engine from an old version minus some parts.

A steering operation never changes a version. It lays out a new checkpointed state whose steps
are the base version's parts (plot, `scene.i`, `dialogue.i`, evaluation, enhancement) minus the
ones it must make again, with the edited plot in place of the old one; then the engine's one
pipeline fills in exactly the missing steps, with the same seeds (seeds.py, by step key),
the same numbering ("scene i+1 of n") and the same prompts as `generate`.

    edit_beat i            the edited plot replaces "plot"; every scene realising beat >= i is
                           made again with its dialogue; then the evaluation and the enhancement
    regenerate_scene i     scene i and its dialogue (the old lines belong to the old scene)
    regenerate_dialogue i  the dialogue of scene i
    revise                 the scenes the enhancement's suggestions target, rewritten with their
                           changes, and their dialogue; then the evaluation and the enhancement
                           (pipeline/revision.py; `changes` holds the plan and the earlier scenes)
    edit_bible             the edited bible replaces "bible"; the scenes that depend on what changed
                           (`bible_dependents`) are made again with their dialogue, then the
                           evaluation and the enhancement
    reevaluate             (default) the evaluation and enhancement are made again too
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from ..bible import StoryBible
from ..errors import InputError
from ..schemas import PlotStructure, Story, name_key
from .story import scene_beats

Operation = Literal["edit_beat", "regenerate_scene", "regenerate_dialogue", "revise", "edit_bible"]
BEAT_FIELDS = ("name", "purpose", "tension", "description")


def edited_plot(plot: PlotStructure, index: int, changes: dict[str, Any]) -> PlotStructure:
    """`plot` with beat `index` changed; InputError when the result is not a valid plot."""
    if not 0 <= index < len(plot.beats):
        raise InputError(f"beat {index} does not exist; this plot has beats 0 to {len(plot.beats) - 1}")
    if not changes:
        raise InputError("give at least one of name, purpose, tension, description to change the beat")
    unknown = sorted(set(changes) - set(BEAT_FIELDS))
    if unknown:
        raise InputError(f"a beat has no field {', '.join(unknown)}; change {', '.join(BEAT_FIELDS)}")
    beats = [beat.model_dump(mode="json") for beat in plot.beats]
    beats[index].update(changes)
    try:
        return PlotStructure.model_validate({**plot.model_dump(mode="json"), "beats": beats})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InputError(f"the edited beat {index} makes an invalid plot: {problems}") from None


def edited_bible(value: Any) -> StoryBible:
    """The bible a user gave; InputError (saying what is wrong) when it is not a valid bible."""
    try:
        return StoryBible.model_validate(value)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InputError(f"the edited bible is not valid: {problems}") from None


def bible_dependents(story: Story, bible: StoryBible) -> tuple[list[int], list[str]]:
    """The scenes an edit of the story's bible makes again, and the characters it removes.

    A changed setting or fact changes every scene; otherwise a scene is made again when one of its
    characters was removed or changed (name, role, description, pronouns). Adding a character
    changes no written scene."""
    old = story.bible
    if old is None or old.setting != bible.setting or old.facts != bible.facts:
        return list(range(len(story.scenes))), []
    new = {name_key(c.name): c for c in bible.characters}
    removed = [c.name for c in old.characters if name_key(c.name) not in new]
    changed = {name_key(c.name) for c in old.characters if new.get(name_key(c.name)) != c}
    scenes = [
        i for i, item in enumerate(story.scenes) if changed & {name_key(c) for c in item.scene.characters}
    ]
    return scenes, removed


@dataclass(frozen=True)
class Steer:
    """One steering operation on one version; indexes count from 0."""

    operation: Operation
    index: int
    changes: dict[str, Any] = field(default_factory=dict)
    reevaluate: bool = True

    @property
    def label(self) -> str:
        if self.operation == "edit_beat":
            return f"edited beat {self.index + 1}, regenerated from it"
        if self.operation == "regenerate_scene":
            return f"regenerated scene {self.index + 1}"
        if self.operation == "revise":
            numbers = ", ".join(str(i + 1) for i in self.revised_scenes)
            return f"revised scene(s) {numbers} from the suggestions"
        if self.operation == "edit_bible":
            return "edited the story bible, regenerated what depends on it"
        return f"regenerated dialogue of scene {self.index + 1}"

    @property
    def revised_scenes(self) -> list[int]:
        """The scenes a revision rewrites (indexes)."""
        return sorted(int(i) for i in self.changes.get("earlier", {}))

    def check(self, story: Story) -> None:
        """InputError when the operation does not apply to `story` (nothing is made then)."""
        if self.operation == "edit_beat":
            if story.chapters:
                raise InputError(
                    "this story has chapters: its plot is their outline, and editing it is not done "
                    "yet; regenerate or revise its scenes instead"
                )
            edited_plot(story.plot, self.index, self.changes)
            return
        if self.operation == "edit_bible":
            edited_bible(self.changes.get("bible"))
            return
        for index in self.revised_scenes if self.operation == "revise" else [self.index]:
            if not 0 <= index < len(story.scenes):
                raise InputError(
                    f"scene {index} does not exist; this story has scenes 0 to {len(story.scenes) - 1}"
                )

    def layout(self, story: Story) -> tuple[dict[str, Any], list[str]]:
        """The steps the new state starts with (JSON values, as checkpointed) and which were edited."""
        self.check(story)
        plot = story.plot
        edited: list[str] = []
        scenes: set[int] = set()
        dialogues: set[int] = set()
        reevaluate = self.reevaluate
        if self.operation == "edit_beat":
            plot = edited_plot(story.plot, self.index, self.changes)
            edited.append("plot")
            beats = scene_beats(plot, len(story.scenes))
            scenes = {j for j, beat in enumerate(beats) if beat >= self.index}
            dialogues = set(scenes)
            reevaluate = True  # the story changed from the beat on: its assessment is stale
        elif self.operation == "regenerate_scene":
            scenes = dialogues = {self.index}
        elif self.operation == "revise":
            scenes, dialogues = set(self.revised_scenes), set(self.revised_scenes)
            reevaluate = True  # the story changed: its assessment is stale
        elif self.operation == "edit_bible":
            bible = edited_bible(self.changes.get("bible"))
            edited.append("bible")
            scenes = dialogues = set(bible_dependents(story, bible)[0])
            reevaluate = reevaluate or bool(scenes)
        else:
            dialogues = {self.index}
        steps: dict[str, Any] = {"plot": plot.model_dump(mode="json")}
        if self.operation == "edit_bible":
            steps["bible"] = edited_bible(self.changes.get("bible")).model_dump(mode="json")
        elif story.bible is not None:  # the people stay who they are
            steps["bible"] = story.bible.model_dump(mode="json")
        for c, chapter in enumerate(story.chapters):  # a long story's chapters stay as planned
            steps[f"chapter.{c}"] = chapter.model_dump(mode="json")
        for j, item in enumerate(story.scenes):
            if j not in scenes:
                steps[f"scene.{j}"] = item.scene.model_dump(mode="json")
                steps[f"scene.{j}.draft"] = item.prose  # the kept scene keeps its prose
            if j not in dialogues:
                steps[f"dialogue.{j}"] = item.dialogue.model_dump(mode="json")
        if not reevaluate:
            if story.evaluation is not None:
                steps["evaluation"] = story.evaluation.model_dump(mode="json")
            if story.enhancement is not None:
                steps["enhancement"] = story.enhancement.model_dump(mode="json")
        return steps, edited

    def as_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "index": self.index,
            "changes": dict(self.changes),
            "reevaluate": self.reevaluate,
            "label": self.label,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Steer:
        return cls(data["operation"], data["index"], data.get("changes", {}), data.get("reevaluate", True))


def kept_meta(story: Story, steps: dict[str, Any]) -> dict[str, Any]:
    """The base version's step metadata for the steps the new state keeps (and their drafts)."""
    old = story.meta.get("steps") or {}
    return {
        name: meta
        for name, meta in old.items()
        if name in steps or (name.endswith(".draft") and name[: -len(".draft")] in steps)
    }
