"""The run store's records and the tables that hold them: a `RunRecord` (one premise with its
options, its status and the process writing it), a `Version` (one finished story of a run), the
ordered migrations of the SQLite file, and how a row of it becomes a Version.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from ..schemas import Story
from ..store import Migration

INTEGER_MAX = 2**63 - 1
"""SQLite's largest INTEGER: no version number can be above it."""


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


def _m002_run_owner(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE runs ADD COLUMN owner_pid INTEGER")
    db.execute("ALTER TABLE runs ADD COLUMN owner_host TEXT")
    db.execute("ALTER TABLE runs ADD COLUMN heartbeat REAL")


MIGRATIONS: list[Migration] = [_m001_runs_and_versions, _m002_run_owner]
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
    owner_pid: int | None = None  # the process writing it (while running)
    owner_host: str | None = None
    heartbeat: float | None = None  # when that process last said it was alive
    orphaned: bool = False  # running, but its process is dead: it can be resumed

    def summary(self) -> dict[str, Any]:
        owner = None
        if self.status == "running":
            owner = {"pid": self.owner_pid, "host": self.owner_host, "heartbeat": self.heartbeat}
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
            "owner": owner,
            "orphaned": self.orphaned,
        }

    def owner_text(self) -> str:
        """The process writing the run, in words (for messages)."""
        if self.owner_pid is None:
            return "a process this store did not record"
        beat = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.heartbeat or 0))
        return f"process {self.owner_pid} on {self.owner_host}, last heard from at {beat}"


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


VERSION_COLUMNS = "run_id, number, label, parent, seed, title, beats, scenes, overall, created_at"


def int_or_none(value: Any) -> int | None:
    """`value` when it is an int (not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def version_of(row: sqlite3.Row) -> Version:
    """The Version of a row of VERSION_COLUMNS, without its story."""
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
