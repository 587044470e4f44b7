"""POML templates, one per component and stage, and the variables each one takes.

The contract is what the pipeline relies on: for every template, its context variables and their
types. A step's two templates are in its module (`Step.contract`, pipeline/steps/); the shared
ones here; `storyengine templates check` and the tests hold the .poml files to both.

Every template has a system and a user message, except `reask`: an assistant message (the
invalid output, verbatim; POML drops it when empty) and a user message, to be appended to a
structuring prompt. Values sit in `<p whiteSpace="pre">` so newlines survive.

`factcheck_structuring` asks which of the bible's facts a scene draft contradicts (a check, not a
component: profiles that cannot answer it reliably skip it).

`part_structuring` serves every component when a provider structures in parts (one small
piece of the object per call; see pipeline/parts.py).

Structuring templates carry the guardrails: a system message saying the model is a JSON-only
formatter ("Start with { and end with }") followed by the schema, and a `<runtime>` with
the stop sequences "\n```", "\nNote", "\nExplanation", "\nThis " (sampling parameters come
from config, `narrative.defaults`, never from a template). None can occur in valid JSON: a
string never holds a raw newline, and after a newline between tokens comes whitespace or a
token, never a backtick or a capital letter.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources

SHARED_CONTRACT: Mapping[str, Mapping[str, type]] = {
    "part_structuring": {"draft": str, "earlier": str, "what": str, "schema": str},
    "factcheck_structuring": {"facts": str, "scene": str, "schema": str},
    "summarize": {"text": str, "words": int},
    "reask": {"previous": str, "errors": str},
}
"""The templates every step shares; each step's own two are in its module (pipeline/steps/)."""


def step_names() -> tuple[str, ...]:
    """The steps that have templates (`<name>_freeform.poml` and `<name>_structuring.poml`), sorted."""
    folder = resources.files(__name__)
    names = {
        p.name.removesuffix("_freeform.poml") for p in folder.iterdir() if p.name.endswith("_freeform.poml")
    }
    return tuple(sorted(n for n in names if folder.joinpath(f"{n}_structuring.poml").is_file()))


__all__ = ["SHARED_CONTRACT", "step_names"]
