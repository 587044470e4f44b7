"""The circuit breaker (routing/breaker.py): trips after failures in a row, fails fast while open,
probes once after the cooldown, is shared per provider across components, and ignores answers
that arrived but were unusable."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from faulty_server import DEFAULT_ANSWER, TRIAL_REQUEST, FaultyServer, check_title, trial_settings
from storyengine.errors import (
    AllProvidersFailed,
    ProviderDown,
    ProviderHTTPError,
    ProviderUnavailable,
    SchemaValidationError,
)
from storyengine.providers.registry import build_providers
from storyengine.providers.scripted import ScriptedProvider
from storyengine.routing.breaker import Breaker, BreakerState
from storyengine.routing.instrument import RunRecorder
from storyengine.routing.retry import Retrying
from storyengine.routing.router import Router
from storyengine.types import CompletionRequest


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Replies:
    """A script: the next reply each call (an exception to raise, or text)."""

    def __init__(self, *replies: object) -> None:
        self.replies = list(replies)
        self.calls = 0

    def __call__(self, request: CompletionRequest) -> object:
        self.calls += 1
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


def down() -> ProviderUnavailable:
    return ProviderUnavailable("a: cannot reach http://127.0.0.1:9 (connection refused)", provider="a")


def breaker_over(replies: Replies, clock: Clock, failures: int = 3, cooldown: float = 30.0) -> Breaker:
    provider = ScriptedProvider(replies, name="a")  # type: ignore[arg-type]
    retrying = Retrying(provider, attempts=1)
    return Breaker(retrying, BreakerState("a", failures=failures, cooldown=cooldown, clock=clock))


async def test_it_opens_after_failures_in_a_row_and_fails_fast() -> None:
    clock, replies = Clock(), Replies(down())
    breaker = breaker_over(replies, clock)
    for _ in range(3):
        with pytest.raises(ProviderUnavailable) as caught:
            await breaker.generate(TRIAL_REQUEST)
        assert not isinstance(caught.value, ProviderDown)
    assert breaker.state.state == "open"
    with pytest.raises(ProviderDown) as caught:
        await breaker.generate(TRIAL_REQUEST)
    assert replies.calls == 3  # the provider was not asked
    message = str(caught.value)
    assert "marked down until" in message and "UTC" in message and "connection refused" in message
    assert caught.value.until == clock.now + 30.0


async def test_a_success_resets_the_count() -> None:
    clock, replies = Clock(), Replies(down(), down(), DEFAULT_ANSWER, down(), down(), DEFAULT_ANSWER)
    breaker = breaker_over(replies, clock)
    for _ in range(6):
        try:
            await breaker.generate(TRIAL_REQUEST)
        except ProviderUnavailable:
            pass
    assert breaker.state.state == "closed" and replies.calls == 6


async def test_unusable_answers_never_trip_it() -> None:
    clock, replies = Clock(), Replies("Sure! Here is prose, not JSON.")
    breaker = breaker_over(replies, clock, failures=2)
    for _ in range(5):
        with pytest.raises(SchemaValidationError):
            await breaker.generate(TRIAL_REQUEST, check=check_title)
    assert breaker.state.state == "closed" and replies.calls == 5


async def test_after_the_cooldown_one_probe_closes_it_when_it_succeeds() -> None:
    clock, replies = Clock(), Replies(down(), down(), DEFAULT_ANSWER)
    breaker = breaker_over(replies, clock, failures=2, cooldown=10)
    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            await breaker.generate(TRIAL_REQUEST)
    clock.now += 9.9
    with pytest.raises(ProviderDown):
        await breaker.generate(TRIAL_REQUEST)
    clock.now += 0.2
    assert breaker.state.state == "half-open"
    completion = await breaker.generate(TRIAL_REQUEST)
    assert completion.text == DEFAULT_ANSWER
    assert breaker.state.state == "closed" and replies.calls == 3


async def test_a_failed_probe_opens_it_for_another_cooldown() -> None:
    clock, replies = Clock(), Replies(down())
    breaker = breaker_over(replies, clock, failures=2, cooldown=10)
    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            await breaker.generate(TRIAL_REQUEST)
    clock.now += 11
    with pytest.raises(ProviderUnavailable) as caught:
        await breaker.generate(TRIAL_REQUEST)  # the probe: one call, it fails
    assert not isinstance(caught.value, ProviderDown)
    assert replies.calls == 3 and breaker.state.state == "open"
    assert breaker.state.open_until == clock.now + 10
    with pytest.raises(ProviderDown):
        await breaker.generate(TRIAL_REQUEST)
    assert replies.calls == 3


async def test_while_half_open_only_one_call_probes() -> None:
    clock = Clock()
    gate = asyncio.Event()
    calls = 0

    async def slow_ok(request: CompletionRequest) -> str:
        nonlocal calls
        calls += 1
        await gate.wait()
        return DEFAULT_ANSWER

    provider = ScriptedProvider(slow_ok, name="a")
    state = BreakerState("a", failures=1, cooldown=5, clock=clock)
    state.failed(down(), probe=False)
    clock.now += 6
    breaker = Breaker(Retrying(provider, attempts=1), state)
    probe = asyncio.create_task(breaker.generate(TRIAL_REQUEST))
    await asyncio.sleep(0)
    with pytest.raises(ProviderDown):
        await breaker.generate(TRIAL_REQUEST)
    gate.set()
    assert (await probe).text == DEFAULT_ANSWER
    assert calls == 1 and state.state == "closed"


def test_the_trip_and_the_recovery_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    state = BreakerState("lmstudio", failures=1, cooldown=5, clock=clock)
    with caplog.at_level(logging.WARNING, logger="storyengine"):
        state.failed(down(), probe=False)
        clock.now += 6
        assert state.admit() == "probe"
        state.succeeded(probe=True)
    text = caplog.text
    assert "provider lmstudio marked down for 5s until" in text
    assert "probing it" in text and "provider lmstudio answers again" in text


# -- in the router: shared per provider, the fallback moves on at once --


@pytest.fixture
def servers() -> Iterator[list[FaultyServer]]:
    started: list[FaultyServer] = []
    yield started
    for server in started:
        server.stop()


async def test_a_tripped_provider_is_skipped_by_every_component(servers: list[FaultyServer]) -> None:
    broken = FaultyServer([], then="500").start()
    healthy = FaultyServer([]).start()
    servers += [broken, healthy]
    settings = trial_settings(
        {"a": broken.base_url, "b": healthy.base_url}, ["a", "b"], attempts=2, breaker_failures=2
    )
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    router = Router(settings, build_providers(settings), sleep=sleep)
    recorder = RunRecorder("breaker")
    try:
        with recorder.active():
            for component in ("plot", "scene"):  # two calls, 2 attempts each on a, then b answers
                request = TRIAL_REQUEST.model_copy(update={"component": component})
                check_title(await router.generate(request, check=check_title))
            assert broken.requests == 4
            for component in ("dialogue", "evaluation", "enhancement", "plot"):
                request = TRIAL_REQUEST.model_copy(update={"component": component})
                check_title(await router.generate(request, check=check_title))
    finally:
        await router.aclose()
    assert broken.requests == 4  # never asked again while marked down, whichever component
    assert len(sleeps) == 2  # no backoff spent on it either
    switches = [r for r in recorder.records if r.kind == "switch"]
    assert len(switches) == 6
    assert all(
        "ProviderDown" in (r.error or "") and "marked down until" in (r.error or "") for r in switches[2:]
    )


async def test_a_single_provider_chain_fails_fast_with_the_reason(servers: list[FaultyServer]) -> None:
    broken = FaultyServer([], then="500").start()
    servers.append(broken)
    settings = trial_settings({"a": broken.base_url}, ["a"], attempts=1, breaker_failures=1)
    router = Router(settings, build_providers(settings))
    try:
        with pytest.raises(ProviderHTTPError):
            await router.generate(TRIAL_REQUEST, check=check_title)
        with pytest.raises(ProviderDown) as caught:
            await router.generate(TRIAL_REQUEST, check=check_title)
    finally:
        await router.aclose()
    assert broken.requests == 1
    assert "HTTP 500" in str(caught.value)


async def test_routers_over_one_provider_object_share_its_breaker(servers: list[FaultyServer]) -> None:
    broken = FaultyServer([], then="500").start()
    servers.append(broken)
    settings = trial_settings({"a": broken.base_url}, ["a"], attempts=1, breaker_failures=2)
    providers = build_providers(settings)
    first, second = Router(settings, providers), Router(settings, providers)
    try:
        with pytest.raises(ProviderHTTPError):
            await first.generate(TRIAL_REQUEST)
        with pytest.raises(ProviderHTTPError):
            await second.generate(TRIAL_REQUEST)
        with pytest.raises(ProviderDown):
            await first.generate(TRIAL_REQUEST)
    finally:
        await first.aclose()
    assert broken.requests == 2


async def test_every_provider_down_is_still_all_providers_failed(servers: list[FaultyServer]) -> None:
    a, b = FaultyServer([], then="500").start(), FaultyServer([], then="500").start()
    servers += [a, b]
    settings = trial_settings({"a": a.base_url, "b": b.base_url}, ["a", "b"], attempts=1, breaker_failures=1)
    router = Router(settings, build_providers(settings))
    try:
        for _ in range(2):
            with pytest.raises(AllProvidersFailed) as caught:
                await router.generate(TRIAL_REQUEST)
    finally:
        await router.aclose()
    assert (a.requests, b.requests) == (1, 1)
    assert all(isinstance(error, ProviderDown) for _, error in caught.value.failures)
