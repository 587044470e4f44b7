"""`storyengine cache stats` and `storyengine cache clear`, through click's CliRunner."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from storyengine.cli import main
from storyengine.commands.cache import parse_duration
from storyengine.errors import InputError
from storyengine.routing.cache_store import SqliteEntries, sqlite_cache
from storyengine.types import Completion


@pytest.fixture
def cache_path(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "cache.sqlite3"


@pytest.fixture
def config(tmp_path: Path, cache_path: Path) -> Path:
    file = tmp_path / "config.yaml"
    file.write_text(f"cache:\n  path: {cache_path}\n  ttl_seconds: 86400\n", encoding="utf-8")
    return file


def fill(path: Path, entries: dict[str, tuple[str, float]], lookups: dict[str, tuple[int, int]]) -> None:
    """Store `entries` (key -> (component, age in s)); count `lookups` (component -> (hits, misses))."""

    async def write() -> None:
        for key, (component, age) in entries.items():
            store = sqlite_cache(
                path, ttl_seconds=10**9, memory_entries=0, clock=lambda age=age: time.time() - age
            )
            completion = Completion(text=f"text of {key}", finish_reason="stop", model="m", provider="p")
            await store.put(key, completion, component)
            await store.aclose()
        store = sqlite_cache(path, ttl_seconds=10**9, memory_entries=0)
        for component, (hits, misses) in lookups.items():
            for _ in range(hits):
                await store.record(component, hit=True)
            for _ in range(misses):
                await store.record(component, hit=False)
        await store.aclose()

    asyncio.run(write())


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["cache", *args])


def test_stats_json_reports_entries_hits_and_rates_per_component(config: Path, cache_path: Path) -> None:
    fill(
        cache_path,
        {"v1:a": ("plot", 10), "v1:b": ("plot", 10), "v1:c": ("scene", 200_000)},
        {"plot": (3, 1), "scene": (0, 2)},
    )
    result = run("stats", "--config", str(config), "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["path"] == str(cache_path)
    assert (stats["entries"], stats["expired"], stats["hits"], stats["misses"]) == (3, 1, 3, 3)
    assert stats["hit_rate"] == pytest.approx(0.5)
    assert stats["components"]["plot"]["entries"] == 2
    assert stats["components"]["plot"]["hit_rate"] == pytest.approx(0.75)
    assert stats["components"]["scene"]["hit_rate"] == 0.0
    assert stats["bytes"] > 0 and stats["file_bytes"] >= stats["bytes"]


def test_stats_text_names_each_component(config: Path, cache_path: Path) -> None:
    fill(cache_path, {"v1:a": ("dialogue", 1)}, {"dialogue": (1, 3)})
    result = run("stats", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert "entries: 1" in result.stdout
    assert "hit rate: 25.0%" in result.stdout
    assert any(line.startswith("dialogue") for line in result.stdout.splitlines())


def test_stats_on_a_missing_cache_reports_zeros_and_creates_nothing(config: Path, cache_path: Path) -> None:
    result = run("stats", "--config", str(config), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["entries"] == 0
    assert not cache_path.exists()


def test_stats_uses_the_default_cache_location_without_config(tmp_path: Path) -> None:
    result = run("stats", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["path"].startswith(str(tmp_path / "xdg"))


def test_clear_older_than_keeps_recent_entries(config: Path, cache_path: Path) -> None:
    fill(cache_path, {"v1:new": ("plot", 60), "v1:old": ("plot", 3 * 3600)}, {"plot": (1, 1)})
    result = run("clear", "--config", str(config), "--older-than", "2h")
    assert result.exit_code == 0, result.output
    assert "deleted 1 entry" in result.stdout
    db = SqliteEntries(cache_path)
    try:
        assert db.get("v1:new") is not None and db.get("v1:old") is None
        assert db.stats().hits == 1
    finally:
        db.close()


def test_clear_without_a_duration_empties_entries_and_counters(config: Path, cache_path: Path) -> None:
    fill(cache_path, {"v1:a": ("plot", 1), "v1:b": ("scene", 1)}, {"plot": (2, 2)})
    result = run("clear", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert "deleted 2 entries" in result.stdout
    stats = json.loads(run("stats", "--config", str(config), "--json").stdout)
    assert (stats["entries"], stats["hits"], stats["misses"]) == (0, 0, 0)


@pytest.mark.parametrize("duration", ["abc", "10", "5y", "-3d", ""])
def test_a_bad_duration_is_one_line_and_exit_2(config: Path, duration: str) -> None:
    result = run("clear", "--config", str(config), "--older-than", duration)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "is not a duration" in result.stderr and "30s, 10m, 2h or 7d" in result.stderr


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("10m", 600), ("2h", 7200), ("7d", 604800), ("1.5h", 5400)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_parse_duration_rejects_units_it_does_not_know() -> None:
    with pytest.raises(InputError):
        parse_duration("3w")


def test_a_corrupt_cache_is_reported_by_stats_and_deleted_by_clear(config: Path, cache_path: Path) -> None:
    cache_path.parent.mkdir(parents=True)
    cache_path.write_bytes(b"\x00garbage" * 512)
    stats = run("stats", "--config", str(config))
    assert stats.exit_code == 2
    assert stats.stderr.count("\n") == 1 and "cache clear" in stats.stderr
    partial = run("clear", "--config", str(config), "--older-than", "1d")
    assert partial.exit_code == 2 and cache_path.exists()
    cleared = run("clear", "--config", str(config))
    assert cleared.exit_code == 0, cleared.output
    assert not cache_path.exists()
    assert json.loads(run("stats", "--config", str(config), "--json").stdout)["entries"] == 0
