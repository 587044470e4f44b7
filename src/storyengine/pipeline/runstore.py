"""The run store: every run and every version of its story, in one SQLite file beside the checkpoints.

A run is one premise with its options (scenes, seed, provider) and a status; a version is one
finished story of that run. `generate` records the run and, when it finishes, version 1; each
steering job and each restore appends a version; nothing is ever overwritten. Any process that
shares the data directory (the CLI, the web app, a script) sees the same runs.

The file is opened by store.py (WAL, busy timeout, the ordered migrations below); a lock
serializes the statements of one process. Every method blocks: async callers run them with
`asyncio.to_thread`.

Unlike the run log, the store does not swallow errors: a story that could not be kept is an
error the caller must see. A damaged file (truncated, overwritten) is a `DamagedStore` that names
it and says what to do: move it aside. A new file (none, or an empty one) is filled at once with
the runs whose checkpoints are beside it, so a lost store loses no run from the list (the
versions it held are gone; the checkpoints keep every step).

A running run has an owner: the process writing it (pid and host) and a heartbeat, a time that
process renews every `HEARTBEAT_SECONDS` while the run is running. When the process dies (`kill
-9`, a power cut) the run stays `running`, but its owner is dead: on the same host its pid is gone
(or is this process, which does not write it), or its heartbeat is older than `stale_after`. Such
a run is `orphaned`; `take_over` claims it, atomically, for a process that will resume it.

Where it lives: records.py (the RunRecord and Version records, the file's tables and migrations),
heartbeat.py (the heartbeat of the runs this process writes, and whether a process is alive), and
here the `RunStore` that keeps them.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import InputError, StoryEngineError
from ..schemas import Story
from ..store import open_db, transaction
from .checkpoint import RUN_ID
from .heartbeat import HEARTBEAT as _HEARTBEAT
from .heartbeat import HEARTBEAT_SECONDS, HOST, STALE_SECONDS
from .heartbeat import pid_alive as _pid_alive
from .records import (
    INTEGER_MAX,
    MIGRATIONS,
    VERSION_COLUMNS,
    RunRecord,
    Version,
    int_or_none,
    version_of,
)

logger = logging.getLogger("storyengine")

FILENAME = "stories.sqlite3"


class NotFound(InputError):
    """No run, or no such version of a run, in the run store."""


class DamagedStore(StoryEngineError):
    """The run store's file is not a database, or a damaged one: it must be moved aside."""


class RunStore:
    """Runs and versions in the SQLite file at `path` (opened on first use).

    `checkpoints`: the directory of the runs' checkpoints, from which a new (or emptied) file
    is filled; `stale_after`: seconds without a heartbeat after which a running run's process
    counts as dead."""

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: float = 10.0,
        checkpoints: Path | None = None,
        stale_after: float = STALE_SECONDS,
    ) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.checkpoints = checkpoints if checkpoints is not None else self.path.parent / "checkpoints"
        self.stale_after = stale_after
        self._key = os.path.realpath(self.path)
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None

    @classmethod
    def beside(cls, checkpoints: Path) -> RunStore:
        """The store of a data directory whose checkpoints are in `checkpoints`."""
        return cls(checkpoints.parent / FILENAME, checkpoints=checkpoints)

    # -- connection --
    @contextmanager
    def _session(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                db = self._connect()
                if not write:
                    yield db
                    return
                with transaction(db):
                    yield db
            except sqlite3.DatabaseError as exc:
                if not _damaged(exc):
                    raise
                self.close()  # the next call opens the file again: moved aside, it is made anew
                raise self._damaged_error(exc) from None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                new = self.path.stat().st_size == 0
            except FileNotFoundError:
                new = True
            db = open_db(self.path, MIGRATIONS, busy_timeout=self.busy_timeout)
            db.row_factory = sqlite3.Row
            self._db = db
            if new:
                self._rebuild(db)
        return self._db

    def _damaged_error(self, exc: sqlite3.DatabaseError) -> DamagedStore:
        aside = self.path.parent / "damaged-store"
        return DamagedStore(
            f"the run store {self.path} is damaged ({exc}); move it and its -wal and -shm files aside "
            f"(mkdir {aside} && mv {self.path}* {aside}/) and try again: a new one is made, listing "
            f"every run whose checkpoint is in {self.checkpoints} (the stories of their versions stay "
            "in the moved file)"
        )

    def _rebuild(self, db: sqlite3.Connection) -> None:
        """Fill a new store with the runs of the checkpoints beside it (their options and status;
        a running one with its file's time as heartbeat, so a dead one is soon seen as such)."""
        rows = []
        for path in sorted(self.checkpoints.glob("*.json")) if self.checkpoints.is_dir() else []:
            try:
                header = json.loads(path.read_text(encoding="utf-8"))["header"]
                changed = path.stat().st_mtime
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not a checkpoint this store can read: it stays on disk
            if not isinstance(header, dict) or header.get("run_id") != path.stem or header.get("story_run"):
                continue  # a steering job's checkpoint, or one whose name and header disagree
            status = (
                header.get("status") if header.get("status") in ("running", "done", "failed") else "failed"
            )
            error = header.get("error")
            if status == "done":
                error = (
                    f"this run's list entry was rebuilt from its checkpoint ({path}); its versions were "
                    "in a run store that was lost"
                )
            created = (
                header.get("created_at") if isinstance(header.get("created_at"), int | float) else changed
            )
            rows.append(
                (
                    path.stem,
                    str(header.get("premise") or ""),
                    int_or_none(header.get("scenes")),
                    int_or_none(header.get("seed")),
                    header.get("provider") if isinstance(header.get("provider"), str) else None,
                    status,
                    error if isinstance(error, str) else None,
                    created,
                    changed,
                    changed,
                )
            )
        if not rows:
            return
        with transaction(db):
            db.executemany(
                "INSERT OR IGNORE INTO runs (id, premise, scenes, seed, provider, status, error, created_at, "
                "updated_at, heartbeat) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        logger.warning(
            "storyengine: made a new run store %s with %d run(s) from %s",
            self.path,
            len(rows),
            self.checkpoints,
        )

    def open(self) -> None:
        """Open (or make) the store now: a store made before a new run's checkpoint is written does
        not mistake that run for one to rebuild from checkpoints."""
        with self._session():
            pass

    def close(self) -> None:
        with self._lock:
            _HEARTBEAT.forget(self)
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- runs --
    def start_run(self, run: RunRecord) -> None:
        """Record `run` as running (again, when it exists: its premise and options are kept), by
        this process: its heartbeat is renewed until the run's status changes."""
        now = time.time()
        with self._session(write=True) as db:
            db.execute(
                "INSERT INTO runs (id, premise, scenes, seed, provider, status, error, created_at, "
                "updated_at, owner_pid, owner_host, heartbeat) "
                "VALUES (?, ?, ?, ?, ?, 'running', NULL, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET status = 'running', error = NULL, updated_at = ?, "
                "owner_pid = ?, owner_host = ?, heartbeat = ?",
                (
                    run.id,
                    run.premise,
                    run.scenes,
                    run.seed,
                    run.provider,
                    run.created_at,
                    now,
                    os.getpid(),
                    HOST,
                    now,
                    now,
                    os.getpid(),
                    HOST,
                    now,
                ),
            )
        _HEARTBEAT.add(self, run.id)

    def set_status(self, run_id: str, status: str, error: str | None = None) -> None:
        with self._session(write=True) as db:
            db.execute(
                "UPDATE runs SET status = ?, error = ?, updated_at = ? WHERE id = ?",
                (status, error, time.time(), run_id),
            )
        if status != "running":
            _HEARTBEAT.remove(self, run_id)

    def beat(self, run_ids: list[str]) -> None:
        """Renew the heartbeat of these runs, where this process still owns them."""
        marks = ", ".join("?" for _ in run_ids)
        with self._session(write=True) as db:
            db.execute(
                f"UPDATE runs SET heartbeat = ? WHERE id IN ({marks}) AND status = 'running' "
                "AND owner_pid = ? AND owner_host = ?",
                (time.time(), *run_ids, os.getpid(), HOST),
            )

    def take_over(self, run_id: str) -> bool:
        """Make this process the owner of `run_id` when it is running with a dead owner (to resume
        it); False when it is not (another process may have taken it over first)."""
        with self._session(write=True) as db:  # BEGIN IMMEDIATE: one process at a time
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None or row["status"] != "running" or self._alive(row):
                return False
            db.execute(
                "UPDATE runs SET owner_pid = ?, owner_host = ?, heartbeat = ?, updated_at = ? WHERE id = ?",
                (os.getpid(), HOST, time.time(), time.time(), run_id),
            )
        _HEARTBEAT.add(self, run_id)
        return True

    def _alive(self, row: sqlite3.Row) -> bool:
        """Whether the process writing a running run is alive (see the module's docstring)."""
        heartbeat = row["heartbeat"] if row["heartbeat"] is not None else row["updated_at"]
        if heartbeat is None or time.time() - heartbeat > self.stale_after:
            return False
        pid, host = row["owner_pid"], row["owner_host"]
        if pid is None or host != HOST:
            return True  # only the heartbeat can tell
        if pid == os.getpid():
            return _HEARTBEAT.owns(self._key, row["id"])
        return _pid_alive(pid)

    def run(self, run_id: str) -> RunRecord:
        """The run with the summaries of its versions; NotFound when there is none."""
        with self._session() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise NotFound(f"no run {run_id!r} in {self.path} (`storyengine serve` lists the runs)")
            versions = db.execute(
                f"SELECT {VERSION_COLUMNS} FROM versions WHERE run_id = ? ORDER BY number", (run_id,)
            ).fetchall()
            return self._run(row, [version_of(v) for v in versions])

    def exists(self, run_id: str) -> bool:
        with self._session() as db:
            return db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is not None

    def runs(self, limit: int = 500) -> list[RunRecord]:
        """The latest `limit` runs, newest first, each with the summaries of its versions."""
        with self._session() as db:
            rows = db.execute("SELECT * FROM runs ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
            # a row planted with an id no run can have ("../x") is not listed: it names no checkpoint
            rows = [r for r in rows if RUN_ID.fullmatch(str(r["id"]))]
            ids = [r["id"] for r in rows]
            marks = ", ".join("?" for _ in ids)
            versions = db.execute(
                f"SELECT {VERSION_COLUMNS} FROM versions WHERE run_id IN ({marks}) ORDER BY number", ids
            ).fetchall()
        by_run: dict[str, list[Version]] = {i: [] for i in ids}
        for v in versions:
            by_run[v["run_id"]].append(version_of(v))
        return [self._run(r, by_run[r["id"]]) for r in rows]

    def _run(self, row: sqlite3.Row, versions: list[Version]) -> RunRecord:
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
            owner_pid=row["owner_pid"],
            owner_host=row["owner_host"],
            heartbeat=row["heartbeat"] if row["heartbeat"] is not None else row["updated_at"],
            orphaned=row["status"] == "running" and not self._alive(row),
        )

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
                f"INSERT INTO versions ({VERSION_COLUMNS}, story) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        if not 1 <= number <= INTEGER_MAX:
            raise NotFound(
                f"run {run_id} has no version {number}; it has versions 1 to {run.versions[-1].number}"
            )
        with self._session() as db:
            row = db.execute(
                f"SELECT {VERSION_COLUMNS}, story FROM versions WHERE run_id = ? AND number = ?",
                (run_id, number),
            ).fetchone()
        if row is None:
            raise NotFound(
                f"run {run_id} has no version {number}; it has versions 1 to {run.versions[-1].number}"
            )
        found = version_of(row)
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


def _damaged(exc: sqlite3.DatabaseError) -> bool:
    """Whether an SQLite error says the file is not a database, or a damaged one."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB (and their extended codes)
    text = str(exc)
    return "malformed" in text or "not a database" in text


__all__ = [
    "FILENAME",
    "HEARTBEAT_SECONDS",
    "HOST",
    "INTEGER_MAX",
    "MIGRATIONS",
    "STALE_SECONDS",
    "DamagedStore",
    "NotFound",
    "RunRecord",
    "RunStore",
    "Version",
]
