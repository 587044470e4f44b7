"""Structuring in parts: for small models, stage 2 fills an object one small piece at a time.

A tiny model (the embedded SmolLM2-135M) writes shape-valid but meaningless JSON when asked
for a whole plot at once: copied names, one tension everywhere, blank names (measured: 1 valid
plot in 16 one-shot tries). Asked for one beat at a time, shown what it already wrote and
given a schema bounded to that piece, it does far better. Each `Part` is one such call: a
slice of the component's decoding schema (one source of truth: `decoding_schema(Model)`),
a model that validates the slice, and a cross-check against what is already assembled.
Every rule the full model checks across items (unique beat names, distinct purposes and
changes, no looping lines, each criterion once, overall within the scores) has a counterpart
here, in a part's schema or its cross-check, so a mistake is caught and re-asked at the part
that made it. The assembled object is still validated by the full model at the end, as in
one-shot mode.

Which providers structure in parts is their model profile's choice (providers/profiles.py:
`tiny`). The aids here (openers, unused initials) are for that profile only; names may hold any
letters, apostrophes and hyphens here as everywhere.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, create_model

from ..schemas import (
    EVALUATION_CRITERIA,
    CriterionScore,
    Dialogue,
    DialogueLine,
    Enhancement,
    Evaluation,
    PersonName,
    PlotBeat,
    PlotStructure,
    Scene,
    Suggestion,
    name_key,
    speaker_label,
    word_key,
)
from ..structuring import decoding_schema
from ..text.rules import similar
from ..text.segment import sentences, words

# Letters a name may hold: Latin with its diacritics (Latin-1 and Latin Extended-A); one
# apostrophe or hyphen may join two runs of letters ("José", "O'Neil", "Zoë", "Mary-Jane").
# Ranges, because llama.cpp's grammar has no \p{L}; plain groups only, because its converter has
# no `(?:` or lookahead. (Other scripts pass the schemas' name rule; this grammar is the tiny
# profile's, for a 135M model that writes Latin script.)
_UPPER_ACCENTED = "À-ÖØ-ÞĀ-ž"  # Latin Extended-A mixes cases: its capitals (Ł, Ż) start names
_UPPER = "A-Z" + _UPPER_ACCENTED
_LOWER_REST = "ß-öø-ÿĀ-ž"
LETTERS = _UPPER + "a-z" + _LOWER_REST
_LOWER = "a-z" + _LOWER_REST  # after a name's capital: no run-together phrase ("TheFutureBegins")
_JOINED = f"(['’-][{LETTERS}][{_LOWER}]{{0,18}})?"  # "'Neil", "-Jane"
_INITIALS = "ABCDEFGHIJKLMNOPRSTVWYZ"  # a new name's initial: one not taken yet (accented ones always free)


def _letters_but(lower: str) -> str:
    """The lower-case letters with the ASCII range `lower` in place of a-z (to leave one out)."""
    return lower + _LOWER_REST


def name_pattern(initials: str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ") -> str:
    """A character's name: one to three capitalised words, the first of two letters or more, starting
    with one of `initials` (or an accented capital) and not an article: the schemas reject "The
    Lighthouse" or "An Owl" as names, so the grammar does not offer them (measured, SmolLM2
    answered "The Lighthouse" on every re-ask)."""
    plain = "".join(c for c in initials if c not in "AT") + _UPPER_ACCENTED
    options = [f"[{plain}]([{_LOWER}]{{1,19}}{_JOINED}|['’-][{LETTERS}][{_LOWER}]{{0,18}})"]
    if "A" in initials:  # not "A", "An"
        no_n = _letters_but("a-mo-z")
        options.append(f"A([{no_n}][{_LOWER}]{{0,18}}{_JOINED}|n[{_LOWER}]{{1,18}}{_JOINED})")
    if "T" in initials:  # not "The"
        no_h, no_e = _letters_but("a-gi-z"), _letters_but("a-df-z")
        options.append(
            f"T([{no_h}][{_LOWER}]{{0,18}}{_JOINED}|h|h[{no_e}][{_LOWER}]{{0,17}}{_JOINED}"
            f"|he[{_LOWER}]{{1,17}}{_JOINED})"
        )
    later = f"( [{_UPPER}][{_LOWER}]{{0,19}}{_JOINED}){{0,2}}"
    return f"^({'|'.join(options)}){later}$"


# A character's name (blocks "{ ", " ", sentences and "The ..." as names).
NAME_PATTERN = name_pattern()
SENTENCE = 30  # minLength of a field that must be a sentence, not a copied name
STRUCTURE_TYPES = ["three-act", "five-act", "hero's journey", "kishotenketsu", "in medias res"]


class _NameModel(BaseModel):
    name: PersonName


CrossCheck = Callable[[dict[str, Any], dict[str, Any]], str | None]
# A plan is a list of parts; a callable builds its part from what is assembled so far.
PartPlan = list["Part | Callable[[dict[str, Any]], Part]"]


@dataclass(frozen=True)
class Part:
    """One structuring call: `fields` of the object, or one item of the list `item_of`."""

    what: str
    schema: dict[str, Any]
    model: type[BaseModel]
    item_of: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # fixed values merged into the item
    check: CrossCheck | None = None
    # (i, n): show the model only the i-th of n slices of the notes, and not the earlier parts.
    # A tiny model copies whatever it is shown, so list items each get their own slice of the draft.
    slice_of: tuple[int, int] | None = None
    # The notes this part alone is shown, made by code (a dialogue line's words from the draft's
    # script); like a slice, the earlier parts are not shown.
    own_notes: str | None = None
    # True: the prompt does not list the parts already written ("Already written: title: ...,
    # setting: ..."); a part that needs only the notes is better off without: measured, SmolLM2
    # wrote that line into the scene summary on every attempt.
    notes_only: bool = False
    scalar: str | None = None  # append value[scalar] to `item_of`, not the whole object
    # An item beyond its list's minimum: when the model cannot write it validly, it and the rest
    # of its list are left out (and said so in the metadata) instead of failing the object.
    optional: bool = False
    # A required part the model cannot write validly: its value made by code from the notes (a
    # scene's summary from its draft's first sentences), checked like an answer, said so in the
    # metadata. None: the failure stands.
    from_notes: Callable[[str], dict[str, Any]] | None = None

    def notes(self, draft: str) -> str:
        if self.own_notes is not None:
            return self.own_notes
        return draft if self.slice_of is None else notes_slice(draft, *self.slice_of)

    @property
    def sees_earlier(self) -> bool:
        """Whether the prompt shows the parts already written (not when it has notes of its own)."""
        return not self.notes_only and self.slice_of is None and self.own_notes is None

    def merge(self, assembled: dict[str, Any], value: dict[str, Any]) -> None:
        if self.item_of is None:
            assembled.update(value)
        elif self.scalar is not None:
            assembled.setdefault(self.item_of, []).append(value[self.scalar])
        else:
            assembled.setdefault(self.item_of, []).append({**self.extra, **value})

    def describe(self, value: dict[str, Any]) -> str:
        return ", ".join(
            f"{k}: {v if not isinstance(v, list) else ', '.join(map(str, v))}" for k, v in value.items()
        )


# A placeholder copied from a prompt into an answer ("<up to 160 characters> Hello.", measured).
_PLACEHOLDER = re.compile(r"<[^<>]*>|\bup to \d+ characters\b", re.I)


def instruction_echo(
    part: Part, value: dict[str, Any], assembled: dict[str, Any] | None = None
) -> str | None:
    """A text field that only repeats what the part was asked ("the setting: where and when the
    story happens" answered ", where and when the story happens, in one sentence.", measured), or
    copies a key of the object as a label ("The Story of Love, setting: Sophia's Dream", a summary
    that copied the "Already written" line)."""
    keys = [k for k in assembled or {} if k not in part.schema.get("properties", {})]  # earlier parts' keys
    label = re.compile(r"\b(?:" + "|".join(re.escape(k) for k in keys) + r")\s*:", re.I) if keys else None
    asked = [part.what] + [
        str(prop.get("description"))
        for prop in part.schema.get("properties", {}).values()
        if prop.get("description")
    ]
    for key, text in value.items():
        if not isinstance(text, str):
            continue
        if _PLACEHOLDER.search(text) or any(_echoes(text, i) for i in asked):
            return f"{key} {text[:80]!r} repeats the instructions; write what the story says instead"
        copied = label.search(text) if label else None
        if copied:
            return f"{key} {text[:80]!r} copies the label {copied.group(0)!r}; write only the {key} itself"
    return None


def _echoes(text: str, instruction: str) -> bool:
    """`similar`, or four words or more nearly all taken from the instruction ("What theresa says,
    in the words of the notes." for "line 1 of 4: what Theresa says, in the words of the notes")."""
    said = set(words(text))
    return similar(text, instruction) or (
        len(said) >= 4 and len(said - set(words(instruction))) <= len(said) // 8
    )


def _units(draft: str) -> int:
    """How many slices `notes_slice` can make of `draft`: its lines, or its sentences if more."""
    lines = [line for line in draft.splitlines() if line.strip()]
    return max(len(lines), len(sentences(draft)))


def notes_slice(draft: str, index: int, total: int) -> str:
    """The `index`-th of `total` contiguous groups of the draft's lines (or sentences, if too few lines)."""
    units = [line.strip() for line in draft.splitlines() if line.strip()]
    if len(units) < total:
        units = sentences(draft)
    if len(units) < total:
        return draft
    start, end = index * len(units) // total, (index + 1) * len(units) // total
    return "\n".join(units[start:end])


# Any character but those of JSON debris: no braces, brackets, double quotes, backslashes or line
# breaks in a free-text field. The schemas reject debris in text; in parts the grammar does not
# offer it (measured: SmolLM2 re-asked about "{{A-L-E-Y...}}" wrote it again every time).
PLAIN_CHARACTER = r'[^{}\[\]"\\\n]'


# Fields of prose (the schemas' `Text` and `Speech`): they must not be cut off, so their grammar
# ends them with a sentence's final punctuation within their length (measured: SmolLM2 ran to
# maxLength mid-sentence in 38 % of prose fields, and a re-ask ran to it again). A full stop
# after a fragment or a dangling word is still rejected as cut off (sanity.cut_off_problem).
PROSE_FIELDS = (
    "setting", "summary", "purpose", "description", "text", "rationale", "problem", "change", "fact",
)  # fmt: skip


def _plain(name: str, prop: dict[str, Any]) -> dict[str, Any]:
    """A string property without its own pattern or enum, restricted to PLAIN_CHARACTERs (and
    ending in . ! or ? when it is prose)."""
    if prop.get("type") != "string" or "pattern" in prop or "enum" in prop:
        return prop
    low, high = prop.get("minLength", 1), prop.get("maxLength", 120)
    if name in PROSE_FIELDS and high >= 2:
        ending = f"{{{max(low - 1, 1)},{high - 1}}}[.!?]"
        return {**prop, "pattern": f"^{PLAIN_CHARACTER}{ending}$"}
    return {**prop, "pattern": f"^{PLAIN_CHARACTER}{{{low},{high}}}$"}


def _slice(
    schema: dict[str, Any], fields: list[str], overrides: dict[str, dict[str, Any]] | None = None
) -> dict:
    # An optional field (dropped from the decoding schema) is a plain bounded string here.
    plain = {"type": "string", "minLength": 1, "maxLength": 120}
    properties = {
        f: _plain(f, {**schema["properties"].get(f, plain), **(overrides or {}).get(f, {})}) for f in fields
    }
    return {"type": "object", "properties": properties, "required": fields, "additionalProperties": False}


def _model_of(model: type[BaseModel], fields: list[str]) -> type[BaseModel]:
    definitions: dict[str, Any] = {
        f: (model.model_fields[f].annotation, model.model_fields[f]) for f in fields
    }
    return create_model(f"{model.__name__}Part", **definitions)


def _distinct(key: str, label: str, allowed: int = 0) -> CrossCheck:
    """Reject a value of `key` that the assembled items already use more than `allowed` times.

    Compared as the full models compare (`sanity.similar`: the same words, or mostly the
    same words), never looser, so an object assembled from checked parts cannot fail them.
    """

    def check(value: dict[str, Any], assembled: dict[str, Any]) -> str | None:
        mine = str(value[key])
        used = sum(
            1
            for items in assembled.values()
            if isinstance(items, list)
            for item in items
            if isinstance(item, dict) and key in item and similar(str(item[key]), mine)
        )
        if used > allowed:
            return f"{key}: {value[key]!r} was already used; write a different {label}"
        return None

    return check


def _all(*checks: CrossCheck) -> CrossCheck:
    """The first problem any of `checks` finds."""

    def check(value: dict[str, Any], assembled: dict[str, Any]) -> str | None:
        return next((p for c in checks if (p := c(value, assembled)) is not None), None)

    return check


def _each_once(key: str) -> CrossCheck:
    """Reject a list value that names the same thing twice (a small model repeats itself)."""

    def check(value: dict[str, Any], assembled: dict[str, Any]) -> str | None:
        seen: set[str] = set()
        for item in value.get(key, []):
            if name_key(str(item)) in seen:
                return f"{key}: {item!r} is listed twice; list each one once"
            seen.add(name_key(str(item)))
        return None

    return check


def _differs(key: str, other: str, fixed: dict[str, Any] | None = None, *, loose: bool = False) -> CrossCheck:
    """Reject a `key` that only repeats `other`, compared as the full model compares the two:
    the same words, or with `loose` also mostly the same words (`sanity.similar`)."""

    def check(value: dict[str, Any], assembled: dict[str, Any]) -> str | None:
        mine, theirs = str(value.get(key, "")), str({**assembled, **(fixed or {}), **value}.get(other, ""))
        same = similar(mine, theirs) if loose else word_key(mine) == word_key(theirs)
        if word_key(mine) and same:
            return f"{key} only repeats the {other}; say something new"
        return None

    return check


def tension_band(index: int, total: int) -> list[int]:
    """The tensions a beat may take at its place in the arc: calm start, a peak, a settling end."""
    climax = min(round(0.75 * (total - 1)), total - 2) if total >= 3 else total - 1
    if index == 0:
        return [1, 2, 3, 4]
    if index == climax:
        return [7, 8, 9, 10]
    if index == total - 1:
        return [2, 3, 4, 5, 6]
    return [3, 4, 5, 6, 7, 8]


# What a beat's purpose opens with, by its place in the arc (see `tension_band`). The 135M
# model, shown similar notes for every beat, writes the same purpose sentence again and again,
# even re-sampled (measured: 6 of 30 plots); an opener that names the beat's job makes each
# purpose about its own beat, and distinct from the others by construction.
FIRST_OPENER = "Sets up"
CLIMAX_OPENER = "At the climax,"
LAST_OPENER = "In the end,"
MIDDLE_OPENERS = (
    "Sets off the conflict as",
    "Raises the stakes as",
    "Complicates things as",
    "Turns the story as",
    "Deepens the trouble as",
    "Tests the hero as",
    "Reveals",
    "Pushes",
    "Tightens the knot as",
    "Shifts the balance as",
)
PURPOSE_CHARACTERS = LETTERS + "0-9 ,.;:'!?()-"


def beat_opener(index: int, total: int) -> str | None:
    """The words beat `index` of `total` opens its purpose with (None once the openers run out)."""
    band = tension_band(index, total)
    if index == 0:
        return FIRST_OPENER
    if index == total - 1:
        return LAST_OPENER
    if band[0] >= 7:
        return CLIMAX_OPENER
    middle = index - 1
    return MIDDLE_OPENERS[middle] if middle < len(MIDDLE_OPENERS) else None


def _opening(opener: str | None) -> str:
    return f', starting "{opener} ..."' if opener else ""


def purpose_schema(index: int, total: int) -> dict[str, Any]:
    """The purpose field of beat `index`: a sentence of 30 to 200 characters, after its opener."""
    bounds: dict[str, Any] = {"minLength": SENTENCE, "maxLength": 200}
    opener = beat_opener(index, total)
    if opener is None:
        return bounds
    rest = SENTENCE - len(opener) - 1, 200 - len(opener) - 1
    return {**bounds, "pattern": f"^{opener} [{PURPOSE_CHARACTERS}]{{{max(rest[0], 8)},{rest[1]}}}$"}


def plot_parts(beats: int, characters: int = 3) -> PartPlan:
    schema = decoding_schema(PlotStructure, counts={"beats": (beats, beats), "characters": (2, 4)})
    frame = _slice(
        schema,
        ["title", "structure_type"],
        {
            "structure_type": {"enum": STRUCTURE_TYPES, "maxLength": max(map(len, STRUCTURE_TYPES))},
            "title": {"maxLength": 60},
        },
    )
    frame_model = _model_of(PlotStructure, ["title", "structure_type"])
    parts: PartPlan = [Part("the story's title and its structure type", frame, frame_model)]
    parts += [_character_part] * characters
    beat_schema = schema["properties"]["beats"]["items"]
    parts += [_beat_part(beat_schema, i, beats) for i in range(beats)]
    return parts


def _beat_part(beat_schema: dict[str, Any], i: int, beats: int) -> Callable[[dict[str, Any]], Part]:
    band = tension_band(i, beats)
    what = (
        f"beat {i + 1} of {beats}: a short name (two to five words), its purpose (one sentence: what "
        f"happens in this beat and why it matters{_opening(beat_opener(i, beats))}) and its tension "
        f"({band[0]} to {band[-1]})"
    )

    def build(assembled: dict[str, Any]) -> Part:
        # Each beat name starts with a letter no earlier beat used: unique by construction.
        taken = {b["name"][0].upper() for b in assembled.get("beats", [])}
        initials = "".join(c for c in _INITIALS if c not in taken) or _INITIALS
        overrides: dict[str, dict[str, Any]] = {
            "name": {"maxLength": 48, "pattern": f"^[{initials}{_UPPER_ACCENTED}][{LETTERS}' ,!?-]{{2,47}}$"},
            "purpose": purpose_schema(i, beats),
            "tension": {"enum": band},
        }
        item = _slice(beat_schema, ["name", "purpose", "tension"], overrides)
        check = _all(_distinct("name", "beat name"), _distinct("purpose", "purpose for this beat"))
        return Part(what, item, PlotBeat, item_of="beats", check=check, slice_of=(i, beats))

    return build


def _character_part(assembled: dict[str, Any]) -> Part:
    """One more main character, whose initial differs from the others': distinct by construction."""
    taken = {name[0] for name in assembled.get("characters", [])}
    initials = "".join(c for c in _INITIALS if c not in taken) or _INITIALS
    pattern = name_pattern(initials)
    schema = _slice({"properties": {}}, ["name"], {"name": {"maxLength": 30, "pattern": pattern}})
    what = "the name of one more main character (a first name, maybe a last name)"
    return Part(what, schema, _NameModel, item_of="characters", scalar="name")


def scene_parts(cast: list[str]) -> list[Part]:
    enums = {"characters": cast} if cast else {}
    count = (1, min(4, len(cast))) if cast else (1, 4)
    schema = decoding_schema(Scene, enums=enums, counts={"characters": count})
    overrides: dict[str, dict[str, Any]] = {
        "title": {"maxLength": 60},
        "setting": {"maxLength": 100},
        "summary": {"maxLength": 300},
    }
    if not cast:
        overrides["characters"] = {"items": {"type": "string", "pattern": NAME_PATTERN}}
    return [
        Part(
            "the scene's title and its setting (where and when)",
            _slice(schema, ["title", "setting"], overrides),
            _model_of(Scene, ["title", "setting"]),
        ),
        Part(
            "the scene's summary: two or three sentences of what happens",
            _slice(schema, ["summary"], overrides),
            _model_of(Scene, ["summary"]),
            check=_differs("summary", "title"),
            from_notes=_summary_from_draft,
            notes_only=True,
        ),
        Part(
            "the characters who appear in the scene, each named once",
            _slice(schema, ["characters"], overrides),
            _model_of(Scene, ["characters"]),
            check=_each_once("characters"),
        ),
    ]


def script_lines(draft: str, cast: list[str]) -> list[tuple[str, str]]:
    """The draft's lines written as a script, "Name: words" or "Name (smiling): words", by a cast
    member: (the cast's spelling of the name, the words without the label or a leading direction),
    each said once."""
    found: list[tuple[str, str]] = []
    for line in draft.splitlines():
        label = re.match(r"\s*([^:()\n]{1,40}?)\s*(?:\([^)\n]{0,60}\))?\s*:\s*(.+)", line)
        if not label:
            continue
        speaker = next((n for n in cast if name_key(n) == name_key(label.group(1))), None)
        words = re.sub(r"^\([^)\n]{0,60}\)\s*", "", label.group(2)).strip()
        # A line the script already said (SmolLM2's scripts loop: "I am Alec, I shall tell you
        # about my past and future." three times, by three speakers) is not a new line.
        if speaker and words and not any(similar(words, said) for _, said in found):
            found.append((speaker, words))
    return found


def dialogue_parts(cast: list[str], lines: int = 6, draft: str = "") -> list[Part]:
    """One part per line. When the draft is a script of at least two lines by the cast, each part
    is one of its lines: its speaker fixed, the model shown only those words (the draft's own
    attribution, and nothing else to copy). Otherwise the cast speaks in turn, each part shown its
    slice of the draft."""
    schema = decoding_schema(Dialogue, enums={"speaker": cast}, counts={"lines": (lines, lines)})
    item = schema["properties"]["lines"]["items"]
    script = script_lines(draft, cast)[:lines]
    if len(script) < 2:
        script = []
    # No more lines than the draft has lines (or sentences) to slice: asked for four lines from a
    # two-sentence draft, SmolLM2 said its second sentence three times, by three speakers.
    if script:
        count = len(script)
    else:
        count = max(2, min(lines, _units(draft))) if draft.strip() else lines
    parts = []
    for i in range(count):
        # The script's speaker, or turn-taking (the cast speaks in turn: nobody answers themselves).
        speaker, words = script[i] if script else (cast[i % len(cast)], None)
        part_schema = _slice(
            item, ["speaker", "text"], {"speaker": {"enum": [speaker]}, "text": {"maxLength": 160}}
        )
        what = f"line {i + 1} of {count} of the dialogue: " + (
            "who speaks and what they say (new words, not a repeat)" if words is None else f"{speaker}'s line"
        )
        parts.append(
            Part(
                what,
                part_schema,
                DialogueLine,
                item_of="lines",
                check=_all(_distinct("text", "line", allowed=1), _no_speaker_label(cast)),
                slice_of=None if script else (i, count),
                own_notes=words,
                optional=i >= 2,  # a dialogue is at least an exchange
            )
        )
    return parts


def _no_speaker_label(cast: list[str]) -> CrossCheck:
    """Dialogue's rule at the part: a line's text does not open with another speaker's label."""

    def check(value: dict[str, Any], assembled: dict[str, Any]) -> str | None:
        label = speaker_label(str(value.get("text", "")), cast)
        if label:
            return (
                f"the text starts with {label.strip() + ':'!r}, a line of {label.strip()}; write only the "
                f"words {value.get('speaker')} says"
            )
        return None

    return check


def evaluation_parts() -> PartPlan:
    schema = decoding_schema(Evaluation, counts={"scores": (len(EVALUATION_CRITERIA),) * 2})
    item = schema["properties"]["scores"]["items"]
    parts = []
    for criterion in EVALUATION_CRITERIA:
        part_schema = _slice(
            item, ["score", "rationale"], {"rationale": {"minLength": SENTENCE, "maxLength": 200}}
        )
        parts.append(
            Part(
                f"the score (1 to 10) for {criterion} and the reason in one sentence",
                part_schema,
                _model_of(CriterionScore, ["score", "rationale"]),
                item_of="scores",
                extra={"criterion": criterion},
                # A copied rationale is marked by Evaluation (not reliable), not re-asked: the
                # review of a story must not fail the story (measured: SmolLM2 copies on re-ask).
                check=_differs("rationale", "criterion", {"criterion": criterion}),
            )
        )
    plan: PartPlan = [
        *parts,
        lambda assembled: evaluation_summary_part([s["score"] for s in assembled["scores"]]),
    ]
    return plan


def evaluation_summary_part(scores: list[int]) -> Part:
    """The overall score is bounded by the criterion scores (Evaluation checks it is within ±1)."""
    low, high = max(1, min(scores) - 1), min(10, max(scores) + 1)
    schema = decoding_schema(Evaluation)
    part_schema = _slice(
        schema,
        ["overall", "summary"],
        {
            "overall": {"enum": list(range(low, high + 1))},
            "summary": {"minLength": SENTENCE, "maxLength": 300},
        },
    )
    return Part(
        "the overall score and a one-sentence summary of the evaluation",
        part_schema,
        _model_of(Evaluation, ["overall", "summary"]),
    )


def enhancement_parts(suggestions: int = 2, targets: list[str] | None = None) -> list[Part]:
    """Suggestions one at a time, then the summary; `targets` (the story's scenes and people, as
    "Scene 2: Title" and names) bound what a suggestion may target, so a revision can apply it."""
    enums = {"target": targets} if targets else {}
    schema = decoding_schema(Enhancement, counts={"suggestions": (suggestions, suggestions)}, enums=enums)
    item = _slice(
        schema["properties"]["suggestions"]["items"],
        ["target", "problem", "change"],
        {
            "target": {} if targets else {"maxLength": 60},
            "problem": {"minLength": SENTENCE, "maxLength": 200},
            "change": {"minLength": SENTENCE, "maxLength": 200},
        },
    )
    parts = [
        Part(
            f"suggestion {i + 1} of {suggestions}: what to improve (a beat or scene), the problem, and the "
            "change that fixes it",
            item,
            Suggestion,
            item_of="suggestions",
            check=_all(
                _differs("change", "problem", loose=True),
                _distinct("change", "change"),
                _distinct("problem", "problem"),
            ),
            slice_of=(i, suggestions),
            optional=i >= 1,
        )
        for i in range(suggestions)
    ]
    parts.append(
        Part(
            "a one-sentence summary of the suggested changes",
            _slice(schema, ["summary"]),
            _model_of(Enhancement, ["summary"]),
        )
    )
    return parts


def bible_parts(cast: list[str], pronouns: str | None = None, facts: int = 2) -> PartPlan:
    """One part per character (its name fixed; the premise's pronouns for the first), the setting,
    then optional facts."""
    from ..bible import PRONOUNS, BibleCharacter, StoryBible

    schema = decoding_schema(StoryBible, counts={"characters": (len(cast), len(cast))})
    item = schema["properties"]["characters"]["items"]
    plan: PartPlan = []
    for index, name in enumerate(cast):
        choices = [pronouns] if pronouns and index == 0 else list(PRONOUNS)
        overrides: dict[str, dict[str, Any]] = {
            "role": {"maxLength": 80},
            "description": {"minLength": 12, "maxLength": 160},
            "pronouns": {"enum": choices},
        }
        plan.append(
            Part(
                f"who {name} is: their role in the story, one sentence about them, and their pronouns",
                _slice(item, ["role", "description", "pronouns"], overrides),
                _model_of(BibleCharacter, ["role", "description", "pronouns"]),
                item_of="characters",
                extra={"name": name},
                check=_distinct("description", "description of this character"),
                # Its own line of the notes (one a character, then the setting), not the others'
                # answers: a tiny model copies the description it was just shown.
                slice_of=(index, len(cast) + 1),
            )
        )
    plan.append(
        Part(
            "the setting: where and when the story happens, in one sentence",
            _slice(schema, ["setting"], {"setting": {"maxLength": 160}}),
            _model_of(StoryBible, ["setting"]),
            slice_of=(len(cast), len(cast) + 1),
        )
    )
    fact = _slice(
        {"properties": {"fact": {"type": "string", "minLength": SENTENCE, "maxLength": 160}}}, ["fact"]
    )
    fact_model = create_model("BibleFact", fact=(str, ...))
    plan += [
        Part(
            f"fact {i + 1}: one thing every scene must respect",
            fact,
            fact_model,
            item_of="facts",
            scalar="fact",
            optional=True,
            check=_distinct_scalar("facts"),
        )
        for i in range(facts)
    ]
    return plan


def _distinct_scalar(key: str) -> CrossCheck:
    def check(value: dict[str, Any], assembled: dict[str, Any]) -> str | None:
        text = word_key(next(iter(value.values())))
        if any(word_key(v) == text for v in assembled.get(key, [])):
            return f"this repeats an earlier {key[:-1]}; write a different one"
        return None

    return check


# -- how long an answer can be -------------------------------------------------------------------

# Between JSON tokens llama.cpp's schema grammar allows at most one space (`space ::= " "?`);
# a server's own JSON mode may indent, so each separator is given room for a few characters.
_SEPARATOR = 3


def json_char_bound(schema: dict[str, Any]) -> int | None:
    """The most characters a JSON value valid for `schema` can take (None when unbounded).

    Strings count `maxLength` plus their quotes (an escape counts as one character, as
    maxLength does), enums their longest member, integers with bounds their widest value,
    arrays `maxItems` items, objects every property with its key.
    """
    if "enum" in schema:
        return max(len(json.dumps(value, ensure_ascii=False)) for value in schema["enum"])
    if "const" in schema:
        return len(json.dumps(schema["const"], ensure_ascii=False))
    branches = schema.get("anyOf") or schema.get("oneOf")
    if branches:
        bounds = [json_char_bound(branch) for branch in branches]
        return None if None in bounds else max(b for b in bounds if b is not None)
    kind = schema.get("type")
    if kind == "string":
        return schema["maxLength"] + 2 if "maxLength" in schema else None
    if kind in ("integer", "number"):
        if "minimum" not in schema or "maximum" not in schema or kind == "number":
            return None
        return max(len(str(schema["minimum"])), len(str(schema["maximum"])))
    if kind == "boolean":
        return len("false")
    if kind == "null":
        return len("null")
    if kind == "array":
        item = json_char_bound(schema.get("items", {}))
        if item is None or "maxItems" not in schema:
            return None
        return 2 + _SEPARATOR + schema["maxItems"] * (item + _SEPARATOR)
    if kind == "object":
        total = 2 + _SEPARATOR
        for key, value in schema.get("properties", {}).items():
            bound = json_char_bound(value)
            if bound is None:
                return None
            total += len(json.dumps(key, ensure_ascii=False)) + 1 + bound + 2 * _SEPARATOR
        return total
    return None


# Tokens per answer: a byte-level BPE token holds at least one character (a letter outside ASCII
# may take two byte tokens; the margin and the retry on a cut-off cover that), plus the end token.
_TOKEN_MARGIN = 8


def answer_token_bound(schema: dict[str, Any], fallback: int) -> int:
    """`max_tokens` for an answer to `schema`: room for the longest valid JSON, never less.

    An answer needs no more, so a runaway stops there; and a valid answer is never cut off
    (which would cost a retry with a doubled budget). `fallback` when the schema is unbounded.
    """
    chars = json_char_bound(schema)
    return fallback if chars is None else chars + _TOKEN_MARGIN


def _summary_from_draft(notes: str) -> dict[str, Any]:
    """A scene's summary made from its notes: the draft's first whole sentences (up to 300 chars)."""
    from ..drafts import clean_prose, sentences

    draft = "\n".join(line for line in notes.splitlines() if not line.startswith("Plot beat:"))
    summary = ""
    for sentence in sentences(clean_prose(draft)):
        if len(summary) + len(sentence) + 1 > 300:
            break
        summary = f"{summary} {sentence}".strip()
        if len(summary) >= 120:
            break
    return {"summary": summary}
