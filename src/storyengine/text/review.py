"""Review of a model's answer before it is validated: repair what code can, and say what remains.

`review(model, data, context)` walks the parsed JSON of an answer (a whole object or a part
of one) along the Pydantic `model`'s fields, runs the text rules (rules.py) on every string
by its field's key, and returns the repaired data with a `Finding` for every problem:

- a repair by code is applied and recorded (`action="repaired"`);
- an optional field whose text is unusable becomes null (`"nulled"`), an item of a list that
  can spare it is dropped (`"dropped"`: a description in the plot's optional characters, a
  dialogue line that is only a stage direction);
- what no code can repair stays as written and is marked `"reask"`; the caller asks the model
  once more with those findings, and otherwise keeps the answer and turns them into `"kept"`.

Shape is not judged here: the model's own validation (types, required fields, counts) runs
after the review, on the repaired data, and its errors are re-asked as before. A few
cross-field repairs live here too, because they need the siblings of a field: a dialogue line
written as a script ("Sam: words", "NAME: Sam. TEXT: words") is split into speaker and words,
a line labelled with another cast member's name moves to that speaker, a line said three
times or by someone outside the scene is dropped, a name listed twice is listed once, a scene
title that copies its beat's purpose becomes the beat's name.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import annotated_types
import regex
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .junk_rules import only_debris
from .rules import RULES, Context, Hit, clip, copies, similar
from .segment import sentences, word_key

MAX_REPEATS = 2  # a dialogue line said verbatim more often than this is a generation loop
# ... and a line of this many words or more said verbatim a second time in one dialogue ("The new
# one is Ethan.", twice in a scene of the fourth novella). A dialogue structured in parts is held
# to its parts' own check instead (parts.dialogue_parts: a line may be said twice).
LONG_LINE_WORDS = 4


@dataclass(frozen=True)
class Finding:
    rule: str
    field: str
    evidence: str
    message: str
    action: str  # repaired | dropped | nulled | reask | kept

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    def kept(self) -> Finding:
        return replace(self, action="kept")


REPAIRS = frozenset({"repaired", "dropped", "nulled"})


@dataclass
class Reviewed:
    data: Any
    findings: list[Finding] = field(default_factory=list)

    @property
    def open(self) -> list[Finding]:
        """The findings no code could repair (to re-ask once, else keep)."""
        return [f for f in self.findings if f.action == "reask"]


def check_text(text: str, key: str, context: Context, where: str) -> tuple[str, list[Finding], bool]:
    """`text` after every rule of field `key` ran on it, the findings, and whether it is unusable."""
    found: list[Finding] = []
    for rule in RULES:
        if not rule.applies(key, context.language):
            continue
        hit: Hit | None = rule.check(text, context)
        if hit is None:
            continue
        if hit.unusable:
            found.append(Finding(rule.name, where, hit.evidence, hit.message, "reask"))
            return text, found, True
        if hit.repaired is not None and hit.repaired.strip() and hit.repaired != text:
            found.append(Finding(rule.name, where, hit.evidence, hit.message, "repaired"))
            text = hit.repaired.strip()
        else:
            found.append(Finding(rule.name, where, hit.evidence, hit.message, "reask"))
    return text, found, False


# -- walking a model --


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the inner type, whether it is a list) of a field's annotation, without Optional/Annotated."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            inner = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = inner[0] if len(inner) == 1 else annotation
            if len(inner) != 1:
                return annotation, False
        elif origin is list:
            item, _ = _unwrap(typing.get_args(annotation)[0])
            return item, True
        else:
            return annotation, False


def _min_items(info: FieldInfo) -> int:
    return next((m.min_length for m in info.metadata if isinstance(m, annotated_types.MinLen)), 0)


def _key(model: type[BaseModel], name: str, is_list: bool) -> str:
    """The rules' name of a field: a list of names is "character", a bible person's name and a
    plot character's name asked alone (a tiny model's part) too."""
    if name == "characters" and is_list:
        return "character"
    if name == "facts" and is_list:
        return "fact"
    if name == "name" and model.__name__.startswith(("BibleCharacter", "CharacterName")):
        return "character"
    if name == "summary" and model.__name__.startswith(("Evaluation", "Enhancement")):
        return "critique"
    return name


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def review(model: type[BaseModel], data: Any, context: Context, where: str = "") -> Reviewed:
    """The repaired `data` and its findings (see the module docstring). Data that is not an
    object is returned as it is: its shape is for the model's validation to judge."""
    reviewed = Reviewed(data)
    if isinstance(data, dict):
        reviewed.data, _ = _walk(model, dict(data), context, where, reviewed.findings)
    return reviewed


def review_assembled(model: type[BaseModel], data: dict[str, Any], context: Context) -> Reviewed:
    """An object assembled from reviewed parts, through its own model's whole-object rules (AFTER:
    a long dialogue line said again dropped, a beat purpose given again made its own, ...): its
    fields were reviewed part by part, not as a whole. No whole re-ask follows parts, so a finding
    that would re-ask is kept and recorded."""
    reviewed = Reviewed(data)
    after = AFTER.get(model.__name__)
    if after is not None:
        found: list[Finding] = []
        reviewed.data = after(dict(data), context, "", found)
        reviewed.findings = [f if f.action in REPAIRS else f.kept() for f in found]
    return reviewed


def _walk(
    model: type[BaseModel], data: dict[str, Any], context: Context, where: str, out: list[Finding]
) -> tuple[dict[str, Any], bool]:
    """The object repaired, and whether a required text of it is unusable."""
    before = BEFORE.get(model.__name__.removesuffix("Part"))
    if before is not None:
        data = before(data, context, where, out)
    unusable = False
    for name, info in model.model_fields.items():
        if name not in data:
            continue
        inner, is_list = _unwrap(info.annotation)
        key = _key(model, name, is_list)
        path = f"{where}.{name}" if where else name
        value = data[name]
        if is_list and isinstance(value, list):
            data[name] = _walk_list(inner, key, value, _min_items(info), context, path, out)
        elif _is_model(inner) and isinstance(value, dict):
            data[name], bad = _walk(inner, dict(value), context, path, out)
            unusable = unusable or (bad and info.is_required())
        elif isinstance(value, str):
            text, found, bad = check_text(value, key, context, path)
            if bad and not info.is_required():
                out += [replace(f, action="nulled") if f.action == "reask" else f for f in found]
                data[name] = None
                continue
            fallback = dict(context.fallbacks).get(key)
            if bad and fallback:
                out += [
                    replace(f, action="repaired", message=f"{f.message}; made from the premise")
                    if f.action == "reask"
                    else f
                    for f in found
                ]
                data[name] = fallback
                continue
            out += found
            data[name] = text
            unusable = unusable or bad
    after = AFTER.get(model.__name__.removesuffix("Part"))
    if after is not None:
        data = after(data, context, where, out)
    return data, unusable


def _walk_list(
    inner: Any, key: str, items: list[Any], minimum: int, context: Context, path: str, out: list[Finding]
) -> list[Any]:
    checked: list[tuple[Any, list[Finding], bool]] = []
    for index, item in enumerate(items):
        at = f"{path}[{index}]"
        found: list[Finding] = []
        if _is_model(inner) and isinstance(item, dict):
            item, bad = _walk(inner, dict(item), context, at, found)
        elif isinstance(item, str):
            item, found, bad = check_text(item, key, context, at)
        else:
            bad = False
        checked.append((item, found, bad))
    spare = len(checked) - minimum  # items the list can lose and still hold its minimum
    kept: list[Any] = []
    for item, found, bad in checked:
        if bad and spare > 0:
            spare -= 1
            out += [replace(f, action="dropped") if f.action == "reask" else f for f in found]
            continue
        out += found
        kept.append(item)
    return kept


# -- cross-field repairs, by model name --

Hook = Callable[[dict[str, Any], Context, str, list[Finding]], dict[str, Any]]
BEFORE: dict[str, Hook] = {}
AFTER: dict[str, Hook] = {}

_SCRIPT_LABEL = regex.compile(
    r"^\s*\**\s*([^:()\n*]{1,40}?)\s*\**\s*(?:\([^)\n]{0,60}\))?\s*:\s*(.*)$", regex.S
)
_FIELD_LABEL = regex.compile(r"\b(?:NAME|SPEAKER|CHARACTER|TEXT|LINE|DIALOGUE)\s*:\s*", regex.I)


def _cast_name(label: str, cast: tuple[str, ...]) -> str | None:
    key = " ".join(label.split()).casefold()
    return next((n for n in cast if " ".join(n.split()).casefold() == key), None)


def split_script_line(speaker: str, text: str, cast: tuple[str, ...]) -> tuple[str, str, str] | None:
    """A line written as a script, taken apart: (speaker, words, what was done), or None when the
    text carries no label. "Sam: Go." said by Sam is Sam's "Go."; said by Tom, it is Sam's line
    (moved); "NAME: Sam. TEXT: Go." is Sam's "Go."; "NAME: Sam" alone has no words (words "")."""
    people = cast or ((speaker,) if speaker else ())
    labelled = _FIELD_LABEL.search(text)
    if labelled is not None and not text[: labelled.start()].strip(" *\"'"):
        pieces = [p.strip(" .,;\"'*") for p in _FIELD_LABEL.split(text) if p.strip(" .,;\"'*")]
        who = next((_cast_name(p, people) for p in pieces if _cast_name(p, people)), None)
        said = [p for p in pieces if not _cast_name(p, people)]
        words = " ".join(said).strip()
        if words and words[-1].isalnum():
            words += "."
        return (who or speaker, words, f"took the labels out of {clip(text, 40)!r}")
    match = _SCRIPT_LABEL.match(text)
    if match is None:
        return None
    label, rest = match.group(1).strip(), match.group(2).strip()
    who = _cast_name(label, people)
    if who is None:
        return None
    rest = regex.sub(r"^\([^)\n]{0,60}\)\s*", "", rest).strip()
    if who.casefold() == speaker.casefold():
        return (who, rest, f"took {who}'s own label off the line")
    return (who, rest, f"moved a line labelled {who + ':'!r} from {speaker or 'no one'} to {who}")


def _dialogue_line(data: dict[str, Any], context: Context, where: str, out: list[Finding]) -> dict[str, Any]:
    speaker, text = data.get("speaker"), data.get("text")
    if not isinstance(text, str):
        return data
    split = split_script_line(speaker if isinstance(speaker, str) else "", text, context.cast)
    if split is None:
        return data
    who, words, done = split
    out.append(Finding("script_line", f"{where}.text" if where else "text", clip(text, 40), done, "repaired"))
    # No words left ("NAME: Sam"): an empty line, which the rules find unusable (dropped from a
    # dialogue that can spare it).
    return {**data, "speaker": who, "text": words}


def _without_said_sentences(
    line: dict[str, Any], long_said: set[str], where: str, out: list[Finding]
) -> dict[str, Any]:
    """`line` without its long sentences already said in this dialogue, or earlier in the line ("The
    new one is Ethan. He's a great person." after "The new one is Ethan."), when another sentence
    remains; its long sentences join `long_said`."""
    parts = sentences(line["text"])
    fresh = []
    for sentence in parts:
        key = word_key(sentence)
        if len(key.split()) >= LONG_LINE_WORDS:
            if key in long_said:
                continue
            long_said.add(key)
        fresh.append(sentence)
    if not fresh or len(fresh) == len(parts):
        return line
    message = "a sentence said earlier in the dialogue"
    out.append(Finding("repeated_line", where, clip(line["text"], 40), message, "repaired"))
    return {**line, "text": " ".join(fresh)}


def _dialogue(data: dict[str, Any], context: Context, where: str, out: list[Finding]) -> dict[str, Any]:
    lines = data.get("lines")
    if not isinstance(lines, list):
        return data
    path = f"{where}.lines" if where else "lines"
    cast = {" ".join(c.split()).casefold() for c in context.cast}
    kept: list[Any] = []
    said: dict[str, int] = {}
    long_said: set[str] = set()  # the long sentences said so far (LONG_LINE_WORDS words or more)
    for index, line in enumerate(lines):
        if not isinstance(line, dict) or not isinstance(line.get("text"), str):
            kept.append(line)
            continue
        line = _without_said_sentences(line, long_said, f"{path}[{index}].text", out)
        key = word_key(line["text"])
        said[key] = said.get(key, 0) + 1
        speaker = str(line.get("speaker", ""))
        reason = None
        if said[key] > (1 if len(key.split()) >= LONG_LINE_WORDS else MAX_REPEATS):
            reason = ("repeated_line", f"{clip(line['text'])!r} is said {said[key]} times")
        elif cast and " ".join(speaker.split()).casefold() not in cast:
            reason = ("speaker_outside_cast", f"{speaker!r} is not in this scene's cast")
        elif not key:
            reason = ("empty_line", "the line has no words")
        elif only_debris(line["text"]):  # kept after its re-ask: talk about JSON, not speech
            reason = ("debris", "every sentence of the line is about JSON or a schema")
        if reason is not None and len(lines) - (index + 1) + len(kept) >= 1:
            out.append(Finding(reason[0], f"{path}[{index}]", clip(line["text"], 40), reason[1], "dropped"))
            continue
        kept.append(line)
    return {**data, "lines": kept}


def _unique_names(key: str) -> Hook:
    def hook(data: dict[str, Any], context: Context, where: str, out: list[Finding]) -> dict[str, Any]:
        names = data.get(key)
        if not isinstance(names, list):
            return data
        seen: set[str] = set()
        kept = []
        for index, name in enumerate(names):
            folded = " ".join(str(name).split()).casefold()
            if folded in seen:
                path = f"{where}.{key}[{index}]" if where else f"{key}[{index}]"
                out.append(Finding("listed_twice", path, str(name), f"{name!r} is listed twice", "dropped"))
                continue
            seen.add(folded)
            kept.append(name)
        return {**data, key: kept}

    return hook


def _scene(data: dict[str, Any], context: Context, where: str, out: list[Finding]) -> dict[str, Any]:
    data = _unique_names("characters")(data, context, where, out)
    title = data.get("title")
    beat_name = context.beat_name
    at = f"{where}.title" if where else "title"
    copied = [f for f in out if f.field == at and f.rule == "copied_instruction" and f.action == "reask"]
    if copied and beat_name and isinstance(title, str):
        out.remove(copied[0])
        out.append(
            replace(
                copied[0],
                action="repaired",
                message=copied[0].message + f"; the beat's name {beat_name!r} is the title",
            )
        )
        data = {**data, "title": beat_name}
    summary = data.get("summary")
    if isinstance(summary, str) and isinstance(title, str) and word_key(summary) == word_key(title):
        path = f"{where}.summary" if where else "summary"
        out.append(
            Finding(
                "repeats_sibling",
                path,
                clip(summary, 40),
                "the summary only repeats the title; say what happens in the scene",
                "reask",
            )
        )
    return data


def _same_as(key: str, other: str, message: str, *, loose: bool = False) -> Hook:
    """A text that only repeats its sibling (a purpose that is its beat's name)."""

    def hook(data: dict[str, Any], context: Context, where: str, out: list[Finding]) -> dict[str, Any]:
        mine, theirs = data.get(key), data.get(other)
        if isinstance(mine, str) and isinstance(theirs, str) and word_key(mine):
            if word_key(mine) == word_key(theirs) or (loose and similar(mine, theirs)):
                path = f"{where}.{key}" if where else key
                out.append(Finding("repeats_sibling", path, clip(mine, 40), message, "reask"))
        return data

    return hook


def _bible_character(
    data: dict[str, Any], context: Context, where: str, out: list[Finding]
) -> dict[str, Any]:
    name, role = data.get("name"), data.get("role")
    if (
        isinstance(name, str)
        and isinstance(role, str)
        and word_key(role)
        and (word_key(role) == word_key(name) or set(word_key(role).split()) <= set(word_key(name).split()))
    ):
        path = f"{where}.role" if where else "role"
        out.append(
            Finding(
                "role_is_name",
                path,
                clip(role, 40),
                f"the role of {name} only repeats the name; say what part they play",
                "reask",
            )
        )
    return data


def _plot(data: dict[str, Any], context: Context, where: str, out: list[Finding]) -> dict[str, Any]:
    data = _unique_names("characters")(data, context, where, out)
    beats = data.get("beats")
    if isinstance(beats, list):
        path = f"{where}.beats" if where else "beats"
        data = {**data, "beats": _distinct_beat_purposes(_distinct_beat_names(beats, path, out), path, out)}
    return data


def _distinct_beat_purposes(beats: list[Any], path: str, out: list[Finding]) -> list[Any]:
    """A beat whose purpose repeats an earlier beat's is given one of its own: its name when that
    is a sentence (four words or more), else the purpose said of its name (measured: Qwen2.5-0.5B
    gave two of three beats one purpose on all six attempts, and the story was lost at its plot)."""
    taken: set[str] = set()
    out_beats: list[Any] = []
    for index, beat in enumerate(beats):
        purpose = beat.get("purpose") if isinstance(beat, dict) else None
        if not isinstance(purpose, str) or not word_key(purpose) or word_key(purpose) not in taken:
            if isinstance(purpose, str):
                taken.add(word_key(purpose))
            out_beats.append(beat)
            continue
        name = str(beat.get("name") or "").strip()
        own = name.rstrip(" .;:") + "." if len(name.split()) >= 4 else f"{purpose.rstrip(' .;:')}, as {name}."
        if not name or word_key(own) in taken:
            out_beats.append(beat)  # nothing of its own to say: the schema judges the plot
            continue
        taken.add(word_key(own))
        out.append(
            Finding(
                "duplicate_purpose",
                f"{path}[{index}].purpose",
                clip(purpose, 60),
                f"the purpose repeats an earlier beat's; this one is {clip(own, 60)!r}",
                "repaired",
            )
        )
        out_beats.append({**beat, "purpose": own})
    return out_beats


def _distinct_beat_names(beats: list[Any], path: str, out: list[Finding]) -> list[Any]:
    """A beat named like an earlier one is named from its purpose's first words, or numbered
    (measured: Qwen2.5-0.5B named two beats "Captain" on all six attempts and lost the plot)."""
    taken: set[str] = set()
    renamed: list[Any] = []
    for index, beat in enumerate(beats):
        name = beat.get("name") if isinstance(beat, dict) else None
        if not isinstance(name, str) or word_key(name) not in taken:
            if isinstance(name, str):
                taken.add(word_key(name))
            renamed.append(beat)
            continue
        purpose = str(beat.get("purpose") or "")
        candidate = " ".join(purpose.split()[:4]).strip(" ,.;:!?").title()[:48]
        number = 2
        while not word_key(candidate) or word_key(candidate) in taken:
            candidate = f"{name} {number}"
            number += 1
        taken.add(word_key(candidate))
        out.append(
            Finding(
                "duplicate_name",
                f"{path}[{index}].name",
                name,
                f"{name!r} names an earlier beat too; this one is {candidate!r}",
                "repaired",
            )
        )
        renamed.append({**beat, "name": candidate})
    return renamed


def _enhancement(data: dict[str, Any], context: Context, where: str, out: list[Finding]) -> dict[str, Any]:
    """A suggestion whose change or problem copies an earlier one's is dropped (one always stays)."""
    items = data.get("suggestions")
    if not isinstance(items, list):
        return data
    kept: list[Any] = []
    for index, item in enumerate(items):
        copied = isinstance(item, dict) and any(
            isinstance(other, dict)
            and any(
                isinstance(item.get(k), str) and isinstance(other.get(k), str) and similar(item[k], other[k])
                for k in ("change", "problem")
            )
            for other in kept
        )
        if copied:
            path = f"{where}.suggestions[{index}]" if where else f"suggestions[{index}]"
            out.append(
                Finding(
                    "copied",
                    path,
                    clip(str(item.get("change", "")), 40),
                    "repeats an earlier suggestion",
                    "dropped",
                )
            )
            continue
        kept.append(item)
    return {**data, "suggestions": kept}


BEFORE["DialogueLine"] = _dialogue_line
AFTER["Enhancement"] = _enhancement
AFTER["Dialogue"] = _dialogue
AFTER["Scene"] = _scene
AFTER["PlotStructure"] = _plot
AFTER["PlotBeat"] = _same_as(
    "purpose", "name", "the purpose only repeats the beat's name; say what happens and why it matters"
)
AFTER["CriterionScore"] = _same_as(
    "rationale", "criterion", "the rationale only names the criterion; say why it earns its score"
)
AFTER["Suggestion"] = _same_as(
    "change", "problem", "the change only repeats the problem; say what to do", loose=True
)
AFTER["BibleCharacter"] = _bible_character


def kept(findings: list[Finding]) -> list[Finding]:
    """`findings` with those still open turned into findings kept with the text."""
    return [f.kept() if f.action == "reask" else f for f in findings]


__all__ = [
    "Finding",
    "Reviewed",
    "check_text",
    "copies",
    "kept",
    "review",
    "split_script_line",
]
