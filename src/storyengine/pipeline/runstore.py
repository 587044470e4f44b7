"""The run store: every run and every version of its story, in one SQLite file beside the checkpoints.

A run is one premise with its options (scenes, seed, provider) and a status; a version is one
finished story of that run. `generate` records the run and, when it finishes, version 1; each
steering job and each restore appends a version; nothing is ever overwritten. Any process that
shares the data directory (the CLI, the web app, a script) sees the same runs.

The file is opened by store.py (WAL, busy timeout, the ordered migrations below); a lock
serializes the statements of one process. Every method blocks: async callers run them with
`asyncio.to_thread`.

Unlike the run log, the store does not swallow errors: a story that could not be kept is an
error the caller must see.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..schemas import Story
from ..store import Migration, open_db, transaction

FILENAME = "stories.sqlite3"


class NotFound(InputError):
    """No run, or no such version of a run, in the run store."""


def _m001_runs_and_versions(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            premise TEXT NOT NULL,
            scenes INTEGER,
            seed INTEGER,
            provider TEXT,
            status TEXT NOT NULL,
            error TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE versions (
            run_id TEXT NOT NULL REFERENCES runs (id),
            number INTEGER NOT NULL,
            label TEXT NOT NULL,
            parent INTEGER,
            seed INTEGER,
            title TEXT,
            beats INTEGER NOT NULL,
            scenes INTEGER NOT NULL,
            overall INTEGER,
            story TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (run_id, number)
        )"""
    )
    db.execute("CREATE INDEX runs_by_time ON runs (created_at)")


MIGRATIONS: list[Migration] = [_m001_runs_and_versions]
"""Applied in order, each once; append, never edit or reorder."""


@dataclass
class RunRecord:
    id: str
    premise: str
    scenes: int | None = None
    seed: int | None = None
    provider: str | None = None
    status: str = "running"  # running | done | failed
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    versions: list[Version] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "premise": self.premise,
            "scenes": self.scenes,
            "seed": self.seed,
            "provider": self.provider,
            "status": self.status,
            "error": self.error,
            "created_at": self.created_at,
            "versions": [v.summary() for v in self.versions],
        }


@dataclass
class Version:
    """One story of a run. `story` is None in listings (only the summary columns are read)."""

    run_id: str
    number: int
    label: str
    parent: int | None
    seed: int | None
    title: str | None
    beats: int
    scenes: int
    overall: int | None
    created_at: float
    story: Story | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "label": self.label,
            "parent": self.parent,
            "seed": self.seed,
            "created_at": self.created_at,
            "title": self.title,
            "beats": self.beats,
            "scenes": self.scenes,
            "overall": self.overall,
        }

    def the_story(self) -> Story:
        if self.story is None:
            raise ValueError("this version was listed without its story; use RunStore.version()")
        return self.story


_VERSION_COLUMNS = "run_id, number, label, parent, seed, title, beats, scenes, overall, created_at"


class RunStore:
    """Runs and versions in the SQLite file at `path` (opened on first use)."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None

    @classmethod
    def beside(cls, checkpoints: Path) -> RunStore:
        """The store of a data directory whose checkpoints are in `checkpoints`."""
        return cls(checkpoints.parent / FILENAME)

    # -- connection --
    @contextmanager
    def _session(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._connect()
            if not write:
                yield db
                return
            with transaction(db):
                yield db

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            db = open_db(self.path, MIGRATIONS, busy_timeout=self.busy_timeout)
            db.row_factory = sqlite3.Row
            self._db = db
        return self._db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- runs --
    def start_run(self, run: RunRecord) -> None:
        """Record `run` as running (again, when it exists: its premise and options are kept)."""
        now = time.time()
        with self._session(write=True) as db:
            db.execute(
                "INSERT INTO runs (id, premise, scenes, seed, provider, status, error, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, 'running', NULL, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET status = 'running', error = NULL, updated_at = ?",
                (run.id, run.premise, run.scenes, run.seed, run.provider, run.created_at, now, now),
            )

    def set_status(self, run_id: str, status: str, error: str | None = None) -> None:
        with self._session(write=True) as db:
            db.execute(
                "UPDATE runs SET status = ?, error = ?, updated_at = ? WHERE id = ?",
                (status, error, time.time(), run_id),
            )

    def run(self, run_id: str) -> RunRecord:
        """The run with the summaries of its versions; NotFound when there is none."""
        with self._session() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise NotFound(f"no run {run_id!r} in {self.path} (`storyengine serve` lists the runs)")
            versions = db.execute(
                f"SELECT {_VERSION_COLUMNS} FROM versions WHERE run_id = ? ORDER BY number", (run_id,)
            ).fetchall()
        return _run(row, [_version(v) for v in versions])

    def exists(self, run_id: str) -> bool:
        with self._session() as db:
            return db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is not None

    def runs(self, limit: int = 500) -> list[RunRecord]:
        """The latest `limit` runs, newest first, each with the summaries of its versions."""
        with self._session() as db:
            rows = db.execute("SELECT * FROM runs ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
            ids = [r["id"] for r in rows]
            marks = ", ".join("?" for _ in ids)
            versions = db.execute(
                f"SELECT {_VERSION_COLUMNS} FROM versions WHERE run_id IN ({marks}) ORDER BY number", ids
            ).fetchall()
        by_run: dict[str, list[Version]] = {i: [] for i in ids}
        for v in versions:
            by_run[v["run_id"]].append(_version(v))
        return [_run(r, by_run[r["id"]]) for r in rows]

    # -- versions --
    def add_version(
        self, run_id: str, story: Story, label: str, *, parent: int | None = None, seed: int | None = None
    ) -> Version:
        """Append `story` as the run's next version (numbers count from 1, never reused)."""
        now = time.time()
        with self._session(write=True) as db:
            if db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
                raise NotFound(f"no run {run_id!r} in {self.path}; a version needs its run")
            number = db.execute(
                "SELECT COALESCE(MAX(number), 0) + 1 FROM versions WHERE run_id = ?", (run_id,)
            ).fetchone()[0]
            version = Version(
                run_id,
                number,
                label,
                parent,
                seed,
                story.plot.title,
                len(story.plot.beats),
                len(story.scenes),
                story.evaluation.overall if story.evaluation else None,
                now,
                story,
            )
            db.execute(
                f"INSERT INTO versions ({_VERSION_COLUMNS}, story) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    number,
                    label,
                    parent,
                    seed,
                    version.title,
                    version.beats,
                    version.scenes,
                    version.overall,
                    now,
                    json.dumps(story.model_dump(mode="json"), ensure_ascii=False),
                ),
            )
            db.execute("UPDATE runs SET updated_at = ? WHERE id = ?", (now, run_id))
        return version

    def version(self, run_id: str, number: int | None = None) -> Version:
        """Version `number` of the run with its story, or the latest when None; NotFound otherwise."""
        run = self.run(run_id)
        if not run.versions:
            raise NotFound(f"run {run_id} has no story yet (status: {run.status}); wait for it to finish")
        if number is None:
            number = run.versions[-1].number
        with self._session() as db:
            row = db.execute(
                f"SELECT {_VERSION_COLUMNS}, story FROM versions WHERE run_id = ? AND number = ?",
                (run_id, number),
            ).fetchone()
        if row is None:
            raise NotFound(
                f"run {run_id} has no version {number}; it has versions 1 to {run.versions[-1].number}"
            )
        found = _version(row)
        found.story = Story.model_validate_json(row["story"])
        return found

    def versions(self, run_id: str) -> list[Version]:
        return self.run(run_id).versions

    def restore(self, run_id: str, number: int) -> Version:
        """Version `number` again as the run's latest, as a new version (nothing is overwritten)."""
        with self._lock:  # one process: the copy is the next version of what was read
            old = self.version(run_id, number)
            label = f"restored version {number}"
            return self.add_version(run_id, old.the_story(), label, parent=number, seed=old.seed)


def _run(row: sqlite3.Row, versions: list[Version]) -> RunRecord:
    return RunRecord(
        id=row["id"],
        premise=row["premise"],
        scenes=row["scenes"],
        seed=row["seed"],
        provider=row["provider"],
        status=row["status"],
        error=row["error"],
        created_at=row["created_at"],
        versions=versions,
    )


def _version(row: sqlite3.Row) -> Version:
    return Version(
        run_id=row["run_id"],
        number=row["number"],
        label=row["label"],
        parent=row["parent"],
        seed=row["seed"],
        title=row["title"],
        beats=row["beats"],
        scenes=row["scenes"],
        overall=row["overall"],
        created_at=row["created_at"],
    )
