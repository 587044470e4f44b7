"""The response cache in a real `redis-server` (Debian's package) started on 127.0.0.1 per test."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from storyengine.batch.runner import run_batch
from storyengine.cli import main
from storyengine.config import Settings, parse_settings
from storyengine.errors import ConfigError
from storyengine.pipeline.engine import StoryEngine
from storyengine.providers.fake_story import story_script
from storyengine.providers.scripted import ScriptedProvider
from storyengine.routing.cache import Cached
from storyengine.routing.redis_store import RedisEntries, RedisTier, redacted, redis_cache
from storyengine.routing.router import response_cache
from storyengine.types import Completion, CompletionRequest, Message

pytest.importorskip("redis")
REDIS = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(
    REDIS is None, reason="redis-server is not installed (scripts/test.sh installs it)"
)

SRC = Path(__file__).resolve().parents[1] / "src"
PREMISE = "A cartographer discovers that her maps redraw themselves overnight."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    assert REDIS is not None
    process = subprocess.Popen(
        [
            REDIS,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


def redis_settings(url: str, extra: str = "") -> Settings:
    return parse_settings(
        f"""
providers:
  embedded: {{type: embedded, context_window: 8192}}
retry: {{attempts: 2, backoff_initial: 0, backoff_max: 0}}
cache: {{backend: redis, url: "{url}"}}
{extra}
""",
        source="redis.yaml",
    )


def scripted_engine(settings: Settings) -> tuple[StoryEngine, ScriptedProvider]:
    provider = ScriptedProvider(story_script, name="embedded", structured_mode="grammar")
    return StoryEngine.from_config(settings=settings, providers={"embedded": provider}), provider


def request(text: str = "Say hello.") -> CompletionRequest:
    return CompletionRequest(
        messages=(Message(role="user", content=text),),
        temperature=0.0,
        max_tokens=50,
        seed=1,
        component="plot",
        stage="structuring",
    )


class Echo:
    def __init__(self) -> None:
        self.calls = 0

    async def generate(self, request: CompletionRequest, check: Any = None) -> Completion:
        self.calls += 1
        return Completion(text='{"ok": true}', finish_reason="stop", provider="p", model="m")


def test_config_validates_backend_and_url_at_load() -> None:
    assert redis_settings("redis://127.0.0.1:6390/2").cache.redis_url == "redis://127.0.0.1:6390/2"
    assert parse_settings("cache: {backend: redis}").cache.redis_url == "redis://127.0.0.1:6379/0"
    for bad, message in (
        ("cache: {backend: redis, url: 'http://127.0.0.1:6379'}", "not a Redis URL"),
        ("cache: {backend: redis, url: 'redis://127.0.0.1:six/0'}", "port"),
        ("cache: {backend: redis, url: 'redis://127.0.0.1:6379/zero'}", "database"),
        ("cache: {url: 'redis://127.0.0.1:6379/0'}", "only used with cache.backend: redis"),
        ("cache: {backend: memcached}", "cache.backend"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_settings(bad)
    assert redacted("redis://user:secret@host:6379/0") == "redis://user:***@host:6379/0"


async def test_two_engines_in_two_processes_share_hits(redis_url: str, tmp_path: Path) -> None:
    settings = redis_settings(redis_url)
    first, provider = scripted_engine(settings)
    async with first:
        story = await first.generate(PREMISE, scenes=2, seed=5)
    assert provider.calls > 0
    assert isinstance(first.router.cache.store.tier, RedisTier)  # type: ignore[attr-defined]
    # A second process, its own engine and memory tier: every answer comes from Redis.
    script = textwrap.dedent(
        f"""
        import asyncio, json, sys
        sys.path.insert(0, {str(SRC)!r})
        from storyengine.config import parse_settings
        from storyengine.pipeline.engine import StoryEngine
        from storyengine.providers.fake_story import story_script
        from storyengine.providers.scripted import ScriptedProvider
        settings = parse_settings(sys.stdin.read())
        async def main():
            provider = ScriptedProvider(story_script, name="embedded", structured_mode="grammar")
            engine = StoryEngine.from_config(settings=settings, providers={{"embedded": provider}})
            async with engine:
                story = await engine.generate({PREMISE!r}, scenes=2, seed=5)
            print(json.dumps({{"calls": provider.calls, "title": story.plot.title}}))
        asyncio.run(main())
        """
    )
    config = f'cache: {{backend: redis, url: "{redis_url}"}}\nproviders: {{embedded: {{type: embedded}}}}\n'
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script],
        input=config,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.splitlines()[-1])
    assert answer == {"calls": 0, "title": story.plot.title}
    entries = RedisEntries(redis_url, ttl_seconds=60)
    try:
        stats = await entries.stats()
    finally:
        await entries.aclose()
    assert stats.hits >= provider.calls // 2 and stats.entries > 0 and stats.misses > 0


async def test_only_validated_answers_are_stored_with_the_ttl_as_redis_expiry(redis_url: str) -> None:
    clock = [1000.0]
    store = redis_cache(redis_url, ttl_seconds=30, memory_entries=0, clock=lambda: clock[0])
    inner = Echo()
    cached = Cached(inner, store, provider_id="p", model="m")

    def rejects(completion: Completion) -> None:
        raise ValueError("not what the schema wants")

    await cached.generate(request("invalid"), rejects)
    entries = RedisEntries(redis_url, ttl_seconds=30)
    try:
        assert (await entries.stats()).entries == 0  # a failed check is never stored
        await cached.generate(request("valid"))
        key = entries.entry_key(cached.key(request("valid")))
        assert 0 < await entries.client.pttl(key) <= 30_000
        assert key.startswith("storyengine:cache:entry:v1:p:m:")
        again = await cached.generate(request("valid"))
        assert again.cached and inner.calls == 2
        assert await entries.client.hget(key, "hits") == "1"
        clock[0] += 31  # older than the TTL by our clock: never served, even before Redis drops it
        await cached.generate(request("valid"))
        assert inner.calls == 3
    finally:
        await entries.aclose()
        await store.aclose()


async def test_a_hit_that_no_longer_passes_its_check_is_deleted(redis_url: str) -> None:
    store = redis_cache(redis_url, ttl_seconds=60, memory_entries=0)
    inner = Echo()
    cached = Cached(inner, store, provider_id="p", model="m")
    await cached.generate(request())

    def now_rejects(completion: Completion) -> None:
        raise ValueError("stricter now")

    await cached.generate(request(), now_rejects)
    assert inner.calls == 2
    assert await store.tier.load(cached.key(request())) is None
    await store.aclose()


def test_cache_stats_and_clear_commands_on_redis(redis_url: str, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f'cache: {{backend: redis, url: "{redis_url}"}}\n')

    async def fill() -> None:
        store = response_cache(redis_settings(redis_url))
        cached = Cached(Echo(), store, provider_id="p", model="m")
        for text in ("one", "two", "three"):
            await cached.generate(request(text))
        await cached.generate(request("one"))
        await store.aclose()

    asyncio.run(fill())
    stats = CliRunner().invoke(main, ["cache", "stats", "--json", "--config", str(config)])
    assert stats.exit_code == 0, stats.output
    data = json.loads(stats.output)
    assert data["entries"] == 3 and data["hits"] == 1 and data["misses"] == 3
    assert data["components"]["plot"]["entries"] == 3 and data["path"] == redis_url
    text = CliRunner().invoke(main, ["cache", "stats", "--config", str(config)])
    assert "plot" in text.output and "hit rate: 25.0%" in text.output
    kept = CliRunner().invoke(main, ["cache", "clear", "--older-than", "1h", "--config", str(config)])
    assert kept.exit_code == 0 and "deleted 0 entries older than 1h" in kept.output
    cleared = CliRunner().invoke(main, ["cache", "clear", "--config", str(config)])
    assert cleared.exit_code == 0 and "deleted 3 entries" in cleared.output
    after = json.loads(CliRunner().invoke(main, ["cache", "stats", "--json", "--config", str(config)]).output)
    assert after["entries"] == 0 and after["hits"] == 0 and after["misses"] == 0


async def test_an_unreachable_redis_is_one_clear_error_before_any_story(tmp_path: Path) -> None:
    engine, provider = scripted_engine(redis_settings(f"redis://127.0.0.1:{free_port()}/0"))
    async with engine:
        with pytest.raises(ConfigError, match=r"cannot reach the Redis cache at redis://127\.0\.0\.1"):
            async for _ in run_batch(engine, ["A premise.", "Another premise."], out=tmp_path / "out"):
                pass
    assert provider.calls == 0 and not (tmp_path / "out" / "manifest.jsonl").exists()


def test_cache_commands_on_an_unreachable_redis_say_so_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f'cache: {{backend: redis, url: "redis://127.0.0.1:{free_port()}/0"}}\n')
    stats = CliRunner().invoke(main, ["cache", "stats", "--config", str(config)])
    assert stats.exit_code == 2 and "cannot reach the Redis cache" in stats.output


async def test_redis_going_away_mid_run_costs_one_warning_not_the_story(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine, provider = scripted_engine(redis_settings(redis_url))
    store = engine.router.cache.store  # type: ignore[attr-defined]
    await store.tier.entries.client.shutdown(nosave=True)
    async with engine:
        story = await engine.generate(PREMISE, scenes=2, seed=1)
    assert story.plot.beats and provider.calls > 0
    warnings = [r for r in caplog.records if "Redis cache" in r.getMessage()]
    assert len(warnings) == 1
