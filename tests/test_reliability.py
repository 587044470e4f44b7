"""Reliability (issue 15): deadlines, bounded bodies, every failure inside the error tree, the shapes a
server may send, and config validation of the new settings.

Every fault is played by the misbehaving server on 127.0.0.1 (tests/faulty_server.py) or by an
httpx.MockTransport, through the real OpenAICompatProvider and, where it matters, the router.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from faulty_server import DEFAULT_ANSWER, TRIAL_REQUEST, FaultyServer, Title, check_title, run_trial
from storyengine.config import OpenAIProviderSettings, load_settings, parse_settings
from storyengine.errors import (
    BadResponse,
    ConfigError,
    ProviderError,
    ProviderRedirect,
    ProviderTimeout,
    ProviderUnavailable,
    ResponseTooLarge,
)
from storyengine.providers.openai_compat import OpenAICompatProvider


@pytest.fixture
def servers() -> Iterator[list[FaultyServer]]:
    started: list[FaultyServer] = []
    yield started
    for server in started:
        server.stop()


def serve(servers: list[FaultyServer], *args: object, **kwargs: object) -> FaultyServer:
    server = FaultyServer(*args, **kwargs).start()  # type: ignore[arg-type]
    servers.append(server)
    return server


# -- deadlines --


async def test_a_dripping_body_ends_at_the_deadline_of_each_attempt(servers: list[FaultyServer]) -> None:
    """The issue's goal: timeout 5 s, 3 attempts, a server sending one byte a second: the call ends
    within A·T plus backoff (<= 25 s), not when the last byte arrives (~ 380 s on main)."""
    server = serve(servers, [], then="drip", drip_s=1.0)
    trial = await run_trial({"a": server.base_url}, ["a"], timeout=5.0, attempts=3, real_sleep=True)
    assert isinstance(trial.error, ProviderTimeout), trial.error
    assert "within 5s" in str(trial.error) and "connect to last byte" in str(trial.error)
    assert "bytes of it had arrived" in str(trial.error)  # bytes did arrive: a per-read timeout never fired
    assert [r.outcome for r in trial.attempts] == ["retry", "retry", "error"]
    assert trial.seconds <= 25.0
    assert server.requests == 3


async def test_a_body_arriving_faster_than_the_read_timeout_still_meets_the_deadline(
    servers: list[FaultyServer],
) -> None:
    server = serve(servers, [], then="drip", drip_s=0.05)  # a byte every 50 ms: ~ 10 s for the body
    trial = await run_trial({"a": server.base_url}, ["a"], timeout=0.6, attempts=1)
    assert isinstance(trial.error, ProviderTimeout), trial.error
    assert server.bytes_sent > 1
    assert trial.seconds < 8.0  # far less than the body's ~ 10 s


# -- bodies too large --


async def test_a_huge_declared_body_is_refused_without_reading_it(servers: list[FaultyServer]) -> None:
    server = serve(servers, [], then="huge", huge_bytes=20_000_000)
    trial = await run_trial({"a": server.base_url}, ["a"], max_response_bytes=1_000_000)
    assert isinstance(trial.error, ResponseTooLarge), trial.error
    assert "declares 20,000,000 bytes" in str(trial.error) and "max_response_bytes" in str(trial.error)
    assert len(trial.attempts) == 3  # retried like any bad answer: each try reads at most the limit


async def test_a_huge_body_once_is_recovered_by_retry(servers: list[FaultyServer]) -> None:
    server = serve(servers, ["huge"], huge_bytes=20_000_000)
    trial = await run_trial({"a": server.base_url}, ["a"], max_response_bytes=1_000_000)
    assert trial.error is None and trial.completion is not None
    assert [r.outcome for r in trial.attempts] == ["retry", "ok"]


async def test_a_huge_chunked_body_is_cut_off_at_the_limit(servers: list[FaultyServer]) -> None:
    server = serve(servers, [], then="huge_chunked", huge_bytes=20_000_000)
    trial = await run_trial({"a": server.base_url}, ["a"], max_response_bytes=500_000)
    assert isinstance(trial.error, ResponseTooLarge), trial.error
    assert "larger than max_response_bytes (500,000)" in str(trial.error)
    server.stop()
    assert server.bytes_sent < 20_000_000


async def test_a_huge_body_falls_back_to_the_next_provider(servers: list[FaultyServer]) -> None:
    huge, healthy = serve(servers, [], then="huge"), serve(servers, [])
    trial = await run_trial(
        {"a": huge.base_url, "b": healthy.base_url}, ["a", "b"], max_response_bytes=100_000
    )
    assert trial.error is None and trial.completion is not None
    check_title(trial.completion)


# -- shapes a server may send --


async def test_content_as_text_parts_is_joined(servers: list[FaultyServer]) -> None:
    server = serve(servers, ["parts"])
    trial = await run_trial({"a": server.base_url}, ["a"])
    assert trial.error is None, trial.error
    assert trial.completion is not None and trial.completion.text == DEFAULT_ANSWER
    assert Title.model_validate_json(trial.completion.text).title == "The Lighthouse"
    assert len(trial.attempts) == 1


async def test_a_redirect_is_named_as_one_with_its_target(servers: list[FaultyServer]) -> None:
    server = serve(servers, [], then="redirect", redirect_to="http://127.0.0.1:9/v2/chat/completions")
    trial = await run_trial({"a": server.base_url}, ["a"])
    assert isinstance(trial.error, ProviderRedirect), trial.error
    message = str(trial.error)
    assert "HTTP 307, a redirect to http://127.0.0.1:9/v2/chat/completions" in message
    assert "base_url" in message and "not JSON" not in message
    assert trial.error.location == "http://127.0.0.1:9/v2/chat/completions"
    assert len(trial.attempts) == 1  # a redirect does not change on retry


async def test_a_relative_redirect_is_resolved(servers: list[FaultyServer]) -> None:
    server = serve(servers, [], then="redirect", redirect_to="/login")
    trial = await run_trial({"a": server.base_url}, ["a"])
    assert isinstance(trial.error, ProviderRedirect)
    assert f"a redirect to {server.base_url.removesuffix('/v1')}/login" in str(trial.error)


async def test_a_body_that_is_not_the_gzip_it_claims_is_a_bad_response(servers: list[FaultyServer]) -> None:
    server = serve(servers, ["bad_gzip"])
    trial = await run_trial({"a": server.base_url}, ["a"])
    assert trial.error is None and trial.completion is not None  # retried, then fine
    first = trial.attempts[0]
    assert first.outcome == "retry" and (first.error or "").startswith("BadResponse:")
    assert "Content-Encoding (gzip)" in (first.error or "")


async def test_missing_finish_reason_and_usage_are_tolerated_and_unknown(servers: list[FaultyServer]) -> None:
    server = serve(servers, ["no_finish"])
    trial = await run_trial({"a": server.base_url}, ["a"])
    assert trial.error is None and trial.completion is not None
    assert trial.completion.finish_reason == "unknown"
    assert trial.completion.usage.completion_tokens > 0  # estimated
    check_title(trial.completion)


# -- every failure inside the error tree --


def mock_provider(handler: object, **settings: object) -> OpenAICompatProvider:
    config = OpenAIProviderSettings(
        type="openai",
        base_url="http://127.0.0.1:9/v1",
        model="m",
        **settings,  # type: ignore[arg-type]
    )
    return OpenAICompatProvider("mock", config, transport=httpx.MockTransport(handler))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "exc",
    [
        httpx.DecodingError("Error -3 while decompressing data: incorrect header check"),
        httpx.TooManyRedirects("Exceeded maximum allowed redirects."),
        httpx.UnsupportedProtocol("Request URL is missing an 'http://' or 'https://' protocol."),
        httpx.LocalProtocolError("Illegal header value"),
        httpx.ProxyError("proxy refused"),
        RuntimeError("something deep in the HTTP stack"),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_any_exception_from_the_http_stack_is_a_provider_error(exc: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    provider = mock_provider(handler)
    with pytest.raises(ProviderError) as caught:
        await provider.complete(TRIAL_REQUEST)
    assert caught.value.provider == "mock"
    assert "mock:" in str(caught.value)
    await provider.aclose()


async def test_a_reply_of_an_unforeseen_shape_is_a_bad_response() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": [{"message": {"content": [{"type": "image_url"}]}}]})

    with pytest.raises(BadResponse, match="not text"):
        await mock_provider(handler).complete(TRIAL_REQUEST)


async def test_a_refused_connection_is_still_unavailable_not_a_timeout() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    with pytest.raises(ProviderUnavailable) as caught:
        await mock_provider(handler).complete(TRIAL_REQUEST)
    assert caught.value.retryable


async def test_the_deadline_covers_an_async_transport_that_never_finishes() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200)

    started = time.perf_counter()
    with pytest.raises(ProviderTimeout, match=r"within 0\.3s"):
        await mock_provider(handler, timeout=0.3).complete(TRIAL_REQUEST)
    assert time.perf_counter() - started < 10


# -- config of the new settings --


@pytest.mark.parametrize(
    ("snippet", "key"),
    [
        ("retry: {breaker_cooldown: -5}", "retry.breaker_cooldown"),
        ("retry: {breaker_cooldown: 0}", "retry.breaker_cooldown"),
        ("retry: {breaker_failures: 0}", "retry.breaker_failures"),
        ("web: {max_request_bytes: 0}", "web.max_request_bytes"),
        (
            "providers:\n  embedded: {type: embedded}\n"
            "  srv: {type: openai, base_url: 'http://127.0.0.1:1/v1', model: m, max_response_bytes: 0}",
            "providers.srv.max_response_bytes",
        ),
    ],
)
def test_bad_limits_are_rejected_at_load_naming_the_key_and_the_file(
    tmp_path: Path, snippet: str, key: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(snippet + "\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert key in str(caught.value) and str(path) in str(caught.value)


def test_the_new_settings_have_sane_defaults() -> None:
    settings = parse_settings("{}")
    assert settings.retry.breaker_failures >= 1 and settings.retry.breaker_cooldown > 0
    assert settings.web.max_request_bytes > 0
    server = parse_settings(
        "providers:\n  embedded: {type: embedded}\n  srv: {type: openai, base_url: 'http://x/v1', model: m}"
    ).providers["srv"]
    assert isinstance(server, OpenAIProviderSettings) and server.max_response_bytes == 8_000_000
