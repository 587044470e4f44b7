"""POML templates, one per component and stage, and the variables each one takes.

`CONTRACT` is what the pipeline relies on: for every template, its context variables and
their types. `storyengine templates check` and the tests hold the .poml files to it.

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

COMPONENTS = ("plot", "bible", "scene", "dialogue", "evaluation", "enhancement")

CONTRACT: Mapping[str, Mapping[str, type]] = {
    "plot_freeform": {"premise": str, "beats": int},
    "plot_structuring": {"premise": str, "draft": str, "beats": int, "schema": str},
    "bible_freeform": {"premise": str, "plot": str, "cast": str, "lead": str, "pronouns": str},
    "bible_structuring": {"draft": str, "cast": str, "lead": str, "pronouns": str, "schema": str},
    "scene_freeform": {
        "premise": str,
        "plot": str,
        "beat": str,
        "previous": str,
        "cast": str,
        "bible": str,
        "number": int,
        "total": int,
        "earlier": str,
        "changes": str,
    },
    "scene_structuring": {"draft": str, "beat_name": str, "cast": str, "schema": str},
    "dialogue_freeform": {"scene": str, "cast": str, "bible": str, "previous": str},
    "dialogue_structuring": {"draft": str, "cast": str, "schema": str},
    "evaluation_freeform": {"premise": str, "story": str},
    "evaluation_structuring": {"draft": str, "criteria": str, "schema": str},
    "enhancement_freeform": {"premise": str, "story": str, "evaluation": str},
    "enhancement_structuring": {"draft": str, "schema": str},
    "part_structuring": {"draft": str, "earlier": str, "what": str, "schema": str},
    "factcheck_structuring": {"facts": str, "scene": str, "schema": str},
    "summarize": {"text": str, "words": int},
    "reask": {"previous": str, "errors": str},
}

__all__ = ["COMPONENTS", "CONTRACT"]
