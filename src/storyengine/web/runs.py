"""Runs as the web app sees them: kept in the run store, followed live while this server works on them.

Runs and versions live in the run store (SQLite in the data directory), so the page lists
every run (also those the CLI made) and opens any version after a restart. Only a run's live
event log is kept in memory: every event gets a sequence number (`seq`), so a subscriber that
joins late replays the log from the start (or from after a given `seq`) and then follows it.
A run does at most one job at a time in this server (the first generation, a resume or one
steering job): a request claims the run (`LiveRun.claimed`) before its first `await`, so of two
simultaneous requests one gets the run and the other a 409. The stream of a run ends when the
run is idle.

A failed run this server did not see (made before a restart, or by the CLI), or a run whose
process died while writing it (`RunRecord.orphaned`), is given a log rebuilt from its checkpoint,
so the page still shows what it finished, and offers to resume it.

The text of a draft being written (`draft_delta` / `draft_restarted` events, one per piece) is not
logged: a run keeps only the current text of each draft in progress (`LiveRun.drafts`), dropped
when the draft is finished (its `step_done` carries the whole text). A follower that asks for
drafts gets, after the logged events it has not seen, what each draft grew by since it last
looked (pieces that arrived together come as one `draft_delta`; a draft begun again, or one it
never saw, as `draft_restarted` then its whole text so far). These carry no `seq`: they are
never replayed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import InputError
from ..pipeline.checkpoint import CheckpointStore, RunState
from ..pipeline.rounds import total_scenes
from ..pipeline.runstore import RunRecord, RunStore, Version
from .errors import Conflict

KEEPALIVE_SECONDS = 15.0


class LiveRun:
    """The in-memory side of one run: its event log and whether a job is running."""

    def __init__(self, run_id: str) -> None:
        self.id = run_id
        self.job: str | None = None  # what the run is doing now; None when idle
        self.job_after = -1  # the seq just before the current job's first event
        self.task: asyncio.Task[Any] | None = None
        self.events: list[dict[str, Any]] = []
        self.drafts: dict[str, Draft] = {}  # the drafts being written now, by name
        self.stopping = False  # a person asked to stop the current job
        self._wake = asyncio.Event()
        self._attempts = 0  # numbers every draft attempt of this run (see Draft.attempt)

    @property
    def busy(self) -> bool:
        return self.job is not None

    def publish(self, event: dict[str, Any]) -> None:
        """Append an event (stamped with this run's id and its seq) and wake every subscriber; a
        draft's piece only updates the draft's current text (not logged, see the module doc)."""
        kind = event["event"]
        if kind in DRAFT_EVENTS:
            self._draft(event)
        else:
            if kind == "step_done" and event.get("stage") == "freeform":
                self.drafts.pop(str(event.get("name")), None)  # the whole draft is in the event
            self.events.append({**event, "run_id": self.id, "seq": len(self.events)})
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    def _draft(self, event: dict[str, Any]) -> None:
        name = str(event["name"])
        draft = self.drafts.get(name)
        if draft is None or event["event"] == "draft_restarted":
            self._attempts += 1
            where = {k: event[k] for k in DRAFT_FIELDS if k in event}
            draft = self.drafts[name] = Draft(self._attempts, {**where, "run_id": self.id})
        if event["event"] == "draft_delta":
            draft.text += str(event["text"])

    def start_job(self, label: str) -> int:
        """Mark the run busy with `label`; returns the seq to follow the job's events from.

        Conflict (a 409) when it is busy already. Check and mark happen with no `await` between
        them, so on one event loop they are one step: two requests cannot both start a job."""
        if self.busy:
            raise Conflict(f"run {self.id} is busy ({self.job}); wait for it to finish, then try again")
        self.job = label
        self.job_after = len(self.events) - 1
        return self.job_after

    @contextmanager
    def claimed(self, label: str) -> Iterator[int]:
        """Claim the run for a job (see `start_job`) while a request checks what it asks; when the
        check fails (the block raises before the job's task is set), the run is idle again."""
        before = self.job_after
        after = self.start_job(label)
        try:
            yield after  # the block ends by starting the job's task: nothing can fail after it
        except BaseException:
            self.job, self.job_after = None, before
            raise

    def finish_job(self, event: dict[str, Any]) -> None:
        """Mark the run idle, then publish the job's last event (so followers see both)."""
        self.job = None
        self.stopping = False
        self.drafts.clear()  # a draft left unfinished (a failure, a stop) is void
        self.publish(event)

    async def follow(self, after: int = -1, drafts: bool = False) -> AsyncIterator[dict[str, Any] | None]:
        """Events with seq > `after`, then live ones until the run is idle; with `drafts`, also the
        text of the drafts being written (see the module doc).

        Yields None after KEEPALIVE_SECONDS without an event (the stream sends a comment).
        """
        seen = after + 1
        shown: dict[str, tuple[int, int]] = {}  # draft name -> (its attempt, how much of it was sent)
        while True:
            wake = self._wake
            while seen < len(self.events):
                yield self.events[seen]
                seen += 1
            if not self.busy:
                return
            for event in self._draft_news(shown) if drafts else ():
                yield event
            try:
                await asyncio.wait_for(wake.wait(), KEEPALIVE_SECONDS)
            except TimeoutError:
                yield None

    def _draft_news(self, shown: dict[str, tuple[int, int]]) -> list[dict[str, Any]]:
        """What the drafts being written grew by since a follower last looked (`shown`, updated)."""
        news: list[dict[str, Any]] = []
        for name, draft in list(self.drafts.items()):
            attempt, sent = shown.get(name, (0, 0))
            if attempt != draft.attempt:
                news.append({"event": "draft_restarted", **draft.where})
                sent = 0
            if len(draft.text) > sent:
                news.append({"event": "draft_delta", **draft.where, "text": draft.text[sent:]})
            shown[name] = (draft.attempt, len(draft.text))
        for name in set(shown) - set(self.drafts):
            del shown[name]
        return news


DRAFT_EVENTS = ("draft_delta", "draft_restarted")
DRAFT_FIELDS = ("step", "name", "index", "total", "chapter")


class Draft:
    """A draft being written: its attempt (numbered across the run, so a new one is told from the
    last), where it belongs (its events' step, name, index, total, chapter) and its text so far."""

    def __init__(self, attempt: int, where: dict[str, Any]) -> None:
        self.attempt = attempt
        self.where = where
        self.text = ""


class Runs:
    """The run store of the data directory, and the live side of the runs this server works on."""

    def __init__(self, store: RunStore, checkpoints: CheckpointStore) -> None:
        self.store = store
        self.checkpoints = checkpoints
        self._live: dict[str, LiveRun] = {}

    async def record(self, run_id: str) -> RunRecord:
        """The stored run with its version summaries; NotFound (a 404) when there is none."""
        return await asyncio.to_thread(self.store.run, run_id)

    async def version(self, run_id: str, number: int | None = None) -> Version:
        return await asyncio.to_thread(self.store.version, run_id, number)

    def new(self, run_id: str) -> LiveRun:
        self._live[run_id] = LiveRun(run_id)
        return self._live[run_id]

    async def live(self, record: RunRecord) -> LiveRun:
        """The live side of a stored run (an idle one, with a rebuilt log when it failed elsewhere)."""
        run = self._live.get(record.id)
        if run is None:
            run = LiveRun(record.id)
            if (record.status == "failed" or record.orphaned) and not record.versions:
                for event in await asyncio.to_thread(self._replay, record):
                    run.publish(event)
            run = self._live.setdefault(record.id, run)
        return run

    def _replay(self, record: RunRecord) -> list[dict[str, Any]]:
        """What a failed run finished, as the events that reported it, from its checkpoint."""
        try:
            state = self.checkpoints.load(record.id)
        except InputError:
            state = None
        events: list[dict[str, Any]] = [{"event": "run_started", "premise": record.premise}]
        for name, value in (state.steps if state else {}).items():
            if name.endswith(".draft"):
                continue
            step = name.split(".")[0]
            stage = "structuring"
            events.append({"event": "step_done", "step": step, "stage": stage, "name": name, "value": value})
        error = record.error or "the run stopped"
        if record.orphaned:
            error = f"the process writing this run stopped ({record.owner_text()}); resume it to continue"
        events.append({"event": "run_failed", "error": error})
        return events

    def summary(self, record: RunRecord) -> dict[str, Any]:
        run = self._live.get(record.id)
        return {
            **record.summary(),
            "job": run.job if run else None,
            "busy": run.busy if run else False,
            "job_after": run.job_after if run else -1,
            "events": len(run.events) if run else 0,
        }

    async def all(self) -> list[dict[str, Any]]:
        """Every stored run, newest first."""
        return [self.summary(r) for r in await asyncio.to_thread(self.store.runs)]

    async def cancel_all(self) -> None:
        tasks = [r.task for r in self._live.values() if r.task is not None and not r.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


KEPT_ORDER = ("plot", "bible", "chapter", "scene", "dialogue", "evaluation", "enhancement")


def kept_parts(state: RunState) -> dict[str, Any]:
    """What a stopped run's checkpoint keeps: its finished parts (a resume does not make them
    again) and, in words, e.g. "plot, bible and 1 of 3 scenes kept"."""
    done = [name for name in state.steps if not name.endswith(".draft")]
    drafted = [
        name.removesuffix(".draft")
        for name in state.steps
        if name.endswith(".draft") and name.removesuffix(".draft") not in state.steps
    ]
    plot = state.steps.get("plot")
    scenes = total_scenes(state.header)
    if scenes is None and isinstance(plot, dict) and isinstance(plot.get("beats"), list):
        scenes = len(plot["beats"])  # one scene per beat
    chapters = state.header.chapters
    words = []
    for kind in KEPT_ORDER:
        count = sum(1 for name in done if name.split(".")[0] == kind)
        if not count:
            continue
        of = {"scene": scenes, "dialogue": scenes, "chapter": chapters}.get(kind)
        if of is None:
            words.append(kind if count == 1 else f"{count} {kind}s")
        else:
            words.append(f"{count} of {of} {kind}{'' if of == 1 else 's'}")
    said = (", ".join(words[:-1]) + " and " + words[-1]) if len(words) > 1 else "".join(words)
    text = f"{said} kept" if words else "nothing finished yet"
    if drafted:
        text += f" (and the draft{'s' if len(drafted) > 1 else ''} of {', '.join(drafted)})"
    return {"steps": done, "drafts": drafted, "text": text}
