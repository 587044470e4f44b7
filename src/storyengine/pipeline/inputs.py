"""What a run is asked for, checked before any model call (the engine, the CLI and batch files)."""

from __future__ import annotations

from ..errors import InputError
from ..schemas import MAX_CHAPTERS, MAX_SCENES_PER_CHAPTER
from ..text.rules import without_controls

MAX_PREMISE_CHARS = 4000
MAX_SCENES = 24
DEFAULT_SCENES_PER_CHAPTER = 5


def check_inputs(
    premise: str, scenes: int | None, chapters: int | None = None, per_chapter: int | None = None
) -> str:
    """Reject unusable input before any model call; NUL and other control characters (not line
    breaks or tabs) are removed from the premise, so no export or prompt carries them. A long story
    is asked for by `chapters` (and `per_chapter` scenes each), never together with `scenes`."""
    premise = without_controls(premise or "").strip()
    if not premise:
        raise InputError("the premise is empty; give one or two sentences describing the story")
    if len(premise) > MAX_PREMISE_CHARS:
        raise InputError(
            f"the premise is {len(premise):,} characters; keep it under {MAX_PREMISE_CHARS:,} "
            "(a premise is a paragraph, not a manuscript)"
        )
    if scenes is not None and not 1 <= scenes <= MAX_SCENES:
        raise InputError(f"scenes must be between 1 and {MAX_SCENES}, not {scenes}")
    check_chapters(scenes, chapters, per_chapter)
    return premise


def check_chapters(scenes: int | None, chapters: int | None, per_chapter: int | None) -> None:
    """The length of a long story: 1 to MAX_CHAPTERS chapters of 1 to MAX_SCENES_PER_CHAPTER scenes."""
    if chapters is None:
        if per_chapter is not None:
            raise InputError("scenes per chapter are for a story with chapters; give --chapters too")
        return
    if scenes is not None:
        raise InputError(
            "give either --scenes (a short story) or --chapters (a long one, with "
            "--scenes-per-chapter), not both"
        )
    if not 1 <= chapters <= MAX_CHAPTERS:
        raise InputError(f"chapters must be between 1 and {MAX_CHAPTERS}, not {chapters}")
    if per_chapter is not None and not 1 <= per_chapter <= MAX_SCENES_PER_CHAPTER:
        raise InputError(
            f"scenes per chapter must be between 1 and {MAX_SCENES_PER_CHAPTER}, not {per_chapter}"
        )
