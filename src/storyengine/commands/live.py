"""The draft being written, in a terminal: `storyengine generate` on a TTY prints each stage-1 draft
as it arrives, under a heading (`── scene 2/3 (draft) ──`), from the run's `draft_delta` /
`draft_restarted` events (streaming.py).

One draft is shown at a time, never two interleaved: the first that starts; the others (scenes
written concurrently) are kept, and each is printed, whole so far and then live, when its turn
comes: once the draft shown is whole (its `step_done` of stage `freeform`) and another waits, or
once its checked part is done (the `step_done` of the structured step, the name without `.draft`).
A new attempt at the draft shown prints `(again)` on a new line and goes on; a new attempt at a
kept draft just drops its text. While a draft is shown the progress line is paused and the lines
that report finished steps are held, printed when the draft's block ends; after the last block
the progress line resumes. Only used on a TTY without --quiet (output.Progress, "rich" mode).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

DRAFT_EVENTS = ("draft_delta", "draft_restarted")


@dataclass
class _Draft:
    where: dict[str, Any]  # the events' step, index, total
    text: str = ""
    whole: bool = False  # its freeform step_done arrived: the text is complete
    checked: bool = False  # its structured step_done arrived


@dataclass
class LiveDrafts:
    """Prints drafts to `out` as they are written (see the module doc). `pause` / `resume` stop and
    restart the progress line around a draft's block."""

    out: IO[str]
    pause: Callable[[], None] = lambda: None
    resume: Callable[[], None] = lambda: None
    drafts: dict[str, _Draft] = field(default_factory=dict)  # shown or waiting, in the order they began
    current: str | None = None  # the draft shown now
    shown: int = 0  # how much of its text is printed
    held: list[Callable[[], None]] = field(default_factory=list)  # progress lines held during a block

    @property
    def showing(self) -> bool:
        return self.current is not None

    def __call__(self, event: dict[str, Any]) -> bool:
        """Take a run event; True when it was a draft's piece (nothing else is to be done with it)."""
        kind = event["event"]
        if kind in DRAFT_EVENTS:
            self._piece(event)
            return True
        if kind == "step_done":
            name = str(event.get("name", ""))
            if event.get("stage") == "freeform" and name in self.drafts:
                draft = self.drafts[name]
                draft.whole = True
                if name == self.current:
                    self._write_new()
                    if len(self.drafts) > 1:
                        self._next()  # another waits: its turn
            elif f"{name}.draft" in self.drafts:
                self.drafts[f"{name}.draft"].checked = True
                if f"{name}.draft" == self.current:
                    self._next()
        return False

    def note(self, print_line: Callable[[], None]) -> None:
        """A progress line: printed now, or after the draft shown (never inside its text)."""
        if self.showing:
            self.held.append(print_line)
        else:
            print_line()

    def close(self) -> None:
        """The run ended (or stopped): end the block shown, print what was held; no more drafts."""
        if self.current is not None:
            self._write("\n")
            self.current = None
            self._flush_held()
            self.resume()
        self.drafts.clear()

    # -- the blocks --
    def _piece(self, event: dict[str, Any]) -> None:
        name = str(event["name"])
        draft = self.drafts.get(name)
        if draft is None:
            where: dict[str, Any] = {k: event[k] for k in ("step", "index", "total") if k in event}
            draft = self.drafts[name] = _Draft(where)
        if event["event"] == "draft_restarted":
            if name == self.current and self.shown:
                self._write("\n(again)\n")
            draft.text, draft.whole = "", False
            if name == self.current:
                self.shown = 0
        else:
            draft.text += str(event.get("text", ""))
        if self.current is None:
            self.pause()
            self._show(name)
        elif name == self.current:
            self._write_new()
        elif self.drafts[self.current].whole:
            self._next()  # the draft shown is whole: this one need not wait for its checked part

    def _show(self, name: str) -> None:
        """Start the block of draft `name`: its heading, its text so far."""
        self.current, self.shown = name, 0
        where = self.drafts[name].where
        count = f" {where['index']}/{where['total']}" if "index" in where and "total" in where else ""
        self._write(f"── {where.get('step', name.split('.')[0])}{count} (draft) ──\n")
        self._write_new()

    def _next(self) -> None:
        """End the block shown; show the next draft that waits, or resume the progress line."""
        while self.current is not None:
            self._write("\n")
            del self.drafts[self.current]
            self.current = None
            self._flush_held()
            if not self.drafts:
                self.resume()
                return
            name = next(iter(self.drafts))
            self._show(name)
            draft = self.drafts[name]
            if not (draft.checked or (draft.whole and len(self.drafts) > 1)):
                return  # it goes on live

    def _write_new(self) -> None:
        assert self.current is not None
        text = self.drafts[self.current].text
        if len(text) > self.shown:
            self._write(text[self.shown :])
            self.shown = len(text)

    def _flush_held(self) -> None:
        held, self.held = self.held, []
        for print_line in held:
            print_line()

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()
