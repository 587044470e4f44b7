"""Runs, their event logs and their versions, kept in memory by one server process.

Nothing here survives a restart of the server: a run lives as long as the process that
started it (the engine's own checkpoints still land on disk under the run's id, so a stopped
run can be continued with `storyengine generate --resume ID`).

A run's events form one append-only log. Every event gets a sequence number (`seq`), so a
subscriber that joins late replays the log from the start (or from after a given `seq`) and
then follows it live. A run does at most one job at a time (the first generation, or one
steering job); the stream of a run ends when the run is idle.

Versions are never overwritten: generating, steering and restoring each append a version.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ..schemas import Story

KEEPALIVE_SECONDS = 15.0


class UnknownRun(LookupError):
    """No run (or version) with that id in this server process."""


@dataclass
class Version:
    number: int
    story: Story
    label: str
    parent: int | None
    created_at: float = field(default_factory=time.time)

    def summary(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "label": self.label,
            "parent": self.parent,
            "created_at": self.created_at,
            "title": self.story.plot.title,
            "beats": len(self.story.plot.beats),
            "scenes": len(self.story.scenes),
            "overall": self.story.evaluation.overall,
        }


class Run:
    """One premise: its settings, its event log, its versions and whether a job is running."""

    def __init__(
        self, run_id: str, premise: str, scenes: int | None, seed: int | None, provider: str | None
    ) -> None:
        self.id = run_id
        self.premise = premise
        self.scenes = scenes
        self.seed = seed
        self.provider = provider
        self.created_at = time.time()
        self.status = "running"  # running | done | failed: the first generation
        self.error: str | None = None
        self.job: str | None = "generate"  # what the run is doing now; None when idle
        self.job_after = -1  # the seq just before the current job's first event
        self.task: asyncio.Task[Any] | None = None
        self.events: list[dict[str, Any]] = []
        self.versions: list[Version] = []
        self._wake = asyncio.Event()

    @property
    def busy(self) -> bool:
        return self.job is not None

    # -- events --
    def publish(self, event: dict[str, Any]) -> None:
        """Append an event (stamped with this run's id and its seq) and wake every subscriber."""
        self.events.append({**event, "run_id": self.id, "seq": len(self.events)})
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    def start_job(self, label: str) -> int:
        """Mark the run busy with `label`; returns the seq to follow the job's events from."""
        self.job = label
        self.job_after = len(self.events) - 1
        return self.job_after

    def finish_job(self, event: dict[str, Any]) -> None:
        """Mark the run idle, then publish the job's last event (so followers see both)."""
        self.job = None
        self.publish(event)

    async def follow(self, after: int = -1) -> AsyncIterator[dict[str, Any] | None]:
        """Events with seq > `after`, then live ones until the run is idle.

        Yields None after KEEPALIVE_SECONDS without an event (the stream sends a comment).
        """
        seen = after + 1
        while True:
            wake = self._wake
            while seen < len(self.events):
                yield self.events[seen]
                seen += 1
            if not self.busy:
                return
            try:
                await asyncio.wait_for(wake.wait(), KEEPALIVE_SECONDS)
            except TimeoutError:
                yield None

    # -- versions --
    def add_version(self, story: Story, label: str, parent: int | None) -> Version:
        version = Version(len(self.versions) + 1, story, label, parent)
        self.versions.append(version)
        self.publish({"event": "version_added", "version": version.summary()})
        return version

    def version(self, number: int | None = None) -> Version:
        """Version `number`, or the latest when None."""
        if not self.versions:
            raise UnknownRun(f"run {self.id} has no story yet (status: {self.status}); wait for it to finish")
        if number is None:
            return self.versions[-1]
        if not 1 <= number <= len(self.versions):
            raise UnknownRun(
                f"run {self.id} has no version {number}; it has versions 1 to {len(self.versions)}"
            )
        return self.versions[number - 1]

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "premise": self.premise,
            "scenes": self.scenes,
            "seed": self.seed,
            "provider": self.provider,
            "status": self.status,
            "error": self.error,
            "job": self.job,
            "busy": self.busy,
            "job_after": self.job_after,
            "created_at": self.created_at,
            "events": len(self.events),
            "versions": [v.summary() for v in self.versions],
        }


class RunStore:
    """Every run of this server process, by id."""

    def __init__(self) -> None:
        self._runs: dict[str, Run] = {}

    def add(self, run: Run) -> Run:
        self._runs[run.id] = run
        return run

    def get(self, run_id: str) -> Run:
        try:
            return self._runs[run_id]
        except KeyError:
            raise UnknownRun(
                f"no run {run_id!r} in this server; runs live in memory and are lost when it restarts"
            ) from None

    def all(self) -> list[Run]:
        return sorted(self._runs.values(), key=lambda r: r.created_at, reverse=True)

    async def cancel_all(self) -> None:
        tasks = [r.task for r in self._runs.values() if r.task is not None and not r.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
