"""Text as it is written: the seam between a provider that streams and whoever shows it.

A stage that wants its text live (a draft: stage 1) sets a listener with `listening(...)`; a
provider that produces text piece by piece calls `attempt_started()` when an attempt begins and
`delta(text)` for each piece. A stage that structures an object in parts (stage 2 for a small
model) may hear each part as it passes its checks (`parts_started()`, then `part_passed(...)`);
a whole object's JSON streams only to pipeline/growing_json.py, which tells its list items so.
Nothing else changes: the provider still returns the whole `Completion`, which alone is checked,
cached and stored, so what is kept for a seed is the same with or without a listener. A retry or
a fallback starts a new attempt, and a viewer drops what the abandoned one showed. Listeners are
per task (a ContextVar): scenes written concurrently each reach their own. A listener that raises
is a display bug, never a generation failure: it is dropped.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Listener:
    """What a stage hears: `on_delta(text)` per piece of text (None: it wants no text, so nothing
    streams), `on_attempt()` when a new attempt begins; `on_parts_started()` when an object in
    parts is begun (again on a retry) and `on_part(what, item_of, value)` per part that passes."""

    on_delta: Callable[[str], None] | None = None
    on_attempt: Callable[[], None] = _nothing
    on_parts_started: Callable[[], None] = _nothing
    on_part: Callable[[str, str | None, dict[str, Any]], None] | None = None


_listener: ContextVar[Listener | None] = ContextVar("storyengine_listener", default=None)


@contextlib.contextmanager
def listening(listener: Listener | None) -> Iterator[None]:
    """Send the deltas of the calls made inside this block (in this task) to `listener`."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


def current() -> Listener | None:
    """The listener of this task (None: nobody listens)."""
    return _listener.get()


def wanted() -> bool:
    """Whether anyone listens to text here: a provider may stream only then (a whole answer otherwise)."""
    listener = _listener.get()
    return listener is not None and listener.on_delta is not None


def attempt_started() -> None:
    """A new attempt at this stage's text begins: what an earlier attempt showed is void."""
    _call(lambda listener: listener.on_attempt())


def delta(text: str) -> None:
    """One piece of the text being written (no-op without a listener or for an empty piece)."""
    if text:
        _call(lambda listener: listener.on_delta(text) if listener.on_delta else None)


def parts_started() -> None:
    """An object in parts is begun: the parts an earlier try showed are void."""
    _call(lambda listener: listener.on_parts_started())


def part_passed(what: str, item_of: str | None, value: dict[str, Any]) -> None:
    """One part of an object passed its checks (or was made by code from the notes)."""
    _call(lambda listener: listener.on_part(what, item_of, value) if listener.on_part else None)


def _call(action: Callable[[Listener], None]) -> None:
    listener = _listener.get()
    if listener is None:
        return
    try:
        action(listener)
    except Exception:  # a display that fails must not fail the story
        log.exception("a stream listener failed; it is dropped for this stage")
        _listener.set(None)
