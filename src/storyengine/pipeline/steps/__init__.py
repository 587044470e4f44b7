"""The steps of the pipeline, one module each, found by looking: every `Step` subclass with a `name`
in a module of this package is a step.

Adding a step is a module here (a `Step` subclass), its two templates in `prompts/`
(`<name>_freeform.poml`, `<name>_structuring.poml`) and its schema; `StoryRun` schedules it by
what it `needs`, the router routes it (`narrative.providers.<name>`, else the plot's route), and
`seeds.py` seeds it by its key.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from ...prompts import SHARED_CONTRACT
from .base import Inputs, RunView, Step


def _found() -> dict[str, Step[Any]]:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"storyengine.pipeline.steps.{module.name}")
    found: dict[str, Step[Any]] = {}
    kinds: list[type[Step[Any]]] = list(Step.__subclasses__())
    while kinds:
        kind = kinds.pop(0)
        kinds += kind.__subclasses__()
        if "name" in vars(kind):
            if kind.name in found:
                raise RuntimeError(f"two steps are called {kind.name!r}: {type(found[kind.name])} and {kind}")
            found[kind.name] = kind()
    return dict(sorted(found.items()))


STEPS: dict[str, Step[Any]] = _found()
"""Every step, by name."""

CONTRACT: dict[str, Mapping[str, type]] = {
    **SHARED_CONTRACT,
    **{template: dict(variables) for s in STEPS.values() for template, variables in s.contract.items()},
}
"""Every template the pipeline renders and its context variables: the steps' and the shared ones."""


def step(name: str) -> Step[Any]:
    """The step called `name` ("plot", "scene", ...)."""
    return STEPS[name]


__all__ = ["CONTRACT", "STEPS", "Inputs", "RunView", "Step", "step"]
