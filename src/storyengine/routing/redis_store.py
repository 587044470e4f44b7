"""The response cache in Redis: one server that several processes or machines share.

`RedisTier` is a persistent tier for a `ResponseCache` (same memory tier, same keys, same TTL
and validated-only rule, which `Cached` enforces) on a Redis server instead of a SQLite file;
`redis_cache` builds the cache on it. Like the SQLite tier it never raises for a cache problem
during a run: a server that stops answering costs ONE warning and the run goes on with the
memory tier. `check()` is the exception: the batch runner calls it before any story starts so
that an unreachable server is one clear error up front.

`RedisEntries` is the server itself, async and raising; `storyengine cache stats|clear` use it.

Layout, all under the prefix `storyengine:cache:`:

    entry:<v1 key>   a hash {completion, component, created_at, hits}; expires ttl_seconds
                     after it was written (Redis expiry is the TTL)
    counters         a hash {"hits:<component>": n, "misses:<component>": n}

The client is the `redis` package's asyncio client (`pip install 'storyengine[redis]'`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError
from .cache_store import CacheStats, Clock, ComponentStats, ResponseCache, Row

logger = logging.getLogger("storyengine")

T = TypeVar("T")

PREFIX = "storyengine:cache:"
INSTALL_HINT = "pip install 'storyengine[redis]'"

_COUNT_HIT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HINCRBY', KEYS[1], 'hits', 1)
end
return 0
"""


def require_redis() -> Any:
    try:
        import redis.asyncio as redis_asyncio
    except ImportError:
        raise ConfigError(
            f"cache.backend: redis needs the redis package; install it with: {INSTALL_HINT}"
        ) from None
    return redis_asyncio


def redacted(url: str) -> str:
    """`url` without its password, for messages and `cache stats`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


def _errors() -> tuple[type[BaseException], ...]:
    import redis.exceptions

    return (redis.exceptions.RedisError, OSError, TimeoutError)


class RedisEntries:
    """The cache's keys on one Redis server. Every method may raise a redis error or `OSError`."""

    def __init__(self, url: str, *, ttl_seconds: float, timeout_s: float = 5.0, prefix: str = PREFIX) -> None:
        redis_asyncio = require_redis()
        self.url = url
        self.ttl_ms = max(1, int(ttl_seconds * 1000))
        self.prefix = prefix
        self.client = redis_asyncio.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, decode_responses=True
        )
        self._count_hit = self.client.register_script(_COUNT_HIT)

    def entry_key(self, key: str) -> str:
        return f"{self.prefix}entry:{key}"

    @property
    def counters_key(self) -> str:
        return f"{self.prefix}counters"

    async def ping(self) -> None:
        await self.client.ping()

    async def get(self, key: str) -> Row | None:
        completion, component, created_at, hits = await self.client.hmget(
            self.entry_key(key), ["completion", "component", "created_at", "hits"]
        )
        if completion is None or created_at is None:
            return None
        return completion, component or "", float(created_at), int(hits or 0)

    async def put(self, key: str, completion_json: str, component: str, created_at: float) -> None:
        name = self.entry_key(key)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(name)
            pipe.hset(
                name,
                mapping={
                    "completion": completion_json,
                    "component": component,
                    "created_at": repr(created_at),
                    "hits": 0,
                },
            )
            pipe.pexpire(name, self.ttl_ms)
            await pipe.execute()

    async def delete(self, key: str) -> None:
        await self.client.delete(self.entry_key(key))

    async def rename(self, old_key: str, new_key: str) -> None:
        """Move an entry (its expiry goes with it), replacing what `new_key` held."""
        import redis.exceptions

        try:
            await self.client.rename(self.entry_key(old_key), self.entry_key(new_key))
        except redis.exceptions.ResponseError:  # no such key: it expired meanwhile
            return

    async def record(self, component: str, *, hit: bool, key: str | None = None) -> None:
        field = f"{'hits' if hit else 'misses'}:{component}"
        await self.client.hincrby(self.counters_key, field, 1)
        if hit and key is not None:
            await self._count_hit(keys=[self.entry_key(key)])

    async def _entry_names(self) -> list[str]:
        return [name async for name in self.client.scan_iter(match=f"{self.prefix}entry:*", count=500)]

    async def clear(self, *, created_before: float | None = None) -> int:
        """Delete entries created before `created_before`, or everything (counters too) when None."""
        names = await self._entry_names()
        if created_before is not None:
            ages = await self._fields(names, "created_at")
            names = [n for n, age in zip(names, ages, strict=True) if age and float(age) < created_before]
        deleted = 0
        for start in range(0, len(names), 500):
            deleted += int(await self.client.unlink(*names[start : start + 500]))
        if created_before is None:
            await self.client.unlink(self.counters_key)
        return deleted

    async def _fields(self, names: list[str], field: str) -> list[Any]:
        async with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hget(name, field)
            return list(await pipe.execute()) if names else []

    async def stats(self, *, expired_before: float | None = None) -> CacheStats:
        stats = CacheStats(path=redacted(self.url))
        names = await self._entry_names()
        async with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hmget(name, ["component", "created_at"])
                pipe.hstrlen(name, "completion")
            rows = list(await pipe.execute()) if names else []
        for i, name in enumerate(names):
            (component, created_at), size = rows[2 * i], rows[2 * i + 1]
            if component is None:  # expired between the scan and the read
                continue
            counted = stats.components.setdefault(component, ComponentStats())
            counted.entries += 1
            counted.bytes += len(name.removeprefix(f"{self.prefix}entry:").encode()) + int(size)
            if expired_before is not None and float(created_at) <= expired_before:
                stats.expired += 1
        counters = await self.client.hgetall(self.counters_key)
        for field, value in counters.items():
            kind, _, component = field.partition(":")
            counted = stats.components.setdefault(component, ComponentStats())
            if kind == "hits":
                counted.hits = int(value)
            elif kind == "misses":
                counted.misses = int(value)
        stats.components = dict(sorted(stats.components.items()))
        for counted in stats.components.values():
            stats.entries += counted.entries
            stats.bytes += counted.bytes
            stats.hits += counted.hits
            stats.misses += counted.misses
        return stats

    async def aclose(self) -> None:
        await self.client.aclose()


class RedisTier:
    """The persistent tier on a Redis server at `url` (a `cache_store.PersistentTier`)."""

    def __init__(self, url: str, *, ttl_seconds: float, timeout_s: float = 5.0) -> None:
        self.url = url
        self.entries = RedisEntries(url, ttl_seconds=ttl_seconds, timeout_s=timeout_s)
        self._failed = False
        self._errors = _errors()

    @property
    def persistent(self) -> bool:
        return not self._failed

    async def check(self) -> None:
        try:
            await self.entries.ping()
        except self._errors as exc:
            raise ConfigError(
                f"cannot reach the Redis cache at {redacted(self.url)} ({exc}); start the server or "
                "fix cache.url in the config (or set cache.backend: sqlite)"
            ) from None

    async def _guard(self, operation: Awaitable[T]) -> T | None:
        try:
            return await operation
        except self._errors as exc:
            self._failed = True
            logger.warning(
                "the Redis cache at %s is unusable (%s); this run goes on without the shared cache",
                redacted(self.url),
                exc,
            )
            return None

    async def load(self, key: str) -> Row | None:
        if self._failed:
            return None
        return await self._guard(self.entries.get(key))

    async def store(self, key: str, payload: str, component: str, created_at: float) -> None:
        if not self._failed:
            await self._guard(self.entries.put(key, payload, component, created_at))

    async def remove(self, key: str) -> None:
        if not self._failed:
            await self._guard(self.entries.delete(key))

    async def move(self, old_key: str, new_key: str) -> None:
        if not self._failed:
            await self._guard(self.entries.rename(old_key, new_key))

    async def count(self, component: str, *, hit: bool, key: str | None) -> None:
        if not self._failed:
            await self._guard(self.entries.record(component, hit=hit, key=key))

    async def aclose(self) -> None:
        try:
            await self.entries.aclose()
        except self._errors:
            pass


def redis_cache(
    url: str, *, ttl_seconds: float, memory_entries: int, clock: Clock = time.time, timeout_s: float = 5.0
) -> ResponseCache:
    """The memory tier in front of the Redis server at `url`; one per event loop."""
    tier = RedisTier(url, ttl_seconds=ttl_seconds, timeout_s=timeout_s)
    return ResponseCache(tier, ttl_seconds=ttl_seconds, memory_entries=memory_entries, clock=clock)
