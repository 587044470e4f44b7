"""Where cached completions live: a TTL'd LRU in memory in front of a persistent tier.

`ResponseCache` is what `Cached` talks to. It is given its persistent tier, a `PersistentTier`:
`SqliteTier` here (one SQLite file; `sqlite_cache` builds the cache on it) or `RedisTier` in
redis_store.py; `router.response_cache` picks one from the settings. The cache never raises for
a cache problem: a file that is not a database, or one another connection keeps locked, costs
ONE warning on the "storyengine" logger and the run goes on with the memory tier only (nothing
persisted).

`SqliteEntries` is the file itself, synchronous and raising `sqlite3.Error`; the CLI uses it
directly so that it can report problems instead of hiding them.

The file is in WAL mode with a busy timeout, and every write is one short `BEGIN IMMEDIATE`
transaction, so several processes can share it. Database calls run in a worker thread (one
at a time, behind a lock), so a slow disk or a busy file never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ..store import open_db, transaction
from ..types import Completion

logger = logging.getLogger("storyengine")

Clock = Callable[[], float]
T = TypeVar("T")
Row = tuple[str, str, float, int]  # completion JSON, component, created_at, hits


def _m001_entries_and_counters(db: sqlite3.Connection) -> None:
    for statement in _SCHEMA:
        db.execute(statement)


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS entries (
        key TEXT PRIMARY KEY,
        completion TEXT NOT NULL,
        component TEXT NOT NULL,
        created_at REAL NOT NULL,
        hits INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS entries_by_age ON entries (created_at)",
    """CREATE TABLE IF NOT EXISTS counters (
        component TEXT PRIMARY KEY,
        hits INTEGER NOT NULL DEFAULT 0,
        misses INTEGER NOT NULL DEFAULT 0
    )""",
)
MIGRATIONS = [_m001_entries_and_counters]  # "IF NOT EXISTS": files made before the list adopt it


@dataclass
class CacheEntry:
    """One stored answer: the completion (its `provider` is who actually answered) and its bookkeeping."""

    completion: Completion
    component: str
    created_at: float
    hits: int = 0


@dataclass
class ComponentStats:
    entries: int = 0
    bytes: int = 0
    hits: int = 0
    misses: int = 0

    @property
    def hit_rate(self) -> float | None:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else None


@dataclass
class CacheStats:
    """What `storyengine cache stats` reports. `bytes` is stored keys + values; `file_bytes` the disk."""

    path: str
    entries: int = 0
    expired: int = 0
    bytes: int = 0
    file_bytes: int = 0
    hits: int = 0
    misses: int = 0
    components: dict[str, ComponentStats] = field(default_factory=dict)

    @property
    def hit_rate(self) -> float | None:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["hit_rate"] = self.hit_rate
        for name, component in self.components.items():
            data["components"][name]["hit_rate"] = component.hit_rate
        return data


class SqliteEntries:
    """The cache file. Synchronous; every method may raise `sqlite3.Error` (or `OSError`)."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 5.0) -> None:
        self.path = path
        # WAL, the busy timeout, a retried set-up and the schema: store.py, as for every file we keep.
        self._conn = open_db(path, MIGRATIONS, busy_timeout=busy_timeout_s)

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self._conn)

    def get(self, key: str) -> Row | None:
        row = self._conn.execute(
            "SELECT completion, component, created_at, hits FROM entries WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2], row[3])

    def put(self, key: str, completion_json: str, component: str, created_at: float) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO entries (key, completion, component, created_at, hits) "
                "VALUES (?, ?, ?, ?, 0)",
                (key, completion_json, component, created_at),
            )

    def delete(self, key: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM entries WHERE key = ?", (key,))

    def rename(self, old_key: str, new_key: str) -> None:
        """Move an entry to a new key (keeping its age and hits), replacing what `new_key` held."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO entries (key, completion, component, created_at, hits) "
                "SELECT ?, completion, component, created_at, hits FROM entries WHERE key = ?",
                (new_key, old_key),
            )
            conn.execute("DELETE FROM entries WHERE key = ?", (old_key,))

    def record(self, component: str, *, hit: bool, key: str | None = None) -> None:
        column = "hits" if hit else "misses"
        with self._transaction() as conn:
            conn.execute(
                f"INSERT INTO counters (component, {column}) VALUES (?, 1) "
                f"ON CONFLICT (component) DO UPDATE SET {column} = {column} + 1",
                (component,),
            )
            if hit and key is not None:
                conn.execute("UPDATE entries SET hits = hits + 1 WHERE key = ?", (key,))

    def clear(self, *, created_before: float | None = None) -> int:
        """Delete entries created before `created_before`, or everything (counters too) when None."""
        with self._transaction() as conn:
            if created_before is None:
                deleted = conn.execute("DELETE FROM entries").rowcount
                conn.execute("DELETE FROM counters")
            else:
                deleted = conn.execute("DELETE FROM entries WHERE created_at < ?", (created_before,)).rowcount
        if created_before is None:
            with suppress(sqlite3.OperationalError):  # another process is reading: keep the file size
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._conn.execute("VACUUM")
        return int(deleted)

    def stats(self, *, expired_before: float | None = None) -> CacheStats:
        stats = CacheStats(path=str(self.path))
        rows = self._conn.execute(
            "SELECT component, COUNT(*), "
            "COALESCE(SUM(LENGTH(CAST(key AS BLOB)) + LENGTH(CAST(completion AS BLOB))), 0) "
            "FROM entries GROUP BY component"
        ).fetchall()
        for component, entries, size in rows:
            stats.components[component] = ComponentStats(entries=entries, bytes=size)
        for component, hits, misses in self._conn.execute("SELECT component, hits, misses FROM counters"):
            counted = stats.components.setdefault(component, ComponentStats())
            counted.hits, counted.misses = hits, misses
        stats.components = dict(sorted(stats.components.items()))
        for counted in stats.components.values():
            stats.entries += counted.entries
            stats.bytes += counted.bytes
            stats.hits += counted.hits
            stats.misses += counted.misses
        if expired_before is not None:
            (stats.expired,) = self._conn.execute(
                "SELECT COUNT(*) FROM entries WHERE created_at <= ?", (expired_before,)
            ).fetchone()
        stats.file_bytes = sum(part.stat().st_size for part in _file_parts(self.path) if part.exists())
        return stats

    def close(self) -> None:
        self._conn.close()


def _file_parts(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def remove_cache_file(path: Path) -> bool:
    """Delete the cache file and its WAL companions (for a file that is not a database at all)."""
    removed = False
    for part in _file_parts(path):
        if part.exists():
            part.unlink()
            removed = True
    return removed


class _MemoryTier:
    """A size-bounded LRU of entries, each served only while younger than the TTL."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str, *, fresh_after: float) -> CacheEntry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.created_at <= fresh_after:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: CacheEntry) -> None:
        if self.max_entries <= 0:
            return
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def pop(self, key: str) -> CacheEntry | None:
        return self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()


class PersistentTier(Protocol):
    """Where entries outlive the process, behind the memory tier: a SQLite file (`SqliteTier`) or a
    Redis server (`redis_store.RedisTier`). A tier never raises for a cache problem during a run:
    the first one costs ONE warning, then the tier answers as if empty and `persistent` is False.
    `check()` is the exception: it raises a ConfigError when the tier cannot be reached at all."""

    @property
    def persistent(self) -> bool:
        """True while entries still reach the tier (False after a failure)."""
        ...

    async def check(self) -> None: ...

    async def load(self, key: str) -> Row | None:
        """The stored (completion JSON, component, created_at, hits) under `key`, fresh or not."""
        ...

    async def store(self, key: str, payload: str, component: str, created_at: float) -> None: ...

    async def remove(self, key: str) -> None: ...

    async def move(self, old_key: str, new_key: str) -> None: ...

    async def count(self, component: str, *, hit: bool, key: str | None) -> None: ...

    async def aclose(self) -> None: ...


class SqliteTier:
    """The persistent tier in one SQLite file at `path`, opened on first use (when entries older
    than `ttl_seconds` are dropped from it). Database calls run in a worker thread, one at a time."""

    def __init__(
        self, path: Path, *, ttl_seconds: float, clock: Clock = time.time, busy_timeout_s: float = 5.0
    ) -> None:
        self.path = path
        self.ttl_seconds = ttl_seconds
        self.busy_timeout_s = busy_timeout_s
        self._clock = clock
        self._db: SqliteEntries | None = None
        self._failed = False
        self._lock = threading.Lock()

    @property
    def persistent(self) -> bool:
        return not self._failed

    async def check(self) -> None:
        """Nothing to reach: a file that cannot be used costs a warning when first used."""
        return None

    async def load(self, key: str) -> Row | None:
        return await self._on_disk(lambda db: db.get(key))

    async def store(self, key: str, payload: str, component: str, created_at: float) -> None:
        await self._on_disk(lambda db: db.put(key, payload, component, created_at))

    async def remove(self, key: str) -> None:
        await self._on_disk(lambda db: db.delete(key))

    async def move(self, old_key: str, new_key: str) -> None:
        await self._on_disk(lambda db: db.rename(old_key, new_key))

    async def count(self, component: str, *, hit: bool, key: str | None) -> None:
        await self._on_disk(lambda db: db.record(component, hit=hit, key=key))

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    async def _on_disk(self, operation: Callable[[SqliteEntries], T]) -> T | None:
        if self._failed:
            return None
        return await asyncio.to_thread(self._guarded, operation)

    def _guarded(self, operation: Callable[[SqliteEntries], T]) -> T | None:
        with self._lock:
            if self._failed:
                return None
            try:
                if self._db is None:
                    self._db = SqliteEntries(self.path, busy_timeout_s=self.busy_timeout_s)
                    self._db.clear(created_before=self._clock() - self.ttl_seconds)
                return operation(self._db)
            except (sqlite3.Error, OSError) as exc:
                self._give_up(exc)
                return None

    def _give_up(self, exc: BaseException) -> None:
        self._failed = True
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None
        logger.warning(
            "response cache %s is unusable (%s); this run goes on without the on-disk cache. "
            "If it is locked, another process holds it; if it is corrupt, `storyengine cache clear` "
            "deletes it.",
            self.path,
            exc,
        )


class ResponseCache:
    """Two tiers: memory (TTL + LRU, `memory_entries` at most) in front of a `PersistentTier`.

    `tier=None` keeps everything in memory. Entries older than `ttl_seconds` are never served.
    Use one instance per event loop; several processes may share the tier.
    """

    def __init__(
        self,
        tier: PersistentTier | None,
        *,
        ttl_seconds: float,
        memory_entries: int,
        clock: Clock = time.time,
    ) -> None:
        self.tier = tier
        self.ttl_seconds = ttl_seconds
        self.session_counters: dict[str, ComponentStats] = {}
        self._clock = clock
        self._memory = _MemoryTier(memory_entries)

    async def check(self) -> None:
        """Raise a ConfigError now when the persistent tier cannot be reached (a no-op for SQLite)."""
        if self.tier is not None:
            await self.tier.check()

    @property
    def persistent(self) -> bool:
        """True while entries still reach the persistent tier (False without one or after a failure)."""
        return self.tier is not None and self.tier.persistent

    @property
    def memory_size(self) -> int:
        return len(self._memory)

    def _fresh_after(self) -> float:
        return self._clock() - self.ttl_seconds

    async def get(self, key: str) -> CacheEntry | None:
        """The fresh entry under `key`, from memory or else from the persistent tier; None on a miss."""
        fresh_after = self._fresh_after()
        entry = self._memory.get(key, fresh_after=fresh_after)
        if entry is not None:
            return entry
        row = await self.tier.load(key) if self.tier is not None else None
        if row is None:
            return None
        completion_json, component, created_at, hits = row
        if created_at <= fresh_after:
            return None
        try:
            completion = Completion.model_validate_json(completion_json)
        except ValueError:
            await self.delete(key)
            return None
        entry = CacheEntry(completion, component, created_at, hits)
        self._memory.put(key, entry)
        return entry

    async def put(self, key: str, completion: Completion, component: str) -> None:
        stored = completion.model_copy(deep=True, update={"cached": False})
        entry = CacheEntry(stored, component, self._clock())
        self._memory.put(key, entry)
        if self.tier is not None:
            await self.tier.store(key, stored.model_dump_json(), component, entry.created_at)

    async def delete(self, key: str) -> None:
        self._memory.pop(key)
        if self.tier is not None:
            await self.tier.remove(key)

    async def rename(self, old_key: str, new_key: str) -> None:
        entry = self._memory.pop(old_key)
        if entry is not None:
            self._memory.put(new_key, entry)
        if self.tier is not None:
            await self.tier.move(old_key, new_key)

    async def record(self, component: str, *, hit: bool, key: str | None = None) -> None:
        """Count one lookup for `component` (and, for a hit, on the entry under `key`)."""
        counted = self.session_counters.setdefault(component, ComponentStats())
        if hit:
            counted.hits += 1
        else:
            counted.misses += 1
        if self.tier is not None:
            await self.tier.count(component, hit=hit, key=key)

    def clear_memory(self) -> None:
        self._memory.clear()

    async def aclose(self) -> None:
        if self.tier is not None:
            await self.tier.aclose()


def sqlite_cache(
    path: Path | None,
    *,
    ttl_seconds: float,
    memory_entries: int,
    clock: Clock = time.time,
    busy_timeout_s: float = 5.0,
) -> ResponseCache:
    """The memory tier in front of the SQLite file at `path` (`None`: memory only)."""
    tier = None
    if path is not None:
        tier = SqliteTier(path, ttl_seconds=ttl_seconds, clock=clock, busy_timeout_s=busy_timeout_s)
    return ResponseCache(tier, ttl_seconds=ttl_seconds, memory_entries=memory_entries, clock=clock)
