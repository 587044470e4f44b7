"""Answers from servers that must not be trusted as they come (issue 24, items 1-4).

Corrupt bytes are refused, not patched and cached; a Retry-After longer than the retry layer may
wait moves a chain on at once; usage counts that are no counts are estimated; and each message
names the real cause and a fix that works. The servers are tests/faulty_server.py or an
httpx.MockTransport.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest

from faulty_server import (
    DEFAULT_ANSWER,
    TRIAL_REQUEST,
    FaultyServer,
    Title,
    check_title,
    completion_body,
    run_trial,
    trial_settings,
)
from storyengine.errors import (
    BadResponse,
    EmptyOutput,
    ProviderBusy,
    ProviderDown,
    ProviderHTTPError,
    ProviderUnavailable,
    RateLimited,
)
from storyengine.providers.base import Provider, estimate_tokens
from storyengine.providers.openai_compat import OpenAICompatProvider, parse_retry_after
from storyengine.providers.registry import build_providers
from storyengine.routing.base import Generator
from storyengine.routing.breaker import BreakerState
from storyengine.routing.cache import Cached, chain_identity
from storyengine.routing.cache_store import ResponseCache
from storyengine.routing.instrument import RunRecorder
from storyengine.routing.router import Router
from storyengine.types import Completion


@pytest.fixture
def servers() -> Iterator[list[FaultyServer]]:
    started: list[FaultyServer] = []
    yield started
    for server in started:
        server.stop()


def serve(servers: list[FaultyServer], script: list[str], **kwargs: Any) -> FaultyServer:
    server = FaultyServer(script, **kwargs).start()
    servers.append(server)
    return server


def the_lighthouse(completion: Completion | None) -> None:
    """A completion that is the server's answer exactly as it was sent: nothing replaced."""
    assert completion is not None
    check_title(completion)
    assert Title.model_validate_json(completion.text).title == "The Lighthouse"
    assert "\ufffd" not in completion.text


def mock_provider(handler: Any, **changes: Any) -> OpenAICompatProvider:
    settings = trial_settings({"a": "http://127.0.0.1:9/v1"}, ["a"]).providers["a"]
    entry = settings.model_copy(update=changes)
    return OpenAICompatProvider("a", entry, transport=httpx.MockTransport(handler))  # type: ignore[arg-type]


def answering(body: bytes | dict[str, Any], status: int = 200) -> Any:
    def handle(request: httpx.Request) -> httpx.Response:
        if isinstance(body, bytes):
            return httpx.Response(status, content=body, headers={"Content-Type": "application/json"})
        return httpx.Response(status, json=body)

    return handle


# -- 1. invalid UTF-8 is refused, so nothing corrupt is validated or cached --


async def test_invalid_utf8_is_a_bad_response_not_text_with_replacement_characters() -> None:
    body = json.dumps(completion_body('{"title": "The Light@@house", "mood": "calm"}')).encode()
    provider = mock_provider(answering(body.replace(b"@@", b"\xe2\x80(\xff")))
    with pytest.raises(BadResponse) as caught:
        await provider.complete(TRIAL_REQUEST)
    await provider.aclose()
    message = str(caught.value)
    assert "not valid utf-8 text" in message and "refused" in message
    assert caught.value.retryable


async def test_invalid_utf8_is_retried_then_the_next_provider_asked_and_only_its_answer_cached(
    servers: list[FaultyServer],
) -> None:
    corrupt = serve(servers, [], then="bad_utf8")
    healthy = serve(servers, [])
    settings = trial_settings({"a": corrupt.base_url, "b": healthy.base_url}, ["a", "b"])
    store = ResponseCache(None, ttl_seconds=3600, memory_entries=8)

    def cache(inner: Generator, chain: Sequence[Provider]) -> Generator:
        provider_id, model = chain_identity(chain)
        return Cached(inner, store, provider_id=provider_id, model=model)

    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    router = Router(settings, build_providers(settings), cache=cache, sleep=sleep)
    recorder = RunRecorder("utf8")
    try:
        with recorder.active():
            first = await router.generate(TRIAL_REQUEST, check=check_title)
        again = await router.generate(TRIAL_REQUEST, check=check_title)
    finally:
        await router.aclose()
    the_lighthouse(first)
    assert first.provider == "b" and corrupt.requests == 3 and healthy.requests == 1
    refused = [r for r in recorder.records if r.kind == "attempt" and r.provider == "a"]
    assert [(r.error or "").split(":")[0] for r in refused] == ["BadResponse"] * 3
    # What the cache kept is the healthy provider's answer, served again without asking anyone.
    the_lighthouse(again)
    assert again.cached and again.provider == "b" and store.memory_size == 1
    assert (corrupt.requests, healthy.requests) == (3, 1)


async def test_a_lone_surrogate_in_the_content_is_refused() -> None:
    body = json.dumps(completion_body('{"title": "The Light\ud800house", "mood": "calm"}')).encode()
    assert b"\\ud800" in body  # escaped in the JSON, as a server would send it
    provider = mock_provider(answering(body))
    with pytest.raises(BadResponse, match="lone surrogate"):
        await provider.complete(TRIAL_REQUEST)
    await provider.aclose()


async def test_an_error_page_with_invalid_bytes_is_still_quoted() -> None:
    """Only the answer is decoded strictly: a 500's page with a bad byte still gives its message."""
    body = json.dumps({"error": {"message": "model crashed @@"}}).encode().replace(b"@@", b"\xff")
    provider = mock_provider(answering(body, status=500))
    with pytest.raises(ProviderHTTPError, match="model crashed"):
        await provider.complete(TRIAL_REQUEST)
    await provider.aclose()


# -- 2. a Retry-After longer than backoff_max ends the attempts and opens the breaker that long --


async def test_a_retry_after_longer_than_backoff_max_moves_the_chain_on_without_sleeping(
    servers: list[FaultyServer],
) -> None:
    busy = serve(servers, [], then="429", retry_after="3600")
    healthy = serve(servers, [])
    settings = trial_settings({"a": busy.base_url, "b": healthy.base_url}, ["a", "b"])
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    router = Router(settings, build_providers(settings), sleep=sleep)
    recorder = RunRecorder("busy")
    try:
        with recorder.active():
            first = await router.generate(TRIAL_REQUEST, check=check_title)
            second = await router.generate(TRIAL_REQUEST, check=check_title)
    finally:
        await router.aclose()
    the_lighthouse(first)
    the_lighthouse(second)
    assert first.provider == second.provider == "b"
    assert sleeps == []  # nothing slept on: not 20 s, not 3600 s
    assert busy.requests == 1 and healthy.requests == 2  # the second call skipped a at once
    switches = [r.error or "" for r in recorder.records if r.kind == "switch"]
    assert len(switches) == 2
    assert "backoff_max" in switches[0] and "marked down" in switches[1]


async def test_a_single_provider_asking_for_an_hour_fails_at_once_saying_why(
    servers: list[FaultyServer],
) -> None:
    busy = serve(servers, [], then="429", retry_after="3600")
    trial = await run_trial({"a": busy.base_url}, ["a"])
    assert isinstance(trial.error, ProviderBusy) and isinstance(trial.error, RateLimited)
    assert trial.error.retry_after == 3600.0 and not trial.error.retryable
    message = str(trial.error)
    assert "retry after 3600s" in message and "backoff_max (20s)" in message
    assert "raise retry.backoff_max" in message
    assert busy.requests == 1 and trial.sleeps == []


async def test_a_retry_after_within_backoff_max_is_still_waited_for(servers: list[FaultyServer]) -> None:
    server = serve(servers, ["429"], retry_after="20")
    trial = await run_trial({"a": server.base_url}, ["a"])
    the_lighthouse(trial.completion)
    assert trial.sleeps == [20.0] and server.requests == 2


def test_a_busy_provider_is_marked_down_for_as_long_as_it_asked() -> None:
    now = [1_000_000.0]
    state = BreakerState("a", failures=3, cooldown=60.0, clock=lambda: now[0])
    busy = ProviderBusy("a: HTTP 429", provider="a", retry_after=3600.0)
    state.failed(busy, probe=False)
    assert state.state == "open" and state.open_until == 1_000_000.0 + 3600.0
    state.failed(busy, probe=False)  # a concurrent call that got the same 429: no second trip
    assert state.trips == 1 and state.open_until == 1_000_000.0 + 3600.0
    now[0] += 60.0 + 1  # past the ordinary cooldown: still open
    assert state.admit() is None
    down = state.down_error()
    assert isinstance(down, ProviderDown) and "Retry-After: 3600s" in str(down)
    now[0] = 1_000_000.0 + 3600.0 + 1
    assert state.admit() == "probe"


def test_a_retry_after_beyond_a_day_holds_the_provider_a_day() -> None:
    now = 50.0
    state = BreakerState("a", clock=lambda: now)
    state.failed(ProviderBusy("a: HTTP 429", provider="a", retry_after=1e300), probe=False)
    assert state.open_until == now + 86_400.0
    assert "UTC" in state.until_text()


@pytest.mark.parametrize("value", ["inf", "Infinity", "nan", "-inf"])
def test_a_retry_after_that_is_no_number_of_seconds_is_ignored(value: str) -> None:
    assert parse_retry_after(value) is None


# -- 3. usage counts that are no counts are estimated, never a crash and never a NaN --


@pytest.mark.parametrize("fault", ["nan_usage", "inf_usage"])
async def test_non_finite_usage_is_estimated_and_the_answer_kept(
    servers: list[FaultyServer], fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(servers, [fault])
    with caplog.at_level(logging.WARNING, logger="storyengine"):
        trial = await run_trial({"a": server.base_url}, ["a"])
    the_lighthouse(trial.completion)
    assert trial.completion is not None
    assert server.served == [fault]  # accepted on the first attempt
    assert trial.completion.usage.completion_tokens == estimate_tokens(trial.completion.text)
    prompt = "".join(m.content for m in TRIAL_REQUEST.messages)
    assert trial.completion.usage.prompt_tokens == estimate_tokens(prompt)
    shown = "NaN" if fault == "nan_usage" else "Infinity"
    flagged = [r.getMessage() for r in caplog.records if "usage" in r.getMessage()]
    assert len(flagged) == 1 and f"completion_tokens={shown}" in flagged[0] and "estimated" in flagged[0]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(-3, None), (2.5, None), ("20", None), (True, None), (None, None), (20.0, 20), (7, 7), (0, 0)],
    ids=["negative", "fraction", "string", "bool", "null", "whole-float", "int", "zero"],
)
async def test_only_whole_non_negative_numbers_are_token_counts(value: Any, expected: int | None) -> None:
    body = completion_body(DEFAULT_ANSWER)
    body["usage"] = {"prompt_tokens": 11, "completion_tokens": value}
    provider = mock_provider(answering(body))
    completion = await provider.complete(TRIAL_REQUEST)
    await provider.aclose()
    assert completion.usage.prompt_tokens == 11
    wanted = estimate_tokens(completion.text) if expected is None else expected
    assert completion.usage.completion_tokens == wanted


# -- 4. messages that name the real cause and a fix that works --


async def test_json_in_tool_calls_says_to_use_the_tool_call_mode_and_that_mode_works(
    servers: list[FaultyServer],
) -> None:
    server = serve(servers, [], then="tool_calls")
    trial = await run_trial({"a": server.base_url}, ["a"])
    assert isinstance(trial.error, EmptyOutput)
    message = str(trial.error)
    assert "tool call" in message and "structured_output: tool_call" in message
    assert "lower temperature" not in message
    assert server.requests == 1  # the same request would come back the same way

    # The fix, as the message prints it.
    settings = trial_settings({"a": server.base_url}, ["a"])
    entry = settings.providers["a"].model_copy(update={"structured_output": "tool_call"})
    router = Router(settings, {"a": OpenAICompatProvider("a", entry)})  # type: ignore[arg-type]
    try:
        completion = await router.generate(TRIAL_REQUEST, check=check_title)
    finally:
        await router.aclose()
    the_lighthouse(completion)
    assert "tools" in server.bodies[-1]


async def test_a_connection_cut_mid_answer_says_so_not_cannot_reach(servers: list[FaultyServer]) -> None:
    server = serve(servers, [], then="cut_body")
    trial = await run_trial({"a": server.base_url}, ["a"], attempts=1)
    assert isinstance(trial.error, ProviderUnavailable)
    message = str(trial.error)
    assert "closed the connection mid-answer" in message
    sent = len(json.dumps(completion_body(DEFAULT_ANSWER)))
    assert f"after {sent} of {2 * sent} bytes" in message
    assert "cannot reach" not in message and "is the server running" not in message


async def test_a_proxys_html_502_is_one_clean_line(servers: list[FaultyServer]) -> None:
    server = serve(servers, [], then="html_502")
    trial = await run_trial({"a": server.base_url}, ["a"], attempts=1)
    assert isinstance(trial.error, ProviderHTTPError) and trial.error.status == 502
    message = str(trial.error)
    assert "\n" not in message
    assert "HTTP 502" in message and "an HTML page came back" in message
    assert "“502 Bad Gateway The upstream server did not answer. nginx”" in message
    assert message.count("502 Bad Gateway") == 1 and "check base_url" in message
    assert "<" not in message and "font-family" not in message and "{" not in message


@pytest.mark.parametrize(
    ("page", "shown"),
    [
        (b"<html><head><style>p { color: red }</style></head><body><p>Welcome to nginx!</p></body></html>",
         "Welcome to nginx!"),
        (b"<!doctype html><html><head><title>Service &amp; Gateway</title></head><body></body></html>",
         "Service & Gateway"),
    ],
    ids=["body-text", "title-only"],
)  # fmt: skip
async def test_an_html_page_answered_with_200_is_named_too(page: bytes, shown: str) -> None:
    provider = mock_provider(lambda request: httpx.Response(200, content=page))
    with pytest.raises(BadResponse) as caught:
        await provider.complete(TRIAL_REQUEST)
    await provider.aclose()
    message = str(caught.value)
    assert f"not JSON: an HTML page came back saying “{shown}”" in message
    assert "<" not in message and "color" not in message


async def test_a_content_that_is_a_json_object_is_checked_as_json_text(servers: list[FaultyServer]) -> None:
    server = serve(servers, [], then="object_content")
    trial = await run_trial({"a": server.base_url}, ["a"])
    the_lighthouse(trial.completion)
    assert server.served == ["object_content"]


async def test_a_content_that_is_a_json_array_is_json_text() -> None:
    answer = [{"title": "The Lighthouse", "mood": "calm"}, {"title": "Dünen", "mood": "grim"}]
    body = completion_body("")
    body["choices"][0]["message"]["content"] = answer
    provider = mock_provider(answering(body))
    completion = await provider.complete(TRIAL_REQUEST)
    await provider.aclose()
    assert json.loads(completion.text) == answer and "Dünen" in completion.text
