"""A deterministic stand-in model for a whole story, for tests, benchmarks and demos.

`story_script(request)` answers any storyengine request plausibly: freeform stages get
short text in the shape each template asks for; structuring stages get a JSON object built
from the request's decoding schema (or, in prompt-only mode, the schema quoted in the
prompt) that satisfies it, with distinct names, a rising-and-falling tension arc and
speakers drawn from the enum the schema gives. Use it with `ScriptedProvider(story_script)`.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from typing import Any

from ..types import CompletionRequest

NAMES = ["Mara", "Tobin", "Ilse", "Quill", "Ravi"]
WORDS = ["lantern", "harbor", "letter", "storm", "key", "garden", "bridge", "echo", "winter", "map"]
ARC = [3, 5, 7, 9, 6, 4, 8, 10, 5, 2]


def story_script(request: CompletionRequest) -> str:
    if request.stage == "structuring" or request.json_schema is not None:
        schema = request.json_schema or _schema_in_prompt(request)
        if schema is not None:
            # Vary with the prompt (all of it: a part's notes sit in its system message), so that
            # each part of an object gets its own values.
            prompt = " | ".join(m.content for m in request.messages)
            digest = hashlib.sha256(prompt.encode()).digest()
            return json.dumps(_instance(schema, "root", digest[0] % 97), ensure_ascii=False)
    return _freeform(request)


def _freeform(request: CompletionRequest) -> str:
    """Short text in the template's shape; the words vary with the seed (random when unseeded)."""
    prompt = request.messages[-1].content
    rng = random.Random(f"{request.seed}|{prompt}") if request.seed is not None else random.Random()
    twist = rng.choice(WORDS)
    component = request.component
    if component == "plot":
        return "\n".join(
            f"{i}. The {w} turns: {NAMES[i % 5]} faces the {twist}." for i, w in enumerate(WORDS[:5], 1)
        )
    if component == "dialogue":
        # Numbered, so two dialogues rarely share a line (identical part prompts would be cache hits).
        lines = [f"About the {rng.choice(WORDS)} {rng.randint(2, 999)}, I was wrong." for _ in range(4)]
        return "\n".join(f"{NAMES[i % 2]}: {line}" for i, line in enumerate(lines))
    if component == "summarize":
        return " ".join(prompt.split()[:40])
    return f"A {component} in which the {twist} matters more than anyone admits."


def _schema_in_prompt(request: CompletionRequest) -> dict[str, Any] | None:
    decoder = json.JSONDecoder()
    for message in request.messages:
        text = message.content
        start = text.find('{"')
        while start != -1:
            try:
                value, _ = decoder.raw_decode(text, start)
            except ValueError:
                value = None
            if isinstance(value, dict) and "properties" in value:
                return value
            start = text.find('{"', start + 1)
    return None


def _instance(schema: dict[str, Any], name: str, index: int) -> Any:
    if "enum" in schema:
        options = schema["enum"]
        if schema.get("type") == "integer" or all(isinstance(o, int) for o in options):
            wanted = ARC[index % len(ARC)]
            return wanted if wanted in options else options[index % len(options)]
        return options[index % len(options)]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next(k for k in kind if k != "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {key: _instance(sub, key, index) for key, sub in props.items()}
    if kind == "array":
        count = max(schema.get("minItems", 1), min(schema.get("maxItems", 3), 3))
        return [_instance(schema.get("items", {"type": "string"}), name, i) for i in range(count)]
    if kind == "integer":
        low, high = schema.get("minimum", 1), schema.get("maximum", 10)
        return max(low, min(high, ARC[index % len(ARC)]))
    if kind == "number":
        return float(schema.get("minimum", 1))
    if kind == "boolean":
        return index % 2 == 0
    pattern = schema.get("pattern", "")
    if pattern.startswith("^["):  # a name whose initial the schema chooses (distinct by construction)
        return pattern[2] + "ara"
    if name in ("characters", "speaker"):
        return NAMES[index % len(NAMES)]
    text = f"{name.replace('_', ' ').capitalize()} of the {WORDS[index % len(WORDS)]} {index + 1}"
    if name in ("summary", "setting", "purpose", "text", "rationale", "problem", "change"):
        # Prose-sized fields, so long stories really press on a small context window.
        text += ": " + " ".join(WORDS[(index + k) % len(WORDS)] for k in range(14))
    opener = re.match(r"\^([A-Za-z ,]+) \[", pattern)  # a sentence the schema starts (a beat's job)
    if opener:
        text = f"{opener.group(1)} {text[0].lower()}{text[1:]}".replace(":", ",")
    return text[: schema.get("maxLength", 300)]
