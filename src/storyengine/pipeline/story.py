"""What the steps of a story share: how beats map to scenes, and the texts made from plot and scenes."""

from __future__ import annotations

from ..bible import StoryBible
from ..schemas import Evaluation, PlotStructure, Scene, StoryScene

DEFAULT_BEATS = (3, 8)  # accepted when the caller does not fix the number of scenes
BEATS_WANTED = 5
MIN_BEATS = 3  # PlotStructure's own minimum


def beats_for(scenes: int | None) -> int | None:
    """How many beats to ask for: one per scene, but never fewer than a plot needs."""
    return None if scenes is None else max(MIN_BEATS, scenes)


def scene_beats(plot: PlotStructure, scenes: int | None) -> list[int]:
    """Which beat each scene realises: every beat, or `scenes` of them spread evenly."""
    total = len(plot.beats)
    if scenes is None or scenes >= total:
        return list(range(total))
    if scenes == 1:
        return [total // 2]
    return [round(i * (total - 1) / (scenes - 1)) for i in range(scenes)]


def cast_of(plot: PlotStructure, bible: StoryBible | None) -> list[str]:
    """The story's cast: the bible's people when there is a bible, else the plot's characters."""
    return bible.names if bible is not None else list(plot.characters)


def outline(plot: PlotStructure, upto: int | None = None) -> str:
    beats = plot.beats if upto is None else plot.beats[:upto]
    return "\n".join(f"{i}. {b.name}: {b.purpose} (tension {b.tension}/10)" for i, b in enumerate(beats, 1))


def scene_text(scene: Scene) -> str:
    return f"{scene.title}. Setting: {scene.setting}. {scene.summary}"


def story_digest(plot: PlotStructure, scenes: list[StoryScene]) -> str:
    parts = [f"Plot ({plot.structure_type}):", outline(plot), "", "Scenes:"]
    for i, item in enumerate(scenes, 1):
        lines = " / ".join(f"{ln.speaker}: {ln.text}" for ln in item.dialogue.lines[:4])
        parts.append(f"{i}. {scene_text(item.scene)} Dialogue: {lines}")
    return "\n".join(parts)


def revision_targets(scenes: list[StoryScene], bible: StoryBible | None) -> list[str]:
    """What a suggestion may target so that a revision can apply it: each scene ("Scene 2: Its
    Title") and each person of the story (the bible's, else the scenes' casts)."""
    targets = [f"Scene {i}: {item.scene.title}"[:80] for i, item in enumerate(scenes, 1)]
    people = bible.names if bible is not None else [c for item in scenes for c in item.scene.characters]
    return targets + list(dict.fromkeys(people))


def evaluation_text(evaluation: Evaluation) -> str:
    scores = "; ".join(f"{s.criterion} {s.score}/10: {s.rationale}" for s in evaluation.scores)
    return f"Overall {evaluation.overall}/10. {evaluation.summary} {scores}"
