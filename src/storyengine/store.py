"""One SQLite helper for every file storyengine keeps: the run log, the run store, the cache.

`open_db` opens a file in WAL mode with a busy timeout and brings its schema up to date from
an ordered list of migrations (`PRAGMA user_version` counts how many have been applied):
append a migration, never edit or reorder one. Switching to WAL can answer "locked" at once,
without waiting for the busy timeout, while another process sets up the same file; that is
retried until the timeout.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

Migration = Callable[[sqlite3.Connection], None]


def open_db(path: Path, migrations: Sequence[Migration], *, busy_timeout: float = 5.0) -> sqlite3.Connection:
    """A connection to `path` (created with its directory), migrated; raises sqlite3.Error or OSError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    try:
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        deadline = time.monotonic() + busy_timeout
        while True:
            try:
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")
                migrate(db, migrations)
                return db
            except sqlite3.OperationalError as exc:
                transient = "locked" in str(exc) or "busy" in str(exc)
                if not transient or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    except BaseException:
        db.close()
        raise


def migrate(db: sqlite3.Connection, migrations: Sequence[Migration]) -> None:
    """Apply the migrations `db` has not seen yet, in one transaction."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > len(migrations):
        raise sqlite3.DatabaseError(
            f"schema version {version} is newer than this storyengine knows ({len(migrations)}); "
            "upgrade storyengine"
        )
    if version == len(migrations):
        return
    with transaction(db):
        # Another process may have migrated while we waited for the lock.
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for number, migration in enumerate(migrations[version:], start=version + 1):
            migration(db)
            db.execute(f"PRAGMA user_version = {number}")


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One short write transaction (BEGIN IMMEDIATE ... COMMIT, rolled back on any error)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
