"""Fault injection through the real OpenAICompatProvider, the router, retry and fallback.

Each fault is played by a local server on 127.0.0.1 (tests/faulty_server.py) or an
httpx.MockTransport. Every test asserts how the call ended (recovered by retry, by
fallback, or a structured error) and that nothing invalid reached the caller.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from faulty_server import (
    DEFAULT_ANSWER,
    TRIAL_REQUEST,
    FaultyServer,
    Title,
    Trial,
    check_title,
    completion_body,
    run_trial,
    trial_settings,
)
from storyengine.errors import (
    AllProvidersFailed,
    AuthenticationError,
    BadResponse,
    ProviderHTTPError,
    SchemaValidationError,
)
from storyengine.providers.openai_compat import OpenAICompatProvider
from storyengine.routing.instrument import RunRecorder
from storyengine.routing.retry import JSON_CLAMP
from storyengine.routing.router import Router


def assert_valid(trial: Trial) -> None:
    """The caller got a completion, and it is a usable, schema-valid answer."""
    assert trial.error is None, trial.error
    assert trial.completion is not None
    assert trial.completion.finish_reason == "stop"
    check_title(trial.completion)
    assert Title.model_validate_json(trial.completion.text).title == "The Lighthouse"


def outcomes(trial: Trial) -> list[tuple[str, str]]:
    return [(r.provider, r.outcome) for r in trial.records]


@pytest.fixture
def servers() -> Iterator[list[FaultyServer]]:
    started: list[FaultyServer] = []
    yield started
    for server in started:
        server.stop()


def serve(servers: list[FaultyServer], script: list[str], **kwargs: object) -> FaultyServer:
    server = FaultyServer(script, **kwargs).start()  # type: ignore[arg-type]
    servers.append(server)
    return server


# (fault, the error its attempt is recorded with, whether the retry waits for a backoff)
TRANSIENT = [
    ("500", "ProviderHTTPError", True),
    ("429", "RateLimited", True),
    ("reset", "ProviderUnavailable", True),
    ("empty", "BadResponse", True),
    ("garbage", "BadResponse", True),
    ("truncated_json", "BadResponse", True),
    ("cut_body", "ProviderUnavailable", True),
    ("length", "TruncatedOutput", False),
    ("empty_content", "EmptyOutput", False),
    ("prose", "SchemaValidationError", False),
    ("bad_utf8", "BadResponse", True),
]


@pytest.mark.parametrize(("fault", "error", "waits"), TRANSIENT, ids=[t[0] for t in TRANSIENT])
async def test_a_transient_fault_is_recovered_by_retry(
    servers: list[FaultyServer], fault: str, error: str, waits: bool
) -> None:
    server = serve(servers, [fault])
    trial = await run_trial({"a": server.base_url}, ["a"])
    assert_valid(trial)
    assert server.served == [fault, "ok"]
    assert outcomes(trial) == [("a", "retry"), ("a", "ok"), ("a", "ok")]
    assert (trial.attempts[0].error or "").startswith(error)
    assert [r.attempt for r in trial.attempts] == [1, 2]
    assert len(trial.sleeps) == (1 if waits else 0)


async def test_a_hang_past_the_timeout_is_recovered_by_retry(servers: list[FaultyServer]) -> None:
    server = serve(servers, ["hang"], hang_s=30)
    trial = await run_trial({"a": server.base_url}, ["a"], timeout=0.5)
    assert_valid(trial)
    assert server.served == ["hang", "ok"]
    assert (trial.attempts[0].error or "").startswith("ProviderTimeout")


async def test_a_slow_but_timely_answer_needs_no_retry(servers: list[FaultyServer]) -> None:
    server = serve(servers, ["slow"], delay_s=0.3)
    trial = await run_trial({"a": server.base_url}, ["a"], timeout=30)
    assert_valid(trial)
    assert server.served == ["slow"]
    assert outcomes(trial) == [("a", "ok"), ("a", "ok")]


async def test_retry_after_from_the_server_sets_the_wait(servers: list[FaultyServer]) -> None:
    server = serve(servers, ["429", "429"], retry_after="3")
    trial = await run_trial({"a": server.base_url}, ["a"])
    assert_valid(trial)
    assert trial.sleeps == [3.0, 3.0]


async def test_a_truncated_answer_is_asked_again_with_twice_the_max_tokens(
    servers: list[FaultyServer],
) -> None:
    server = serve(servers, ["length"])
    trial = await run_trial({"a": server.base_url}, ["a"])
    assert_valid(trial)
    assert [body["max_tokens"] for body in server.bodies] == [64, 128]


async def test_prose_instead_of_json_is_asked_again_colder_and_clamped(servers: list[FaultyServer]) -> None:
    server = serve(servers, ["prose", "empty_content"])
    trial = await run_trial({"a": server.base_url}, ["a"])
    assert_valid(trial)
    assert [body["temperature"] for body in server.bodies] == [0.3, 0.2, 0.0]
    first, second, _ = (body["messages"][0]["content"] for body in server.bodies)
    assert not first.startswith(JSON_CLAMP) and second.startswith(JSON_CLAMP)


# (fault, attempts spent on the failing provider before the fallback)
PERSISTENT = [
    ("500", 3), ("429", 3), ("reset", 3), ("garbage", 3), ("truncated_json", 3), ("length", 3),
    ("empty_content", 3), ("prose", 3), ("401", 1), ("bad_utf8", 3), ("html_502", 3), ("tool_calls", 1),
]  # fmt: skip


@pytest.mark.parametrize(("fault", "spent"), PERSISTENT, ids=[p[0] for p in PERSISTENT])
async def test_a_persistent_fault_is_recovered_by_fallback(
    servers: list[FaultyServer], fault: str, spent: int
) -> None:
    broken = serve(servers, [], then=fault)
    healthy = serve(servers, [])
    trial = await run_trial({"a": broken.base_url, "b": healthy.base_url}, ["a", "b"])
    assert_valid(trial)
    assert trial.completion is not None and trial.completion.provider == "b"
    assert broken.requests == spent and healthy.requests == 1
    assert [r.provider for r in trial.switches] == ["a"]
    assert "switching to b" in (trial.switches[0].error or "")
    assert outcomes(trial)[-2:] == [("b", "ok"), ("b", "ok")]


async def test_a_refused_connection_falls_back(servers: list[FaultyServer]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    healthy = serve(servers, [])
    trial = await run_trial({"a": f"http://127.0.0.1:{closed_port}/v1", "b": healthy.base_url}, ["a", "b"])
    assert_valid(trial)
    assert [r.outcome for r in trial.attempts if r.provider == "a"] == ["retry", "retry", "error"]
    assert all((r.error or "").startswith("ProviderUnavailable") for r in trial.attempts if r.provider == "a")


async def test_when_every_provider_fails_the_caller_gets_each_failure(servers: list[FaultyServer]) -> None:
    a = serve(servers, [], then="500")
    b = serve(servers, [], then="prose")
    trial = await run_trial({"a": a.base_url, "b": b.base_url}, ["a", "b"], attempts=2)
    assert trial.completion is None
    assert isinstance(trial.error, AllProvidersFailed)
    (name_a, error_a), (name_b, error_b) = trial.error.failures
    assert (name_a, name_b) == ("a", "b")
    assert isinstance(error_a, ProviderHTTPError) and error_a.status == 500
    assert isinstance(error_b, SchemaValidationError) and "Sure!" in error_b.raw_text
    assert (a.requests, b.requests) == (2, 2)
    assert outcomes(trial)[-2:] == [("b", "invalid"), ("b", "error")]


async def test_a_single_provider_that_keeps_failing_raises_its_own_error(servers: list[FaultyServer]) -> None:
    server = serve(servers, [], then="garbage")
    trial = await run_trial({"a": server.base_url}, ["a"])
    assert trial.completion is None
    assert isinstance(trial.error, BadResponse) and "not JSON" in str(trial.error)
    assert server.requests == 3
    assert [r.outcome for r in trial.records] == ["retry", "retry", "error", "error"]


async def test_a_bad_api_key_is_not_retried(servers: list[FaultyServer]) -> None:
    server = serve(servers, [], then="401")
    trial = await run_trial({"a": server.base_url}, ["a"])
    assert isinstance(trial.error, AuthenticationError)
    assert server.requests == 1 and trial.sleeps == []


# -- the httpx transport seam --


def mock_router(handler: httpx.MockTransport, sleeps: list[float]) -> Router:
    settings = trial_settings({"a": "http://127.0.0.1:1/v1"}, ["a"])
    provider = OpenAICompatProvider("a", settings.providers["a"], transport=handler)  # type: ignore[arg-type]

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return Router(settings, {"a": provider}, sleep=sleep)


async def test_an_http_date_retry_after_is_honoured() -> None:
    calls: list[int] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            when = format_datetime(datetime.now(UTC) + timedelta(seconds=10), usegmt=True)
            return httpx.Response(429, headers={"Retry-After": when}, json={"error": "slow down"})
        return httpx.Response(200, json=completion_body(DEFAULT_ANSWER))

    sleeps: list[float] = []
    router = mock_router(httpx.MockTransport(handle), sleeps)
    completion = await router.generate(TRIAL_REQUEST, check=check_title)
    await router.aclose()
    check_title(completion)
    assert len(sleeps) == 1 and 5.0 < sleeps[0] <= 10.0


async def test_transport_errors_from_the_seam_are_retried_and_recorded() -> None:
    errors = [httpx.ConnectError("connection refused"), httpx.ReadTimeout("read timed out")]

    def handle(request: httpx.Request) -> httpx.Response:
        if errors:
            raise errors.pop(0)
        return httpx.Response(200, json=completion_body(DEFAULT_ANSWER))

    sleeps: list[float] = []
    router = mock_router(httpx.MockTransport(handle), sleeps)
    recorder = RunRecorder("seam")
    with recorder.active():
        completion = await router.generate(TRIAL_REQUEST, check=check_title)
    await router.aclose()
    check_title(completion)
    assert [(r.kind, (r.error or "").split(":")[0]) for r in recorder.records] == [
        ("attempt", "ProviderUnavailable"),
        ("attempt", "ProviderTimeout"),
        ("attempt", ""),
        ("call", ""),
    ]
    assert len(sleeps) == 2


async def test_a_client_error_is_raised_at_once_with_the_servers_reason() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": {"message": "response_format is not supported"}})

    sleeps: list[float] = []
    router = mock_router(httpx.MockTransport(handle), sleeps)
    with pytest.raises(ProviderHTTPError) as raised:
        await router.generate(TRIAL_REQUEST, check=check_title)
    await router.aclose()
    assert raised.value.status == 400 and "response_format is not supported" in str(raised.value)
    assert sleeps == []
