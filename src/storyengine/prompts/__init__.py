"""POML templates, one per component and stage, and the variables each one takes.

`CONTRACT` is what the pipeline relies on: for every template, its context variables and
their types. `storyengine templates check` and the tests hold the .poml files to it.
"""

from __future__ import annotations

from collections.abc import Mapping

COMPONENTS = ("plot", "scene", "dialogue", "evaluation", "enhancement")

CONTRACT: Mapping[str, Mapping[str, type]] = {
    "plot_freeform": {"premise": str, "beats": int},
    "plot_structuring": {"premise": str, "draft": str, "beats": int, "schema": str},
    "scene_freeform": {
        "premise": str,
        "plot": str,
        "beat": str,
        "previous": str,
        "cast": str,
        "number": int,
        "total": int,
    },
    "scene_structuring": {"draft": str, "beat_name": str, "cast": str, "schema": str},
    "dialogue_freeform": {"scene": str, "cast": str, "previous": str},
    "dialogue_structuring": {"draft": str, "cast": str, "schema": str},
    "evaluation_freeform": {"premise": str, "story": str},
    "evaluation_structuring": {"draft": str, "criteria": str, "schema": str},
    "enhancement_freeform": {"premise": str, "story": str, "evaluation": str},
    "enhancement_structuring": {"draft": str, "schema": str},
    "summarize": {"text": str, "words": int},
    "reask": {"previous": str, "errors": str},
}

__all__ = ["COMPONENTS", "CONTRACT"]
