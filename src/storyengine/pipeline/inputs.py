"""What a run is asked for, checked before any model call (the engine, the CLI and batch files)."""

from __future__ import annotations

from ..errors import InputError
from ..text.rules import without_controls

MAX_PREMISE_CHARS = 4000
MAX_SCENES = 24


def check_inputs(premise: str, scenes: int | None) -> str:
    """Reject unusable input before any model call; NUL and other control characters (not line
    breaks or tabs) are removed from the premise, so no export or prompt carries them."""
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
    return premise
