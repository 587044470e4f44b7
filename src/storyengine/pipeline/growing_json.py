"""A whole object's JSON read as it is written (a standard model's stage 2, streamed): each item
of its top-level lists (a plot's beats, a dialogue's lines, an evaluation's scores) is told the
moment it is complete and passes its checks, as `streaming.part_passed` — the same events a small
model's parts give. Nothing here decides what is kept: the whole answer is checked as always, and
a retry voids what was shown (`streaming.parts_started`).

The reader follows the JSON's nesting by hand (strings, escapes, brackets) so that it never parses
more than the item just closed: a stream of n pieces costs O(text), not O(n * text).
"""

from __future__ import annotations

import json
import typing

from pydantic import BaseModel, ValidationError

from .. import streaming
from ..text.review import review
from ..text.rules import Context


def list_items(model: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """The top-level fields of `model` that are lists of objects, with their item model."""
    found: dict[str, type[BaseModel]] = {}
    for name, info in model.model_fields.items():
        args = typing.get_args(info.annotation)
        if typing.get_origin(info.annotation) is list and args and isinstance(args[0], type):
            if issubclass(args[0], BaseModel):
                found[name] = args[0]
    return found


class GrowingItems:
    """Fed the pieces of one JSON answer (`feed`); tells each complete list item that validates
    as its model and that the text rules find nothing in. `restart` begins a new answer."""

    def __init__(self, model: type[BaseModel], reviewing: Context) -> None:
        self.items = list_items(model)
        self.reviewing = reviewing
        self.restart()

    def restart(self) -> None:
        self.depth = 0
        self.in_string = self.escaped = False
        self.key = ""  # the last string read at depth 1 (the top-level key being written)
        self.text: list[str] = []  # the current string or item being read
        self.string: list[str] = []
        self.field: str | None = None  # the list of items being read
        self.told: dict[str, int] = {}

    def feed(self, piece: str) -> None:
        for char in piece:
            self._char(char)

    def _char(self, char: str) -> None:
        if self.field is not None and self.depth >= 3:
            self.text.append(char)
        if self.in_string:
            if self.escaped:
                self.escaped = False
            elif char == "\\":
                self.escaped = True
            elif char == '"':
                self.in_string = False
                if self.depth == 1:
                    self.key = "".join(self.string)
            elif self.depth == 1:
                self.string.append(char)
            return
        if char == '"':
            self.in_string, self.string = True, []
        elif char in "{[":
            self.depth += 1
            if self.depth == 2 and char == "[":
                self.field = self.key if self.key in self.items else None
            elif self.depth == 3 and self.field is not None:
                self.text = [char]
        elif char in "}]":
            self.depth -= 1
            if self.depth == 2 and self.field is not None:
                self._item("".join(self.text))
            elif self.depth == 1:
                self.field = None

    def _item(self, text: str) -> None:
        field = self.field
        assert field is not None
        index = self.told.get(field, 0)
        try:
            data = json.loads(text)
        except ValueError:
            return
        checked = review(self.items[field], data, self.reviewing, f"{field}[{index}]")
        if checked.findings:
            return  # something to repair or ask again: only the whole answer's check decides
        try:
            value = self.items[field].model_validate(checked.data)
        except ValidationError:
            return
        self.told[field] = index + 1
        streaming.part_passed(f"{field}[{index}]", field, value.model_dump(mode="json"))


def growing(model: type[BaseModel], reviewing: Context) -> streaming.Listener | None:
    """The listener of a whole object's streamed JSON where someone listens to parts (None
    otherwise: then nothing streams)."""
    outer = streaming.current()
    if outer is None or outer.on_part is None or not list_items(model):
        return None
    items = GrowingItems(model, reviewing)

    def attempt() -> None:
        items.restart()
        outer.on_parts_started()

    return streaming.Listener(on_delta=items.feed, on_attempt=attempt, on_part=outer.on_part)
