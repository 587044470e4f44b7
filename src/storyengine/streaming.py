"""Text as it is written: the seam between a provider that streams and whoever shows it.

A stage that wants its text live (a draft: stage 1) sets a listener with `listening(...)`; a
provider that produces text piece by piece calls `attempt_started()` when an attempt begins and
`delta(text)` for each piece. Nothing else changes: the provider still returns the whole
`Completion`, which alone is checked, cached and stored, so what is kept for a seed is the same with
or without a listener. A retry or a fallback starts a new attempt, and a viewer drops what the
abandoned one showed. Listeners are per task (a ContextVar): scenes written concurrently each reach
their own. A listener that raises is a display bug, never a generation failure: it is dropped.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Listener:
    """What a stage hears: `on_delta(text)` per piece, `on_attempt()` when a new attempt begins."""

    on_delta: Callable[[str], None]
    on_attempt: Callable[[], None] = lambda: None


_listener: ContextVar[Listener | None] = ContextVar("storyengine_listener", default=None)


@contextlib.contextmanager
def listening(listener: Listener | None) -> Iterator[None]:
    """Send the deltas of the calls made inside this block (in this task) to `listener`."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


def wanted() -> bool:
    """Whether anyone listens here: a provider may stream only then (a whole answer otherwise)."""
    return _listener.get() is not None


def attempt_started() -> None:
    """A new attempt at this stage's text begins: what an earlier attempt showed is void."""
    _call(lambda listener: listener.on_attempt())


def delta(text: str) -> None:
    """One piece of the text being written (no-op without a listener or for an empty piece)."""
    if text:
        _call(lambda listener: listener.on_delta(text))


def _call(action: Callable[[Listener], None]) -> None:
    listener = _listener.get()
    if listener is None:
        return
    try:
        action(listener)
    except Exception:  # a display that fails must not fail the story
        log.exception("a stream listener failed; it is dropped for this stage")
        _listener.set(None)
