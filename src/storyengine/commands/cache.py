"""`storyengine cache stats` and `storyengine cache clear`: look into and empty the response cache."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from ..config import Settings, load_settings
from ..errors import InputError
from ..routing.cache_store import CacheStats, SqliteEntries, remove_cache_file
from .options import config_option

if TYPE_CHECKING:
    from ..routing.redis_store import RedisEntries

T = TypeVar("T")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Seconds in "30s", "10m", "2h" or "7d"; InputError for anything else."""
    match = _DURATION.match(text)
    if match is None:
        raise InputError(
            f"--older-than {text!r} is not a duration; give a number and a unit, like 30s, 10m, 2h or 7d"
        )
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


def _open(path: Path) -> SqliteEntries:
    try:
        return SqliteEntries(path)
    except (sqlite3.Error, OSError) as exc:
        raise InputError(
            f"cannot read the response cache {path} ({exc}); if it is corrupt, "
            "`storyengine cache clear` deletes it (it only holds cached answers)"
        ) from None


def _is_corrupt(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.DatabaseError) and any(
        sign in str(exc) for sign in ("not a database", "malformed")
    )


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1%}"


def _render(stats: CacheStats) -> str:
    lines = [
        f"cache: {stats.path}",
        f"entries: {stats.entries} ({stats.expired} expired)  "
        f"bytes: {stats.bytes} (file: {stats.file_bytes})",
        f"hits: {stats.hits}  misses: {stats.misses}  hit rate: {_percent(stats.hit_rate)}",
    ]
    if stats.components:
        width = max(9, *(len(name) for name in stats.components))
        lines.append(
            f"{'component':<{width}}  {'entries':>7}  {'bytes':>10}  {'hits':>6}  {'misses':>6}  hit rate"
        )
        for name, counted in stats.components.items():
            lines.append(
                f"{name:<{width}}  {counted.entries:>7}  {counted.bytes:>10}  {counted.hits:>6}  "
                f"{counted.misses:>6}  {_percent(counted.hit_rate)}"
            )
    return "\n".join(lines)


def _redis(settings: Settings, action: Callable[[RedisEntries], Awaitable[T]]) -> T:
    """Run `action` on the configured Redis cache; a clear InputError when it cannot."""
    from ..routing.redis_store import RedisEntries, redacted, require_redis

    require_redis()  # a ConfigError that says how to install it

    async def run() -> T:
        entries = RedisEntries(settings.cache.redis_url, ttl_seconds=settings.cache.ttl_seconds)
        try:
            return await action(entries)
        finally:
            await entries.aclose()

    import redis.exceptions

    url = redacted(settings.cache.redis_url)
    try:
        return asyncio.run(run())
    except (OSError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise InputError(f"cannot reach the Redis cache at {url}: {exc}") from None
    except redis.exceptions.RedisError as exc:
        raise InputError(f"the Redis cache at {url} failed: {exc}") from None


def collect_stats(settings: Settings) -> CacheStats:
    if settings.cache.backend == "redis":
        expired_before = time.time() - settings.cache.ttl_seconds
        return _redis(settings, lambda entries: entries.stats(expired_before=expired_before))
    path = settings.cache_path
    if not path.exists():
        return CacheStats(path=str(path))
    db = _open(path)
    try:
        return db.stats(expired_before=time.time() - settings.cache.ttl_seconds)
    except sqlite3.Error as exc:
        raise InputError(f"cannot read the response cache {path} ({exc})") from None
    finally:
        db.close()


@click.group("cache")
def cache() -> None:
    """Inspect or empty the response cache."""


@cache.command("stats")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON.")
def stats_command(config_path: Path | None, as_json: bool) -> None:
    """Entries, size, hits, misses and hit rate, overall and per component."""
    stats = collect_stats(load_settings(config_path))
    click.echo(json.dumps(stats.to_dict(), indent=2) if as_json else _render(stats))


@cache.command("clear")
@config_option
@click.option(
    "--older-than",
    "older_than",
    default=None,
    metavar="DURATION",
    help="Only entries older than this (30s, 10m, 2h, 7d). Default: everything, counters too.",
)
def clear_command(config_path: Path | None, older_than: str | None) -> None:
    """Delete cached answers."""
    max_age = parse_duration(older_than) if older_than is not None else None
    settings = load_settings(config_path)
    scope = "" if older_than is None else f" older than {older_than}"
    if settings.cache.backend == "redis":
        from ..routing.redis_store import redacted

        cutoff = None if max_age is None else time.time() - max_age
        count = _redis(settings, lambda entries: entries.clear(created_before=cutoff))
        where = redacted(settings.cache.redis_url)
        click.echo(f"deleted {count} entr{'y' if count == 1 else 'ies'}{scope} from {where}")
        return
    path = settings.cache_path
    if not path.exists():
        click.echo(f"nothing to clear: no cache at {path}")
        return
    try:
        db = SqliteEntries(path)
    except (sqlite3.Error, OSError) as exc:
        if max_age is not None or not _is_corrupt(exc):
            raise InputError(
                f"cannot open the response cache {path} ({exc}); "
                "`storyengine cache clear` without --older-than deletes a corrupt file"
            ) from None
        remove_cache_file(path)
        click.echo(f"deleted {path}: it was not a readable cache ({exc})")
        return
    try:
        created_before = None if max_age is None else time.time() - max_age
        deleted = db.clear(created_before=created_before)
    except sqlite3.Error as exc:
        raise InputError(f"cannot clear the response cache {path} ({exc})") from None
    finally:
        db.close()
    click.echo(f"deleted {deleted} entr{'y' if deleted == 1 else 'ies'}{scope} from {path}")


COMMANDS = [cache]
