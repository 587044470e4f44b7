"""One part of an object structured in parts: `Part`, the grammar of its strings, its checks.

A `Part` is one structuring call of a small model (see parts.py, where each component's plan
of parts is made): a slice of the component's decoding schema (`slice_schema`), a model that
validates the slice (`model_of`), the notes it is shown (`notes_slice`), and a cross-check
against what is already assembled (`distinct`, `differs`, `each_once`, ...). The grammar its
strings get: names of Latin letters that are not an article (`name_pattern`), free text without
JSON debris (`PLAIN_CHARACTER`), prose that ends a sentence (`PROSE_FIELDS`). `instruction_echo`
rejects an answer that repeats what the part asked.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, create_model

from ..schemas import name_key, word_key
from ..text.rules import similar
from ..text.segment import sentences, words

# Letters a name may hold: Latin with its diacritics (Latin-1 and Latin Extended-A); one
# apostrophe or hyphen may join two runs of letters ("José", "O'Neil", "Zoë", "Mary-Jane").
# Ranges, because llama.cpp's grammar has no \p{L}; plain groups only, because its converter has
# no `(?:` or lookahead. (Other scripts pass the schemas' name rule; this grammar is the tiny
# profile's, for a 135M model that writes Latin script.)
# Latin Extended-A mixes cases (Ā ā Ă ă …), so its capitals (Ł, Ż) and small letters are listed
# one by one: a range of it after a capital let "AaĀĀ" through, a phrase run together to the rule.
_EXTENDED_A = [chr(code) for code in range(0x100, 0x180)]
UPPER_ACCENTED = "À-ÖØ-Þ" + "".join(c for c in _EXTENDED_A if c.isupper())
_UPPER = "A-Z" + UPPER_ACCENTED
_LOWER_REST = "ß-öø-ÿ" + "".join(c for c in _EXTENDED_A if c.islower())
LETTERS = _UPPER + "a-z" + _LOWER_REST
_LOWER = "a-z" + _LOWER_REST  # after a name's capital: no run-together phrase ("TheFutureBegins")
# "'Neil", "-Jane", "O'Sullivan": a joined piece of at most 8 letters, so that a word the grammar
# allows (its first piece up to 20) is never one the validator refuses as run together (over 28)
_JOINED = f"(['’-][{LETTERS}][{_LOWER}]{{0,7}})?"
INITIALS = "ABCDEFGHIJKLMNOPRSTVWYZ"  # a new name's initial: one not taken yet (accented ones always free)


def _letters_but(lower: str) -> str:
    """The lower-case letters with the ASCII range `lower` in place of a-z (to leave one out)."""
    return lower + _LOWER_REST


def name_pattern(initials: str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ") -> str:
    """A character's name: one to three capitalised words, the first of two letters or more, starting
    with one of `initials` (or an accented capital) and not an article: the schemas reject "The
    Lighthouse" or "An Owl" as names, so the grammar does not offer them (measured, SmolLM2
    answered "The Lighthouse" on every re-ask)."""
    plain = "".join(c for c in initials if c not in "AT") + UPPER_ACCENTED
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
    # The notes' value is exact (a script line's words, the cast members a draft names): made by
    # code first, with no model call, when it passes the part's checks and the text rules; the
    # model is asked only when it does not.
    code_first: bool = False

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


def note_units(draft: str) -> int:
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
# The first character of prose: a PLAIN_CHARACTER that is not a space, a digit or a mark, so a
# letter of any script or an opening quote (measured: SmolLM2 began all five rationales of a
# bench story's evaluation with "- 10/24/2018", each re-asked and written again; a list's "1." and
# a leading comma were re-asked the same way).
PROSE_START = r'[^{}\[\]"\\\n \t0-9,.;:!?/*#()-]'


# Fields of prose (the schemas' `Text` and `Speech`): they must not be cut off, so their grammar
# ends them with a sentence's final punctuation within their length (measured: SmolLM2 ran to
# maxLength mid-sentence in 38 % of prose fields, and a re-ask ran to it again). A full stop
# after a fragment or a dangling word is still rejected as cut off (sanity.cut_off_problem).
PROSE_FIELDS = (
    "setting", "summary", "purpose", "description", "text", "rationale", "problem", "change", "fact",
)  # fmt: skip


def _plain(name: str, prop: dict[str, Any]) -> dict[str, Any]:
    """A string property without its own pattern or enum, restricted to PLAIN_CHARACTERs (and
    when it is prose, beginning with a PROSE_START and ending in . ! or ?)."""
    if prop.get("type") != "string" or "pattern" in prop or "enum" in prop:
        return prop
    low, high = prop.get("minLength", 1), prop.get("maxLength", 120)
    if name in PROSE_FIELDS and high >= 3:
        middle = f"{{{max(low - 2, 1)},{high - 2}}}"
        return {**prop, "pattern": f"^{PROSE_START}{PLAIN_CHARACTER}{middle}[.!?]$"}
    return {**prop, "pattern": f"^{PLAIN_CHARACTER}{{{low},{high}}}$"}


def slice_schema(
    schema: dict[str, Any], fields: list[str], overrides: dict[str, dict[str, Any]] | None = None
) -> dict:
    # An optional field (dropped from the decoding schema) is a plain bounded string here.
    plain = {"type": "string", "minLength": 1, "maxLength": 120}
    properties = {
        f: _plain(f, {**schema["properties"].get(f, plain), **(overrides or {}).get(f, {})}) for f in fields
    }
    return {"type": "object", "properties": properties, "required": fields, "additionalProperties": False}


def model_of(model: type[BaseModel], fields: list[str]) -> type[BaseModel]:
    definitions: dict[str, Any] = {
        f: (model.model_fields[f].annotation, model.model_fields[f]) for f in fields
    }
    return create_model(f"{model.__name__}Part", **definitions)


def distinct(key: str, label: str, allowed: int = 0) -> CrossCheck:
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


def all_of(*checks: CrossCheck) -> CrossCheck:
    """The first problem any of `checks` finds."""

    def check(value: dict[str, Any], assembled: dict[str, Any]) -> str | None:
        return next((p for c in checks if (p := c(value, assembled)) is not None), None)

    return check


def each_once(key: str) -> CrossCheck:
    """Reject a list value that names the same thing twice (a small model repeats itself)."""

    def check(value: dict[str, Any], assembled: dict[str, Any]) -> str | None:
        seen: set[str] = set()
        for item in value.get(key, []):
            if name_key(str(item)) in seen:
                return f"{key}: {item!r} is listed twice; list each one once"
            seen.add(name_key(str(item)))
        return None

    return check


def differs(key: str, other: str, fixed: dict[str, Any] | None = None, *, loose: bool = False) -> CrossCheck:
    """Reject a `key` that only repeats `other`, compared as the full model compares the two:
    the same words, or with `loose` also mostly the same words (`sanity.similar`)."""

    def check(value: dict[str, Any], assembled: dict[str, Any]) -> str | None:
        mine, theirs = str(value.get(key, "")), str({**assembled, **(fixed or {}), **value}.get(other, ""))
        same = similar(mine, theirs) if loose else word_key(mine) == word_key(theirs)
        if word_key(mine) and same:
            return f"{key} only repeats the {other}; say something new"
        return None

    return check


def distinct_scalar(key: str) -> CrossCheck:
    """Reject a scalar item whose words are those of an item already in the list `key`."""

    def check(value: dict[str, Any], assembled: dict[str, Any]) -> str | None:
        text = word_key(next(iter(value.values())))
        if any(word_key(v) == text for v in assembled.get(key, [])):
            return f"this repeats an earlier {key[:-1]}; write a different one"
        return None

    return check
