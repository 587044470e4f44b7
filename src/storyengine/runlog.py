"""The run log: every run and every model call, in one SQLite file.

WAL mode and a busy timeout let several processes write at once; a lock serializes the
writes of one process (its coroutines and threads). The schema grows by an ordered list
of migrations, and `PRAGMA user_version` counts how many have been applied.

Logging must never break a run: if the file is locked, corrupt or unwritable, the run log
warns once and goes on without logging.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from .routing.instrument import CallRecord

logger = logging.getLogger("storyengine")

Migration = Callable[[sqlite3.Connection], None]


def _m001_runs_and_calls(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            premise TEXT NOT NULL,
            status TEXT NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            config_source TEXT,
            meta TEXT NOT NULL DEFAULT '{}',
            error TEXT
        )"""
    )
    db.execute(
        """CREATE TABLE calls (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT,
            call_id TEXT,
            kind TEXT NOT NULL,
            component TEXT NOT NULL,
            stage TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            prompt_hash TEXT NOT NULL,
            params_snapshot TEXT NOT NULL,
            latency_s REAL NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            cache_hit INTEGER NOT NULL,
            finish_reason TEXT,
            outcome TEXT NOT NULL,
            error TEXT,
            created_at TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX calls_by_run ON calls (run_id, id)")
    db.execute("CREATE INDEX calls_by_component ON calls (component, id)")


MIGRATIONS: list[Migration] = [_m001_runs_and_calls]
"""Applied in order, each once; append, never edit or reorder."""

_CALL_COLUMNS = tuple(CallRecord.model_fields)
_FAILED = ("retry", "fallback", "error", "invalid")


class RunInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    premise: str
    status: str
    started_at: datetime
    finished_at: datetime | None = None
    config_source: str | None = None
    meta: dict[str, Any] = {}
    error: str | None = None


class RunLog:
    """A SQLite run log at `path`. Writes never raise; reads of an unusable log return nothing."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 5.0, warn: bool = True) -> None:
        self.path = Path(path)
        self.problem: str | None = None
        self._warn = warn
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            self._disable(exc)

    @property
    def available(self) -> bool:
        return self._db is not None

    # -- writing --

    def start_run(
        self,
        run_id: str,
        premise: str,
        meta: dict[str, Any] | None = None,
        *,
        config_source: str | None = None,
    ) -> None:
        with self._writing() as db:
            db.execute(
                "INSERT OR REPLACE INTO runs (id, premise, status, started_at, config_source, meta) "
                "VALUES (?, ?, 'running', ?, ?, ?)",
                (run_id, premise, _now(), config_source, json.dumps(meta or {}, default=str)),
            )

    def finish_run(self, run_id: str, status: str, error: str | None = None) -> None:
        with self._writing() as db:
            db.execute(
                "UPDATE runs SET status = ?, finished_at = ?, error = ? WHERE id = ?",
                (status, _now(), error, run_id),
            )

    def record_call(self, record: CallRecord) -> None:
        row = record.model_dump(mode="json")
        row["params_snapshot"] = json.dumps(row["params_snapshot"], sort_keys=True)
        row["cache_hit"] = int(row["cache_hit"])
        names = ", ".join(_CALL_COLUMNS)
        marks = ", ".join("?" for _ in _CALL_COLUMNS)
        with self._writing() as db:
            db.execute(f"INSERT INTO calls ({names}) VALUES ({marks})", [row[c] for c in _CALL_COLUMNS])

    # -- reading --

    def calls(
        self,
        run_id: str | None = None,
        component: str | None = None,
        failed: bool = False,
        limit: int = 100,
    ) -> list[CallRecord]:
        """The latest `limit` matching calls, oldest first."""
        where, args = [], []
        if run_id is not None:
            where.append("run_id = ?")
            args.append(run_id)
        if component is not None:
            where.append("component = ?")
            args.append(component)
        if failed:
            where.append(f"outcome IN ({', '.join('?' for _ in _FAILED)})")
            args.extend(_FAILED)
        sql = f"SELECT {', '.join(_CALL_COLUMNS)} FROM calls"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        rows = self._read(sql, [*args, limit])
        return [_call_record(row) for row in reversed(rows)]

    def runs(self, limit: int = 20) -> list[RunInfo]:
        """The latest `limit` runs, newest first."""
        rows = self._read(
            "SELECT id, premise, status, started_at, finished_at, config_source, meta, error "
            "FROM runs ORDER BY started_at DESC LIMIT ?",
            [limit],
        )
        return [
            RunInfo(
                id=r[0],
                premise=r[1],
                status=r[2],
                started_at=r[3],
                finished_at=r[4],
                config_source=r[5],
                meta=json.loads(r[6] or "{}"),
                error=r[7],
            )
            for r in rows
        ]

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- plumbing --

    def _migrate(self) -> None:
        assert self._db is not None
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise sqlite3.DatabaseError(
                f"schema version {version} is newer than this storyengine knows ({len(MIGRATIONS)}); "
                "upgrade storyengine"
            )
        if version == len(MIGRATIONS):
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while we waited for the lock.
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
                migration(self._db)
                self._db.execute(f"PRAGMA user_version = {number}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._db is None:
                yield _NULL_CONNECTION
                return
            try:
                yield self._db
            except sqlite3.Error as exc:
                self._disable(exc)

    def _read(self, sql: str, args: list[Any]) -> list[tuple[Any, ...]]:
        with self._lock:
            if self._db is None:
                return []
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                self._disable(exc)
                return []

    def _disable(self, exc: BaseException) -> None:
        """Warn once and stop logging: a broken run log must not break the run."""
        if self.problem is None:
            self.problem = f"{type(exc).__name__}: {exc}"
        if self._warn:
            self._warn = False
            logger.warning(
                "run log %s is unusable (%s); this run goes on without logging calls. "
                "Delete or move the file if it is corrupt.",
                self.path,
                self.problem,
            )
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None


class _NullConnection:
    """What a write gets once the log is disabled: it accepts and drops statements."""

    def execute(self, *args: Any) -> None:
        return None


_NULL_CONNECTION: Any = _NullConnection()


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _call_record(row: tuple[Any, ...]) -> CallRecord:
    data = dict(zip(_CALL_COLUMNS, row, strict=True))
    data["params_snapshot"] = json.loads(data["params_snapshot"] or "{}")
    data["cache_hit"] = bool(data["cache_hit"])
    return CallRecord.model_validate(data)
