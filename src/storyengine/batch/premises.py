"""The premises of a batch: a JSONL file, a text file (one premise a line), or Python values.

Each usable line becomes a `PremiseItem` with a stable id: the `id` the line gives, else one
derived from the line number and a short hash of the premise (`0007-3f2a9c1b`), so running
the same file again finds the same stories. A line that cannot run (malformed JSON, an empty
or overlong premise, scenes or chapters out of range, a bad or duplicate id) becomes a `Rejected`
with its line number; the rest of the batch runs. A line asks for a short story (`scenes`) or a
long one (`chapters`, optionally `scenes_per_chapter`), never both.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..pipeline.inputs import DEFAULT_SCENES_PER_CHAPTER, check_inputs

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_NUMBERS = ("scenes", "seed", "chapters", "scenes_per_chapter")  # a line's whole-number fields


@dataclass(frozen=True)
class PremiseItem:
    """One story to write: `scenes`/`seed`/`chapters`/`scenes_per_chapter` None means the batch's
    defaults (a long story's `chapters` of `scenes_per_chapter` scenes, never with `scenes`)."""

    id: str
    premise: str
    scenes: int | None = None
    seed: int | None = None
    line: int | None = None
    chapters: int | None = None
    scenes_per_chapter: int | None = None

    def fingerprint(self) -> str:
        """What makes this the same story on a rerun (a changed premise is a new story). A story
        without chapters has the spec it always had, so batches written before chapters resume."""
        spec: list[object] = [self.premise, self.scenes, self.seed]
        if self.chapters is not None or self.scenes_per_chapter is not None:
            per_chapter = self.scenes_per_chapter
            if self.chapters is not None and per_chapter is None:
                per_chapter = DEFAULT_SCENES_PER_CHAPTER  # the count the engine writes for "not given"
            spec += [self.chapters, per_chapter]
        text = json.dumps(spec, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Rejected:
    """A line that cannot run, and why."""

    line: int | None
    error: str
    id: str | None = None


Entry = PremiseItem | Rejected
PremiseLike = str | dict[str, Any] | PremiseItem


def derived_id(line: int, premise: str) -> str:
    digest = hashlib.sha256(premise.strip().encode("utf-8")).hexdigest()[:8]
    return f"{line:04d}-{digest}"


def load_premises(path: str | Path) -> list[Entry]:
    """Read PREMISES: JSON lines when the file looks like JSONL (.jsonl, or a first line "{")."""
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read the premises file {file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"the premises file {file} is not UTF-8 text: {exc}") from None
    lines = text.splitlines()
    first = next((line.strip() for line in lines if line.strip()), "")
    jsonl = file.suffix.lower() in (".jsonl", ".ndjson") or first.startswith("{")
    entries = list(_parse_lines(lines, jsonl=jsonl))
    if not entries:
        raise InputError(f"the premises file {file} has no premises (one a line, or JSON lines)")
    return entries


def _parse_lines(lines: list[str], *, jsonl: bool) -> Iterator[Entry]:
    raw: list[tuple[int, PremiseLike | Rejected]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or (not jsonl and line.lstrip().startswith("#")):
            continue
        if not jsonl:
            raw.append((number, line))
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raw.append((number, Rejected(number, f"line {number} is not valid JSON: {exc}")))
            continue
        if not isinstance(value, dict):
            raw.append((number, Rejected(number, f"line {number} is not a JSON object")))
            continue
        raw.append((number, value))
    yield from _checked((number, value) for number, value in raw)


def normalize(premises: Iterable[PremiseLike | Rejected]) -> list[Entry]:
    """Premises given from Python: strings, dicts like a JSONL line, or `PremiseItem`s."""
    return list(_checked(enumerate(premises, 1)))


def _checked(numbered: Iterable[tuple[int, PremiseLike | Rejected]]) -> Iterator[Entry]:
    seen: dict[str, int] = {}
    for number, value in numbered:
        entry = value if isinstance(value, Rejected) else _item(number, value)
        if isinstance(entry, PremiseItem):
            if entry.id in seen:
                entry = Rejected(
                    number,
                    f"line {number}: duplicate id {entry.id!r} (first on line {seen[entry.id]})",
                    entry.id,
                )
            else:
                seen[entry.id] = number
        yield entry


def _item(number: int, value: PremiseLike) -> Entry:
    if isinstance(value, PremiseItem):
        return value if value.line is not None else PremiseItem(**{**value.__dict__, "line": number})
    if isinstance(value, str):
        value = {"premise": value}
    unknown = sorted(set(value) - {"premise", "id", *_NUMBERS})
    given_id = value.get("id")
    label = str(given_id) if given_id is not None else None
    if unknown:
        return Rejected(number, f"line {number}: unknown field(s) {', '.join(unknown)}", label)
    premise = value.get("premise")
    if not isinstance(premise, str):
        return Rejected(number, f"line {number}: 'premise' must be a string", label)
    for name in _NUMBERS:
        number_value = value.get(name)
        if number_value is not None and (not isinstance(number_value, int) or isinstance(number_value, bool)):
            return Rejected(number, f"line {number}: {name!r} must be a whole number", label)
    scenes, seed = value.get("scenes"), value.get("seed")
    chapters, per_chapter = value.get("chapters"), value.get("scenes_per_chapter")
    if scenes is not None and chapters is not None:
        return Rejected(
            number,
            f"line {number}: give 'scenes' (a short story) or 'chapters' (a long one), not both",
            label,
        )
    if per_chapter is not None and chapters is None:
        return Rejected(
            number, f"line {number}: 'scenes_per_chapter' needs 'chapters' on the same line", label
        )
    try:
        premise = check_inputs(premise, scenes, chapters, per_chapter)
    except InputError as exc:
        return Rejected(number, f"line {number}: {exc}", label)
    if given_id is None:
        story_id = derived_id(number, premise)
    elif isinstance(given_id, str | int) and not isinstance(given_id, bool) and _ID.match(str(given_id)):
        story_id = str(given_id)
    else:
        return Rejected(
            number,
            f"line {number}: id {given_id!r} must be 1-100 letters, digits, '.', '_' or '-' "
            "(it names the story's directory)",
            label,
        )
    return PremiseItem(story_id, premise, scenes, seed, number, chapters, per_chapter)
