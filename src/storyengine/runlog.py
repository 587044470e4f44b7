"""The run log: every run and every model call, in one SQLite file.

WAL mode and a busy timeout let several processes write at once (see store.py, which also
applies the ordered list of migrations). Call rows are written by one writer thread from a
queue, so recording never blocks the event loop; reads wait for the queue to drain first.

Logging must never break a run: if the file is locked, corrupt or unwritable, the run log
warns once and goes on without logging.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from .store import Migration, open_db
from .types import CallRecord

logger = logging.getLogger("storyengine")


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


def _m002_call_step(db: sqlite3.Connection) -> None:
    """Each call's step ("scene.4"): what a long story's scenes cost, scene by scene."""
    db.execute("ALTER TABLE calls ADD COLUMN step TEXT")


def _m003_prompt_tokens_reused(db: sqlite3.Connection) -> None:
    """Each call's prompt tokens read from a prefix cache: where a story's reading is spent."""
    db.execute("ALTER TABLE calls ADD COLUMN prompt_tokens_reused INTEGER NOT NULL DEFAULT 0")


MIGRATIONS: list[Migration] = [_m001_runs_and_calls, _m002_call_step, _m003_prompt_tokens_reused]
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
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        try:
            self._db = open_db(self.path, MIGRATIONS, busy_timeout=busy_timeout)
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
        values = (run_id, premise, _now(), config_source, json.dumps(meta or {}, default=str))

        def write() -> None:
            with self._writing() as db:
                db.execute(
                    "INSERT OR REPLACE INTO runs (id, premise, status, started_at, config_source, meta) "
                    "VALUES (?, ?, 'running', ?, ?, ?)",
                    values,
                )

        self._submit(write)

    def finish_run(self, run_id: str, status: str, error: str | None = None) -> None:
        values = (status, _now(), error, run_id)

        def write() -> None:
            with self._writing() as db:
                db.execute("UPDATE runs SET status = ?, finished_at = ?, error = ? WHERE id = ?", values)

        self._submit(write)

    def record(self, record: CallRecord) -> None:
        """A sink (routing/instrument.py): queue the row for the writer thread; never blocks."""
        row = record.model_dump(mode="json")
        row["params_snapshot"] = json.dumps(row["params_snapshot"], sort_keys=True)
        row["cache_hit"] = int(row["cache_hit"])
        names = ", ".join(_CALL_COLUMNS)
        marks = ", ".join("?" for _ in _CALL_COLUMNS)
        values = [row[c] for c in _CALL_COLUMNS]

        def write() -> None:
            with self._writing() as db:
                db.execute(f"INSERT INTO calls ({names}) VALUES ({marks})", values)

        self._submit(write)

    record_call = record

    def flush(self) -> None:
        """Wait until every queued row is written."""
        if self._writer is not None:
            self._queue.join()

    def _submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_loop, name="storyengine-runlog", daemon=True
                )
                self._writer.start()
        self._queue.put(job)

    def _write_loop(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                job()
            except Exception as exc:  # logging must never break a run
                logger.debug("run log write failed: %s", exc)
            finally:
                self._queue.task_done()

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
        self.flush()
        rows = self._read(sql, [*args, limit])
        return [_call_record(row) for row in reversed(rows)]

    def runs(self, limit: int = 20) -> list[RunInfo]:
        """The latest `limit` runs, newest first."""
        self.flush()
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
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join()
            self._writer = None
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- plumbing --

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
