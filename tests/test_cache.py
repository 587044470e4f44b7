"""The response cache: keys, tiers, validation, creative calls, legacy keys, robustness."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import multiprocessing
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from storyengine.config import CacheSettings
from storyengine.errors import SchemaValidationError
from storyengine.providers.scripted import ScriptedProvider
from storyengine.routing.base import Check, Generator
from storyengine.routing.cache import Cached, cache_key, chain_identity, legacy_cache_key
from storyengine.routing.cache_store import ResponseCache, SqliteEntries, sqlite_cache
from storyengine.types import Completion, CompletionRequest, Message

# -- helpers ------------------------------------------------------------------------------------


class CheckedProvider:
    """The retry layer's contract in miniature: ask the provider once, then apply `check`."""

    def __init__(self, provider: ScriptedProvider, *, apply_check: bool = True) -> None:
        self.provider = provider
        self.apply_check = apply_check

    async def generate(self, request: CompletionRequest, check: Check | None = None) -> Completion:
        completion = await self.provider.complete(request)
        if check is not None and self.apply_check:
            check(completion)
        return completion


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def echo(request: CompletionRequest) -> str:
    return "answer to " + request.messages[-1].content


def ask(content: str = "write a beat", **fields: Any) -> CompletionRequest:
    fields.setdefault("temperature", 0.0)
    fields.setdefault("stage", "structuring")
    fields.setdefault("component", "plot")
    return CompletionRequest(messages=(Message(role="user", content=content),), **fields)


def build(
    store: ResponseCache, script: Any = echo, *, apply_check: bool = True, **options: Any
) -> tuple[Cached, ScriptedProvider]:
    provider = ScriptedProvider(script, name="embedded", model="smollm2")
    inner: Generator = CheckedProvider(provider, apply_check=apply_check)
    return Cached(inner, store, provider_id="embedded", model="smollm2", **options), provider


def memory_store(clock: Clock | None = None, entries: int = 64) -> ResponseCache:
    return ResponseCache(None, ttl_seconds=3600, memory_entries=entries, clock=clock or Clock())


def reject(completion: Completion) -> None:
    raise SchemaValidationError("not an object", raw_text=completion.text)


def warnings_from_storyengine(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "storyengine" and r.levelno == logging.WARNING]


# -- keys ---------------------------------------------------------------------------------------

texts = st.text(max_size=30)
json_leaves = st.none() | st.booleans() | st.integers() | texts
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
schemas = st.none() | st.dictionaries(texts, json_values, max_size=5)
messages = st.lists(
    st.builds(Message, role=st.sampled_from(["system", "user", "assistant"]), content=texts),
    min_size=1,
    max_size=4,
).map(tuple)
requests = st.builds(
    CompletionRequest,
    messages=messages,
    temperature=st.floats(0.0, 2.0),
    top_p=st.floats(0.01, 1.0),
    seed=st.none() | st.integers(0, 2**31),
    max_tokens=st.integers(1, 4096),
    stop=st.lists(texts, max_size=3).map(tuple),
    json_schema=schemas,
    schema_name=texts,
)


def reordered(value: Any, rnd: random.Random) -> Any:
    """The same JSON value with every dict's keys inserted in a shuffled order."""
    if isinstance(value, dict):
        keys = list(value)
        rnd.shuffle(keys)
        return {k: reordered(value[k], rnd) for k in keys}
    if isinstance(value, list):
        return [reordered(v, rnd) for v in value]
    return value


@given(request=requests, rnd=st.randoms(use_true_random=False))
def test_key_ignores_dict_order_inside_json_schema(request: CompletionRequest, rnd: random.Random) -> None:
    shuffled = request.model_copy(update={"json_schema": reordered(request.json_schema, rnd)})
    assert cache_key(shuffled, provider="p", model="m") == cache_key(request, provider="p", model="m")


@given(
    request=requests, component=texts, attempt=st.integers(1, 9), stage=st.sampled_from(["freeform", "check"])
)
def test_key_ignores_component_stage_and_attempt(
    request: CompletionRequest, component: str, attempt: int, stage: str
) -> None:
    relabelled = request.model_copy(update={"component": component, "attempt": attempt, "stage": stage})
    assert cache_key(relabelled, provider="p", model="m") == cache_key(request, provider="p", model="m")


FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "temperature": st.floats(0.0, 2.0),
    "top_p": st.floats(0.01, 1.0),
    "seed": st.none() | st.integers(0, 2**31),
    "max_tokens": st.integers(1, 4096),
    "stop": st.lists(texts, max_size=3).map(tuple),
    "json_schema": schemas,
    "schema_name": texts,
}


@settings(suppress_health_check=[HealthCheck.filter_too_much])
@given(request=requests, data=st.data())
def test_any_change_to_what_decides_the_answer_changes_the_key(request: CompletionRequest, data: Any) -> None:
    change = data.draw(st.sampled_from([*FIELD_VALUES, "content", "role", "provider", "model"]))
    provider, model = "lmstudio>embedded", "qwen>smollm2"
    changed = request
    if change in FIELD_VALUES:
        value = data.draw(FIELD_VALUES[change])
        assume(value != getattr(request, change))
        changed = request.model_copy(update={change: value})
    elif change in ("content", "role"):
        index = data.draw(st.integers(0, len(request.messages) - 1))
        old = request.messages[index]
        if change == "content":
            new = Message(role=old.role, content=data.draw(texts.filter(lambda t: t != old.content)))
        else:
            new = Message(
                role=data.draw(st.sampled_from(["system", "user", "assistant"])), content=old.content
            )
            assume(new.role != old.role)
        changed_messages = list(request.messages)
        changed_messages[index] = new
        changed = request.model_copy(update={"messages": tuple(changed_messages)})
    elif change == "provider":
        provider = data.draw(texts.filter(lambda t: t != "lmstudio>embedded"))
    else:
        model = data.draw(texts.filter(lambda t: t != "qwen>smollm2"))
    assert cache_key(changed, provider=provider, model=model) != cache_key(
        request, provider="lmstudio>embedded", model="qwen>smollm2"
    )


def test_a_colon_in_a_name_cannot_make_two_chains_share_a_key() -> None:
    request = ask()
    assert cache_key(request, provider="a:b", model="c") != cache_key(request, provider="a", model="b:c")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_v1_key_is_the_documented_format() -> None:
    request = CompletionRequest(
        messages=(Message(role="system", content="Só JSON"), Message(role="user", content="go")),
        temperature=0.0,
        seed=0,
        max_tokens=600,
        stop=("\n\n",),
        json_schema={"type": "object", "a": [1]},
    )
    messages_json = '[{"content":"Só JSON","role":"system"},{"content":"go","role":"user"}]'
    params_json = (
        '{"json_schema":{"a":[1],"type":"object"},"max_tokens":600,"schema_name":"output",'
        '"seed":0,"stop":["\\n\\n"],"temperature":0.0,"top_p":1.0}'
    )
    expected = f"v1:embedded:smollm2:{sha(messages_json)}:{sha(params_json)}"
    assert cache_key(request, provider="embedded", model="smollm2") == expected


def test_legacy_key_is_the_roadmap_format_named_v0() -> None:
    request = CompletionRequest(
        messages=(Message(role="system", content="Só"), Message(role="user", content="go")),
        temperature=0.5,
    )
    params_json = (
        '{"json_schema":null,"max_tokens":512,"schema_name":"output","seed":null,"stop":[],'
        '"temperature":0.5,"top_p":1.0}'
    )
    assert (
        legacy_cache_key(request, provider="lmstudio")
        == f"v0:lmstudio:{sha('Só' + chr(10) + 'go')}:{sha(params_json)}"
    )
    assert legacy_cache_key(request, provider="").startswith("v0:active:")


def test_chain_identity_names_every_provider_and_model_in_order() -> None:
    a = ScriptedProvider(echo, name="lmstudio", model="qwen")
    b = ScriptedProvider(echo, name="embedded", model="smollm2")
    assert chain_identity([a, b]) == ("lmstudio>embedded", "qwen>smollm2")


# -- hits, misses, validation -------------------------------------------------------------------


async def test_repeated_request_is_answered_from_the_cache() -> None:
    cached, provider = build(memory_store())
    first = await cached.generate(ask("a"))
    second = await cached.generate(ask("a", component="plot", attempt=2))
    assert provider.calls == 1
    assert (first.cached, second.cached) == (False, True)
    assert second.text == first.text == "answer to a"
    assert second.provider == "embedded"
    await cached.generate(ask("b"))
    assert provider.calls == 2


async def test_a_check_that_fails_stores_nothing() -> None:
    store = memory_store()
    cached, _ = build(store)
    with pytest.raises(SchemaValidationError):
        await cached.generate(ask("a"), reject)
    assert store.memory_size == 0
    # An inner generator that does not apply the check itself: Cached still keeps it out.
    lax, lax_provider = build(store, apply_check=False)
    await lax.generate(ask("a"), reject)
    await lax.generate(ask("a"), reject)
    assert lax_provider.calls == 2
    assert store.memory_size == 0


@pytest.mark.parametrize(
    "reply",
    [
        Completion(text="  \n", finish_reason="stop", model="smollm2", provider="embedded"),
        Completion(text='{"beats": [', finish_reason="length", model="smollm2", provider="embedded"),
    ],
    ids=["empty", "truncated"],
)
async def test_empty_or_truncated_output_is_not_stored(reply: Completion) -> None:
    store = memory_store()
    cached, provider = build(store, lambda _request: reply)
    await cached.generate(ask())
    await cached.generate(ask())
    assert provider.calls == 2
    assert store.memory_size == 0


async def test_a_cached_entry_that_now_fails_its_check_is_not_served(tmp_path: Path) -> None:
    store = sqlite_cache(tmp_path / "c.sqlite3", ttl_seconds=3600, memory_entries=8)
    cached, provider = build(store, lambda r: "not json" if provider.calls == 1 else '{"ok": true}')
    await cached.generate(ask())

    def needs_json(completion: Completion) -> None:
        json.loads(completion.text)

    answer = await cached.generate(ask(), needs_json)
    assert answer.text == '{"ok": true}' and not answer.cached
    assert provider.calls == 2
    again = await cached.generate(ask(), needs_json)
    assert again.cached and again.text == '{"ok": true}'
    assert provider.calls == 2
    await store.aclose()


async def test_hits_and_misses_are_counted_per_component(tmp_path: Path) -> None:
    store = sqlite_cache(tmp_path / "c.sqlite3", ttl_seconds=3600, memory_entries=8)
    cached, _ = build(store)
    await cached.generate(ask("a", component="plot"))
    await cached.generate(ask("a", component="plot"))
    await cached.generate(ask("a", component="plot"))
    await cached.generate(ask("b", component="scene"))
    await store.aclose()
    assert (store.session_counters["plot"].hits, store.session_counters["plot"].misses) == (2, 1)
    db = SqliteEntries(tmp_path / "c.sqlite3")
    stats = db.stats()
    db.close()
    assert (stats.hits, stats.misses, stats.entries) == (2, 2, 2)
    assert (stats.components["scene"].hits, stats.components["scene"].misses) == (0, 1)
    assert stats.hit_rate == pytest.approx(0.5)


async def test_many_coroutines_share_one_cache(tmp_path: Path) -> None:
    store = sqlite_cache(tmp_path / "c.sqlite3", ttl_seconds=3600, memory_entries=4)
    provider = ScriptedProvider(echo, name="embedded", model="smollm2", latency=0.001)
    cached = Cached(CheckedProvider(provider), store, provider_id="embedded", model="smollm2")
    prompts = [f"scene {i % 10}" for i in range(40)]
    first = await asyncio.gather(*(cached.generate(ask(p)) for p in prompts))
    assert [c.text for c in first] == [f"answer to {p}" for p in prompts]
    calls = provider.calls
    second = await asyncio.gather(*(cached.generate(ask(p)) for p in prompts))
    assert [c.text for c in second] == [f"answer to {p}" for p in prompts]
    assert all(c.cached for c in second) and provider.calls == calls
    await store.aclose()


# -- creative calls -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "seed_only", "expected_calls"),
    [
        ({"stage": "freeform", "temperature": 0.8}, True, 2),
        ({"stage": "freeform", "temperature": 0.8, "seed": 7}, True, 1),
        ({"stage": "freeform", "temperature": 0.0}, True, 1),
        ({"stage": "structuring", "temperature": 0.3}, True, 1),
        ({"stage": "freeform", "temperature": 0.8}, False, 1),
    ],
    ids=["creative-unseeded", "creative-seeded", "freeform-greedy", "structuring", "creative-config-off"],
)
async def test_creative_calls_are_cached_only_with_a_seed(
    fields: dict[str, Any], seed_only: bool, expected_calls: int
) -> None:
    cached, provider = build(memory_store(), cache_creative_with_seed_only=seed_only)
    await cached.generate(ask(**fields))
    await cached.generate(ask(**fields))
    assert provider.calls == expected_calls


def test_from_settings_takes_the_configured_switches() -> None:
    options = CacheSettings(cache_creative_with_seed_only=False, legacy_keys=False)
    cached = Cached.from_settings(
        CheckedProvider(ScriptedProvider(echo)), memory_store(), options, provider_id="p", model="m"
    )
    assert (cached.cache_creative_with_seed_only, cached.legacy_keys) == (False, False)


# -- tiers: TTL, LRU, persistence ---------------------------------------------------------------


@pytest.mark.parametrize("tier", ["memory", "disk"])
async def test_expired_entries_are_not_served(tier: str, tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "c.sqlite3" if tier == "disk" else None
    store = sqlite_cache(path, ttl_seconds=60, memory_entries=8 if tier == "memory" else 0, clock=clock)
    cached, provider = build(store)
    await cached.generate(ask())
    clock.now += 59
    assert (await cached.generate(ask())).cached
    clock.now += 2
    assert not (await cached.generate(ask())).cached
    assert provider.calls == 2
    await store.aclose()


async def test_memory_tier_is_bounded_and_evicts_the_least_recently_used() -> None:
    store = memory_store(entries=2)
    cached, provider = build(store)
    await cached.generate(ask("a"))
    await cached.generate(ask("b"))
    await cached.generate(ask("a"))  # a is now the most recently used
    await cached.generate(ask("c"))  # evicts b
    assert store.memory_size == 2
    assert provider.calls == 3
    assert (await cached.generate(ask("a"))).cached
    assert (await cached.generate(ask("c"))).cached
    assert not (await cached.generate(ask("b"))).cached
    assert provider.calls == 4


async def test_entries_persist_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "cache.sqlite3"
    first = sqlite_cache(path, ttl_seconds=3600, memory_entries=8)
    cached, provider = build(first)
    await cached.generate(ask("a"))
    await first.aclose()

    second = sqlite_cache(path, ttl_seconds=3600, memory_entries=8)
    cached, provider = build(second)
    answer = await cached.generate(ask("a"))
    assert answer.cached and answer.text == "answer to a" and answer.provider == "embedded"
    assert provider.calls == 0
    await second.aclose()


def _write_entries(path: str, worker: int, count: int, barrier: Any) -> None:
    async def write() -> bool:
        store = sqlite_cache(Path(path), ttl_seconds=3600, memory_entries=0)
        barrier.wait()
        for i in range(count):
            completion = Completion(text=f"w{worker}-{i}", finish_reason="stop", model="m", provider="p")
            await store.record("scene", hit=False)
            await store.put(f"v1:w{worker}:{i}", completion, "scene")
        ok = store.persistent
        await store.aclose()
        return ok

    raise SystemExit(0 if asyncio.run(write()) else 1)


def test_two_processes_write_at_once(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_write_entries, args=(str(path), w, 40, barrier)) for w in (1, 2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=180)
    assert [w.exitcode for w in workers] == [0, 0]
    db = SqliteEntries(path)
    stats = db.stats()
    rows = [db.get(f"v1:w{w}:{i}") for w in (1, 2) for i in range(40)]
    db.close()
    assert stats.entries == 80 and stats.misses == 80
    assert [Completion.model_validate_json(r[0]).text for r in rows if r] == [
        f"w{w}-{i}" for w in (1, 2) for i in range(40)
    ]


# -- robustness ---------------------------------------------------------------------------------


async def test_a_corrupt_file_means_one_warning_and_uncached_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "cache.sqlite3"
    garbage = bytes(range(256)) * 64
    path.write_bytes(garbage)
    store = sqlite_cache(path, ttl_seconds=3600, memory_entries=0, busy_timeout_s=0.2)
    cached, provider = build(store)
    answers = [await cached.generate(ask(p)) for p in ("a", "b", "a")]
    assert [a.text for a in answers] == ["answer to a", "answer to b", "answer to a"]
    assert provider.calls == 3
    assert len(warnings_from_storyengine(caplog)) == 1
    assert "cache.sqlite3" in caplog.text
    assert path.read_bytes() == garbage
    assert not store.persistent


async def test_a_locked_file_means_one_warning_and_answers_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "cache.sqlite3"
    setup = sqlite_cache(path, ttl_seconds=3600, memory_entries=0)
    await build(setup)[0].generate(ask("a"))
    await setup.aclose()

    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        store = sqlite_cache(path, ttl_seconds=3600, memory_entries=0, busy_timeout_s=0.2)
        cached, provider = build(store)
        answers = await asyncio.gather(*(cached.generate(ask(p)) for p in ("a", "b", "c")))
        assert [a.text for a in answers] == ["answer to a", "answer to b", "answer to c"]
        assert provider.calls == 3
        assert len(warnings_from_storyengine(caplog)) == 1
        assert "locked" in caplog.text
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    reopened = sqlite_cache(path, ttl_seconds=3600, memory_entries=0)
    assert (await build(reopened)[0].generate(ask("a"))).cached
    await reopened.aclose()


# -- legacy keys --------------------------------------------------------------------------------


async def seed_legacy(store: ResponseCache, request: CompletionRequest, text: str) -> str:
    old_key = legacy_cache_key(request, provider="embedded")
    completion = Completion(text=text, finish_reason="stop", model="smollm2", provider="embedded")
    await store.put(old_key, completion, request.component)
    store.clear_memory()
    return old_key


async def test_a_legacy_entry_is_served_once_and_moved_to_the_v1_key(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    store = sqlite_cache(path, ttl_seconds=3600, memory_entries=8)
    cached, provider = build(store)
    old_key = await seed_legacy(store, ask("a"), "from the old release")
    answer = await cached.generate(ask("a"))
    assert answer.cached and answer.text == "from the old release"
    assert provider.calls == 0
    await store.aclose()
    db = SqliteEntries(path)
    moved, legacy = db.get(cached.key(ask("a"))), db.get(old_key)
    db.close()
    assert legacy is None
    assert moved is not None and json.loads(moved[0])["text"] == "from the old release"


async def test_legacy_keys_can_be_switched_off() -> None:
    store = memory_store()
    cached, provider = build(store, legacy_keys=False)
    await seed_legacy(store, ask("a"), "from the old release")
    answer = await cached.generate(ask("a"))
    assert answer.text == "answer to a" and not answer.cached
    assert provider.calls == 1


async def test_an_invalid_legacy_entry_is_dropped_not_served() -> None:
    store = memory_store()
    cached, provider = build(store)
    old_key = await seed_legacy(store, ask("a"), "stale")
    answer = await cached.generate(ask("a"), reject_text("stale"))
    assert answer.text == "answer to a" and provider.calls == 1
    assert await store.get(old_key) is None


def reject_text(bad: str) -> Check:
    def check(completion: Completion) -> None:
        if completion.text == bad:
            raise SchemaValidationError("rejected", raw_text=completion.text)

    return check
