"""Two versions of a story side by side: which parts changed, and a line diff of their Markdown."""

from __future__ import annotations

from difflib import SequenceMatcher
from typing import Any

from ..export import to_markdown
from ..schemas import Story


def changed_parts(a: Story, b: Story) -> dict[str, Any]:
    """Which beats, scenes and dialogues differ (by index), and whether the assessment does."""
    beats = _changed_indexes([x.model_dump() for x in a.plot.beats], [x.model_dump() for x in b.plot.beats])
    scenes = _changed_indexes(
        [x.scene.model_dump() for x in a.scenes], [x.scene.model_dump() for x in b.scenes]
    )
    lines = _changed_indexes(
        [x.dialogue.model_dump() for x in a.scenes], [x.dialogue.model_dump() for x in b.scenes]
    )
    return {
        "beats": beats,
        "scenes": scenes,
        "dialogue": lines,
        "evaluation": a.evaluation != b.evaluation,
        "enhancement": a.enhancement != b.enhancement,
    }


def _changed_indexes(left: list[Any], right: list[Any]) -> list[int]:
    count = max(len(left), len(right))
    return [i for i in range(count) if i >= len(left) or i >= len(right) or left[i] != right[i]]


def line_diff(a: Story, b: Story) -> list[dict[str, Any]]:
    """Blocks of the two Markdown exports: op is equal, replace, delete or insert."""
    left = to_markdown(a).splitlines()
    right = to_markdown(b).splitlines()
    matcher = SequenceMatcher(None, left, right, autojunk=False)
    return [{"op": op, "a": left[i1:i2], "b": right[j1:j2]} for op, i1, i2, j1, j2 in matcher.get_opcodes()]
