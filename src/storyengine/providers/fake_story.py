"""A deterministic stand-in model for a whole story, for tests, benchmarks and demos.

`story_script(request)` answers any storyengine request plausibly: freeform stages get
short text in the shape each template asks for; structuring stages get a JSON object built
from the request's decoding schema (or, in prompt-only mode, the schema quoted in the
prompt) that satisfies it, with distinct names, a rising-and-falling tension arc and
speakers drawn from the enum the schema gives. Use it with `ScriptedProvider(story_script)`.

Its answers pass every sanity rule of the schemas (sanity.py): names are names, prose fields
are finished sentences cut at a word boundary, no two rationales or suggestions share their
words, and the drafts have the shape `quality.draft_problems` asks for (a plot draft with
the number of beats asked for, scene drafts of several paragraphs that use the beat's and
the premise's words).
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
# A larger pool for prose fields, so that no two fields share most of their words.
POOL = (
    "lantern harbor letter storm key garden bridge echo winter map candle river window promise "
    "ladder orchard compass ferry attic clock mirror ribbon violin meadow kettle tower lighthouse "
    "engine blanket signal"
).split()
VERBS = [
    "finds",
    "hides",
    "mends",
    "follows",
    "remembers",
    "loses",
    "opens",
    "guards",
    "answers",
    "waits for",
]
CLAUSES = [
    "and the wind rattles every shutter in the house",
    "while a gull cries somewhere above the rocks",
    "though nobody says a word about what it means",
    "as rain begins to tap against the glass",
    "because the morning will not wait much longer",
    "and for a moment the whole room holds its breath",
    "until footsteps sound on the stairs below",
    "and the old floorboards creak under every step",
]
ARC = [3, 5, 7, 9, 6, 4, 8, 10, 5, 2]
PROSE_FIELDS = ("summary", "setting", "purpose", "text", "rationale", "problem", "change", "description")
STOPWORDS = frozenset(
    "the a an and or of to in on at by for with from into this that these those his her their its "
    "is was are were be been write scene plot premise characters story so far beat beats tension "
    "numbered list line each one then what who where when which short sentence paragraphs".split()
)


def story_script(request: CompletionRequest) -> str:
    if request.schema_name == "StoryBible" or (
        request.component == "bible" and request.stage == "structuring"
    ):
        bible = _bible(request)
        if bible is not None:
            return bible
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
    if component in ("plot", "chapter"):  # a plot's beats, a chapter's scenes
        found = re.search(r"list of (\d+) (?:beats|scenes)", prompt)
        count = int(found.group(1)) if found else 5
        return "\n".join(
            f"{i}. The {POOL[i % len(POOL)].capitalize()}: {NAMES[i % 5]} faces the {twist}."
            for i in range(1, count + 1)
        )
    if component == "scene":
        return _scene_draft(prompt, rng)
    if component == "dialogue":
        return "\n".join(
            f"{NAMES[i % 2]}: About the {rng.choice(POOL)} and the {rng.choice(POOL)}, I was wrong."
            for i in range(4)
        )
    if component == "summarize":
        return " ".join(prompt.split()[:40])
    return f"A {component} in which the {twist} matters more than anyone admits."


def _bible(request: CompletionRequest) -> str | None:
    """A whole bible for the cast the prompt names (with the premise's pronouns for the lead)."""
    prompt = "\n".join(m.content for m in request.messages)
    cast = re.search(r"^Characters: (.+)$", prompt, re.M)
    if cast is None or (
        request.json_schema is not None and "characters" not in request.json_schema.get("properties", {})
    ):
        return None
    lead = re.search(r"protagonist, (.+?), as (she/her|he/him|they/them)", prompt)
    people = []
    for i, name in enumerate(n.strip() for n in cast.group(1).split(",")):
        pronouns = lead.group(2) if lead and i == 0 else ["she/her", "he/him", "they/them"][i % 3]
        people.append(
            {"name": name, "role": f"the {WORDS[i]} keeper", "description": f"{name} guards the {WORDS[i]}.",
             "pronouns": pronouns}
        )  # fmt: skip
    return json.dumps({"characters": people, "setting": "A harbor town, one winter.", "facts": []})


def _scene_draft(prompt: str, rng: random.Random) -> str:
    """Three paragraphs that use the words of the request (its premise and beat), as a scene would."""
    wanted = " ".join(re.findall(r"(?:Premise|In this scene):([^\n]*)", prompt)) or prompt
    given = [w for w in re.findall(r"[A-Za-z]{4,}", wanted) if w.casefold() not in STOPWORDS]
    focus = list(dict.fromkeys(w.casefold() for w in given)) or WORDS[:4]
    paragraphs = []
    for p in range(3):
        sentences = []
        for k in range(5):
            n = p * 5 + k
            who, verb = NAMES[n % len(NAMES)], VERBS[n % len(VERBS)]
            thing, other = focus[n % len(focus)], POOL[rng.randrange(len(POOL))]
            clause = CLAUSES[(n + p) % len(CLAUSES)]
            sentences.append(f"{who} {verb} the {thing} beside the {other}, {clause}.")
        paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs)


def _sentence(name: str, index: int, words: int) -> str:
    """A finished sentence for a prose field; its words depend on the field and the index."""
    offset = sum(map(ord, name)) + 7 * index
    chosen = [POOL[(offset + 7 * k) % len(POOL)] for k in range(words)]
    verb = VERBS[(offset // 3) % len(VERBS)]
    return (
        f"{NAMES[index % len(NAMES)]} {verb} the {chosen[0]} ({index + 1}) near the "
        + ", the ".join(chosen[1:])
        + "."
    )


def _fit(text: str, limit: int) -> str:
    """`text` cut to `limit` characters at a word boundary, still ending as a sentence."""
    if len(text) <= limit:
        return text
    words = text[: limit - 1].rsplit(" ", 1)[0].split()
    while len(words) > 1 and (
        words[-1].casefold() in ("the", "a", "an", "of", "and", "near") or "(" in words[-1]
    ):
        words.pop()  # a sentence does not end on these (sanity.cut_off_problem)
    return " ".join(words).rstrip(",;:( ") + "."


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
    # A name whose initial the schema chooses (distinct by construction): "^[ABC]..." or "^([BC]...|A(...))".
    if re.match(r"\^\(?\[?[A-Z]", pattern):
        fitting = [f"{c}ara" for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if re.fullmatch(pattern, f"{c}ara")]
        if fitting:
            return fitting[0]
    if name in ("characters", "speaker"):
        return NAMES[index % len(NAMES)]
    limit = schema.get("maxLength", 300)
    if name in PROSE_FIELDS:
        # Prose-sized fields, so long stories really press on a small context window.
        text = _sentence(name, index, 9)
    else:
        text = f"{name.replace('_', ' ').capitalize()} of the {WORDS[index % len(WORDS)]} {index + 1}"
    opener = re.match(r"\^([A-Za-z ,]+) \[", pattern)  # a sentence the schema starts (a beat's job)
    if opener:
        text = f"{opener.group(1)} {text}".replace("(", "").replace(")", "")
    text = _fit(text, limit)
    minimum = schema.get("minLength", 1)
    return text if len(text) >= minimum else _fit(text[:-1] + " and more of the same story.", limit)
