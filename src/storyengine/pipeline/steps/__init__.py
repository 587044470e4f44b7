"""The steps of the pipeline, one module each, in the order a story is written.

Adding a step is a module here (a `Step` subclass), its two templates in `prompts/`
(`<name>_freeform.poml`, `<name>_structuring.poml`) and its schema; `StoryRun` schedules it by
what it `needs`.
"""

from __future__ import annotations

from typing import Any

from .assembled import AssembledStep
from .base import Inputs, RunView, Step
from .bible import BibleStep
from .dialogue import DialogueStep
from .enhancement import EnhancementStep
from .evaluation import EvaluationStep
from .plot import PlotStep
from .scene import SceneStep

STEPS: dict[str, Step[Any]] = {
    step.name: step
    for step in (
        PlotStep(),
        BibleStep(),
        SceneStep(),
        DialogueStep(),
        AssembledStep(),
        EvaluationStep(),
        EnhancementStep(),
    )
}


def step(name: str) -> Step[Any]:
    """The step called `name` ("plot", "scene", ...)."""
    return STEPS[name]


__all__ = ["STEPS", "Inputs", "RunView", "Step", "step"]
