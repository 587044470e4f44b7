"""Revision: the enhancement's suggestions applied to the story, as a new version.

`plan_revision(story)` reads each suggestion's target and finds the scenes it names:

    "Scene 2", "scene #2", "chapter 2"      that scene
    "Beat 3"                                the scenes that realise beat 3
    a scene's title, a beat's name          that scene; the scenes of that beat
    a character of the bible (or the plot)  the scenes that character is in
    "the opening", "the ending", ...        the first scene; the last scene

A suggestion that targets nothing in the story is reported, not applied. Each targeted scene
is written again (stage 1, with its earlier prose and the changes to make; then structured and
given a new dialogue, like any scene), by the run engine's one pipeline, as a steering operation.

A revision never makes the story worse by the code's measures (quality.py): before the new
evaluation, `keep_better` puts each rewritten scene into the story only when no code-computed
measure of the story gets worse with it; a scene that would make one worse keeps its earlier
version, and the version's metadata says which measure it would have lowered.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..quality import STOPWORDS, story_measures, worse_measures
from ..schemas import Story, StoryScene, name_key
from ..text.segment import words

_NUMBERED = re.compile(r"\b(scene|chapter|beat)\s*(?:#|no\.?|number)?\s*(\d+)", re.I)
_OPENING = frozenset({"opening", "beginning", "start", "introduction", "first"})
_ENDING = frozenset({"ending", "end", "climax", "finale", "conclusion", "resolution", "last", "final"})


def _key_words(text: str) -> set[str]:
    return {w for w in words(text) if w not in STOPWORDS and len(w) >= 2}


def _names_match(name: str, target_words: set[str]) -> bool:
    """`name` (a title, a beat's name) and the target name the same thing: one's words hold the other's."""
    own = _key_words(name)
    return bool(own) and bool(target_words) and (own <= target_words or target_words <= own)


def scenes_targeted(story: Story, target: str) -> list[int]:
    """The indexes of the scenes `target` names (see the module docstring); [] when none."""
    scenes, beats = story.scenes, story.plot.beats
    numbered = _NUMBERED.search(target)
    if numbered:
        k = int(numbered.group(2)) - 1
        if numbered.group(1).casefold() != "beat":
            return [k] if 0 <= k < len(scenes) else []
        if not 0 <= k < len(beats):
            return []
        return [i for i, s in enumerate(scenes) if name_key(s.scene.beat or "") == name_key(beats[k].name)]
    wanted = _key_words(target)
    found = [i for i, s in enumerate(scenes) if _names_match(s.scene.title, wanted)]
    if found:
        return found
    for beat in beats:
        if _names_match(beat.name, wanted):
            found += [i for i, s in enumerate(scenes) if name_key(s.scene.beat or "") == name_key(beat.name)]
    if found:
        return sorted(set(found))
    people = story.bible.names if story.bible is not None else list(story.plot.characters)
    named = [p for p in people if words(p) and words(p)[0] in wanted]
    found = [
        i
        for i, s in enumerate(scenes)
        if {name_key(c) for c in s.scene.characters} & set(map(name_key, named))
    ]
    if found:
        return found
    if wanted & _OPENING:
        return [0] if scenes else []
    if wanted & _ENDING:
        return [len(scenes) - 1] if scenes else []
    return []


@dataclass
class Revision:
    """What a revision will rewrite: per scene index, the changes asked of it."""

    changes: dict[int, list[str]] = field(default_factory=dict)
    applied: list[dict[str, Any]] = field(default_factory=list)  # suggestion -> scene numbers
    untargeted: list[dict[str, str]] = field(default_factory=list)  # suggestions that name nothing

    def changes_text(self, index: int) -> str:
        return "\n".join(f"- {change}" for change in self.changes.get(index, []))

    def as_dict(self) -> dict[str, Any]:
        return {
            "changes": {str(i): list(c) for i, c in sorted(self.changes.items())},
            "applied": self.applied,
            "untargeted": self.untargeted,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Revision:
        changes = {int(i): list(c) for i, c in (data.get("changes") or {}).items()}
        return cls(changes, list(data.get("applied") or []), list(data.get("untargeted") or []))


def plan_revision(story: Story, *, label: str = "this version") -> Revision:
    """The scenes the enhancement's suggestions target; InputError when there is nothing to apply."""
    if story.enhancement is None:
        why = story.gaps.get("enhancement", "it was not made")
        raise InputError(
            f"{label} has no suggestions to apply (its enhancement is missing: {why}); make them first "
            "with `storyengine generate --resume RUN_ID`, or steer the story another way"
        )
    revision = Revision()
    for suggestion in story.enhancement.suggestions:
        found = scenes_targeted(story, suggestion.target)
        if not found:
            revision.untargeted.append(
                {"target": suggestion.target, "change": suggestion.change,
                 "why": "names no scene, beat or character of the story"}
            )  # fmt: skip
            continue
        change = f"{suggestion.change} ({suggestion.problem.rstrip('.')})"
        for i in found:
            revision.changes.setdefault(i, []).append(change)
        revision.applied.append(
            {"target": suggestion.target, "change": suggestion.change, "scenes": [i + 1 for i in found]}
        )
    if not revision.changes:
        targets = "; ".join(repr(s["target"]) for s in revision.untargeted)
        raise InputError(
            f"none of the {len(revision.untargeted)} suggestion(s) of {label} targets a scene, beat or "
            f"character of the story ({targets}); nothing to revise"
        )
    return revision


def keep_better(
    base: Story, revised: dict[int, StoryScene], rebuild: Callable[[list[StoryScene]], Story]
) -> tuple[list[StoryScene], dict[int, list[str]]]:
    """The scenes to keep: each rewritten scene in turn (in story order) replaces its earlier version
    only if no code-computed measure of the story (`rebuild(scenes)`) gets worse with it.

    Returns the scenes and, per scene index kept at its earlier version, the measures it would
    have made worse. Each accepted scene makes no measure worse, so neither does the whole."""
    scenes = list(base.scenes)
    current = story_measures(rebuild(scenes))
    refused: dict[int, list[str]] = {}
    for i in sorted(revised):
        trial = [*scenes[:i], revised[i], *scenes[i + 1 :]]
        measured = story_measures(rebuild(trial))
        worse = worse_measures(current, measured)
        if worse:
            refused[i] = worse
            continue
        scenes, current = trial, measured
    return scenes, refused
