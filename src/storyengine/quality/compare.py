"""Two stories compared by the code's measures (what a revision keeps): `story_measures` measures the
story itself, without the model's evaluation, enhancement and rubric; `worse_measures` and
`better_measures` name what changed, with both values.
"""

from __future__ import annotations

from typing import Any

from ..schemas import Story
from .report import quality_report

# How two reports compare (revision.keep_better): which measures are better higher; the rest are
# better lower. The rubric is the model's opinion of the story, not a measure of it.
HIGHER_IS_BETTER = frozenset(
    {
        "distinct-1",
        "distinct-2",
        "premise coverage %",
        "prose words per scene (median)",
        "tension: plan vs realised (Spearman)",
        "chapter tension: plan vs realised (Spearman)",
    }
)
MODEL_MEASURES = frozenset({"rubric overall", "rubric reliable"})
# What the steps' metadata says of how the text was made, not a measure of the text: a revision's
# story carries other steps than its base (the junk in the text is counted by the other measures).
NEUTRAL_MEASURES = frozenset({"repaired by code", "kept with a warning", "junk not repaired or listed"})


def story_measures(story: Story) -> dict[str, float | int | None]:
    """The code's measures of the story itself: without the model's evaluation and enhancement
    (their text is not the story), the rubric, and its steps' metadata (how the text was made: a
    revision's story carries other steps than its base, and a story rebuilt from its parts none),
    so that the same text always measures the same."""
    told = story.model_copy(update={"evaluation": None, "enhancement": None, "meta": {}})
    measures = quality_report(told).measures()
    return {name: value for name, value in measures.items() if name not in MODEL_MEASURES | NEUTRAL_MEASURES}


def _compare(before: dict[str, Any], after: dict[str, Any], *, worse: bool) -> list[str]:
    found = []
    for name, old in before.items():
        new = after.get(name)
        if old is None or new is None:
            if worse and old is not None:  # a measure the story had and lost
                found.append(f"{name}: {old:g} -> none")
            continue
        higher = name in HIGHER_IS_BETTER
        lowered = new < old if higher else new > old
        raised = new > old if higher else new < old
        if lowered if worse else raised:
            found.append(f"{name}: {old:g} -> {new:g}")
    return found


def worse_measures(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The measures (of `story_measures`) that are worse in `after`, with both values."""
    return _compare(before, after, worse=True)


def better_measures(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The measures that are better in `after`, with both values."""
    return _compare(before, after, worse=False)
