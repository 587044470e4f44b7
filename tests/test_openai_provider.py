"""The OpenAI-compatible provider against httpx.MockTransport: wire format and every failure mode."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from llama_server import free_port
from storyengine.config import OpenAIProviderSettings
from storyengine.errors import (
    AuthenticationError,
    BadResponse,
    ProviderHTTPError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from storyengine.providers.openai_compat import OpenAICompatProvider, parse_retry_after
from storyengine.types import CompletionRequest, Message

SECRET = "sk-test-0123456789abcdef-SECRET"
KEY_ENV = "STORYENGINE_TEST_API_KEY"
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
    "required": ["answer"],
}

Handler = Callable[[httpx.Request], httpx.Response]


def ok_body(text: str = "Hello.", finish: str = "stop", **message: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "served-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, **message},
                     "finish_reason": finish}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13},
    }  # fmt: skip


def make_provider(
    handler: Handler | Callable[[httpx.Request], Any],
    *,
    mode: str = "json_schema",
    api_key_env: str | None = KEY_ENV,
    max_parallel: int = 4,
    timeout: float | None = None,
) -> OpenAICompatProvider:
    settings = OpenAIProviderSettings(
        type="openai",
        base_url="http://127.0.0.1:9/v1",
        model="test-model",
        api_key_env=api_key_env,
        structured_output=mode,  # type: ignore[arg-type]
        max_parallel=max_parallel,
        timeout=timeout,
    )
    return OpenAICompatProvider("mock", settings, transport=httpx.MockTransport(handler))


def request(**kwargs: Any) -> CompletionRequest:
    return CompletionRequest(messages=(Message(role="user", content="Say hello."),), **kwargs)


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)


class Recorder:
    """A MockTransport handler that remembers each request and answers with a fixed response."""

    def __init__(self, response: httpx.Response | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.response = response or httpx.Response(200, json=ok_body())

    def __call__(self, req: httpx.Request) -> httpx.Response:
        self.requests.append(req)
        return self.response

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.requests[-1].content)


# -- the request on the wire --


async def test_plain_request_carries_params_key_and_timeout() -> None:
    recorder = Recorder()
    provider = make_provider(recorder)
    completion = await provider.complete(
        request(temperature=0.3, top_p=0.9, seed=7, max_tokens=42, stop=("END",), timeout=12.5)
    )
    sent = recorder.requests[0]
    assert sent.url == "http://127.0.0.1:9/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {SECRET}"
    assert sent.extensions["timeout"]["read"] == 12.5
    body = recorder.body
    assert body["model"] == "test-model"
    assert body["messages"] == [{"role": "user", "content": "Say hello."}]
    assert (body["temperature"], body["top_p"], body["seed"], body["max_tokens"]) == (0.3, 0.9, 7, 42)
    assert body["stop"] == ["END"]
    assert "response_format" not in body and "tools" not in body
    assert completion.text == "Hello."
    assert completion.finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (11, 2)
    assert completion.model == "served-model"
    assert completion.provider == "mock"
    assert completion.structured_mode == "none"
    assert completion.latency_s >= 0.0


async def test_settings_timeout_overrides_the_request_timeout() -> None:
    recorder = Recorder()
    await make_provider(recorder, timeout=3.0).complete(request(timeout=99.0))
    assert recorder.requests[0].extensions["timeout"]["read"] == 3.0


async def test_no_authorization_header_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV)
    recorder = Recorder()
    await make_provider(recorder).complete(request())
    assert "authorization" not in recorder.requests[0].headers


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (
            "json_schema",
            {"response_format": {"type": "json_schema",
                                 "json_schema": {"name": "answer_v1", "schema": SCHEMA, "strict": True}}},
        ),
        ("json_object_schema", {"response_format": {"type": "json_object", "schema": SCHEMA}}),
        ("ollama_format", {"format": SCHEMA}),
        (
            "tool_call",
            {
                "tools": [{"type": "function", "function": {
                    "name": "answer_v1", "description": "Return the answer as structured data.",
                    "parameters": SCHEMA}}],
                "tool_choice": {"type": "function", "function": {"name": "answer_v1"}},
            },
        ),
        ("none", {}),
    ],
)  # fmt: skip
async def test_structured_output_modes_on_the_wire(mode: str, expected: dict[str, Any]) -> None:
    recorder = Recorder(httpx.Response(200, json=ok_body('{"answer": "yes"}')))
    completion = await make_provider(recorder, mode=mode).complete(
        request(json_schema=SCHEMA, schema_name="answer v1")
    )
    body = recorder.body
    structured_keys = {"response_format", "format", "tools", "tool_choice"}
    assert {k: v for k, v in body.items() if k in structured_keys} == expected
    assert completion.structured_mode == mode


async def test_tool_call_answer_is_the_call_arguments() -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "output", "arguments": '{"answer":"no"}'},
    }
    recorder = Recorder(httpx.Response(200, json=ok_body(None, finish="tool_calls", tool_calls=[call])))
    completion = await make_provider(recorder, mode="tool_call").complete(request(json_schema=SCHEMA))
    assert json.loads(completion.text) == {"answer": "no"}
    assert completion.finish_reason == "tool_calls"


async def test_tool_call_cut_off_at_max_tokens_reports_length() -> None:
    call = {"type": "function", "function": {"name": "output", "arguments": '{"ans'}}
    body = ok_body(None, finish="tool_calls", tool_calls=[call])
    body["usage"]["completion_tokens"] = 5
    completion = await make_provider(Recorder(httpx.Response(200, json=body)), mode="tool_call").complete(
        request(json_schema=SCHEMA, max_tokens=5)
    )
    assert completion.finish_reason == "length"
    assert completion.truncated


@pytest.mark.parametrize(
    ("details", "reused"),
    [({"cached_tokens": 8}, 8), ({"cached_tokens": 50}, 11), ({"cached_tokens": "8"}, 0), (None, 0)],
)
async def test_the_prompt_tokens_a_servers_cache_held_are_recorded(details: object, reused: int) -> None:
    """OpenAI, vLLM and llama.cpp's server say in `prompt_tokens_details.cached_tokens` how much of
    the prompt they did not evaluate again; never more than the prompt, nothing when not a count."""
    body = ok_body("Hello.")
    body["usage"]["prompt_tokens_details"] = details
    completion = await make_provider(Recorder(httpx.Response(200, json=body))).complete(request())
    assert (completion.usage.prompt_tokens, completion.usage.prompt_tokens_reused) == (11, reused)


async def test_missing_usage_is_estimated() -> None:
    body = ok_body("A fairly long answer with several words in it.")
    del body["usage"]
    completion = await make_provider(Recorder(httpx.Response(200, json=body))).complete(request())
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens > 0


# -- failures --


@pytest.mark.parametrize("status", [401, 403])
async def test_rejected_key_names_the_env_var_never_the_key(status: int) -> None:
    error_body = {
        "error": {"message": f"Incorrect API key provided: {SECRET}", "type": "invalid_request_error"}
    }
    provider = make_provider(Recorder(httpx.Response(status, json=error_body)))
    with pytest.raises(AuthenticationError) as caught:
        await provider.complete(request())
    message = str(caught.value)
    assert KEY_ENV in message
    assert SECRET not in message
    assert caught.value.status == status
    assert not caught.value.retryable
    assert SECRET not in repr(provider)


async def test_unset_key_env_var_is_named_in_the_auth_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(AuthenticationError, match=f"env var {KEY_ENV} is not set"):
        await make_provider(Recorder(httpx.Response(401, json={"error": "no key"}))).complete(request())


async def test_server_echoing_the_key_in_any_error_is_redacted() -> None:
    body = {"error": {"message": f"bad request from key {SECRET}"}}
    with pytest.raises(ProviderHTTPError) as caught:
        await make_provider(Recorder(httpx.Response(400, json=body))).complete(request())
    assert SECRET not in str(caught.value)
    assert "bad request from key ***" in str(caught.value)


@pytest.mark.parametrize("header", ["7", "7.5"])
async def test_rate_limited_with_retry_after_seconds(header: str) -> None:
    response = httpx.Response(429, headers={"Retry-After": header}, json={"error": {"message": "slow down"}})
    with pytest.raises(RateLimited) as caught:
        await make_provider(Recorder(response)).complete(request())
    assert caught.value.retry_after == float(header)
    assert caught.value.retryable
    assert caught.value.status == 429
    assert "slow down" in str(caught.value)


async def test_rate_limited_with_retry_after_http_date() -> None:
    date = email.utils.formatdate(time.time() + 120, usegmt=True)
    response = httpx.Response(429, headers={"Retry-After": date})
    with pytest.raises(RateLimited) as caught:
        await make_provider(Recorder(response)).complete(request())
    assert caught.value.retry_after is not None
    assert 60 < caught.value.retry_after <= 120


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("0") == 0.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past


async def test_server_error_is_retryable_with_the_servers_message() -> None:
    response = httpx.Response(500, json={"error": {"message": "CUDA out of memory", "type": "server_error"}})
    with pytest.raises(ProviderHTTPError) as caught:
        await make_provider(Recorder(response)).complete(request())
    assert caught.value.status == 500
    assert caught.value.retryable
    assert "CUDA out of memory" in str(caught.value)
    assert "HTTP 500" in str(caught.value)


async def test_client_error_is_not_retryable_and_hints_at_the_mode() -> None:
    detail = {"detail": [{"loc": ["body", "response_format", "type"], "msg": "Input should be 'text'"}]}
    with pytest.raises(ProviderHTTPError) as caught:
        await make_provider(Recorder(httpx.Response(422, json=detail))).complete(request(json_schema=SCHEMA))
    message = str(caught.value)
    assert not caught.value.retryable
    assert "body.response_format.type: Input should be 'text'" in message
    assert "structured_output 'json_schema'" in message


async def test_long_error_bodies_are_cut_short() -> None:
    response = httpx.Response(502, text="<html>" + "x" * 5000 + "</html>")
    with pytest.raises(ProviderHTTPError) as caught:
        await make_provider(Recorder(response)).complete(request())
    assert len(str(caught.value)) < 400


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>not json</html>"),
        httpx.Response(200, json={"id": "x", "object": "chat.completion"}),
        httpx.Response(200, json={"choices": []}),
        httpx.Response(200, json=["a", "list"]),
    ],
    ids=["html", "no-choices", "empty-choices", "not-an-object"],
)
async def test_unusable_answers_are_bad_responses(response: httpx.Response) -> None:
    with pytest.raises(BadResponse) as caught:
        await make_provider(Recorder(response)).complete(request())
    assert caught.value.retryable
    assert caught.value.provider == "mock"


@pytest.mark.parametrize(
    "exc",
    [httpx.ConnectError("[Errno 111] Connection refused"), httpx.ReadError("Connection reset by peer"),
     httpx.RemoteProtocolError("Server disconnected without sending a response.")],
    ids=["connect", "reset", "disconnect"],
)  # fmt: skip
async def test_connection_failures_are_unavailable(exc: Exception) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        raise exc

    with pytest.raises(ProviderUnavailable) as caught:
        await make_provider(handler).complete(request())
    assert caught.value.retryable
    assert "cannot reach http://127.0.0.1:9/v1" in str(caught.value)
    assert SECRET not in str(caught.value)


async def test_timeout_is_provider_timeout() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out")

    with pytest.raises(ProviderTimeout, match="within 4s") as caught:
        await make_provider(handler).complete(request(timeout=4.0))
    assert caught.value.retryable


async def test_max_parallel_bounds_requests_in_flight() -> None:
    in_flight = 0
    peak = 0

    async def handler(req: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return httpx.Response(200, json=ok_body())

    provider = make_provider(handler, max_parallel=2)
    completions = await asyncio.gather(*(provider.complete(request()) for _ in range(6)))
    assert len(completions) == 6
    assert peak == 2


async def test_real_closed_port_is_unavailable() -> None:
    port = free_port()
    settings = OpenAIProviderSettings(type="openai", base_url=f"http://127.0.0.1:{port}/v1", model="m")
    provider = OpenAICompatProvider("down", settings)
    try:
        with pytest.raises(ProviderUnavailable, match=f"down: cannot reach http://127.0.0.1:{port}/v1"):
            await provider.complete(request())
    finally:
        await provider.aclose()


# -- `storyengine providers check` against a server that is down --


def run_cli(*args: str) -> Any:
    from storyengine.cli import main  # imported here: it pulls in every command module

    return CliRunner().invoke(main, list(args))


def test_providers_check_reports_a_closed_port_in_one_line(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        "narrative:\n  providers: {plot: down, scene: down, dialogue: down, evaluation: down,\n"
        "              enhancement: down, summarize: down}\n"
        f"providers:\n  down:\n    type: openai\n    base_url: http://127.0.0.1:{port}/v1\n"
        "    model: nothing\n    structured_output: json_object_schema\n"
    )
    result = run_cli("providers", "check", "--config", str(config))
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    problem_lines = [line for line in result.output.splitlines() if "cannot reach" in line]
    assert len(problem_lines) == 1
    assert problem_lines[0].startswith("✗ down: cannot reach")

    as_json = run_cli("providers", "check", "--config", str(config), "--json")
    assert as_json.exit_code == 1
    [entry] = json.loads(as_json.stdout)
    assert entry["provider"] == "down"
    assert entry["reachable"] is False
    assert entry["ok"] is False


def test_providers_check_config_error_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("providers:\n  x:\n    type: openai\n    model: m\n")
    result = run_cli("providers", "check", "--config", str(config))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "base_url" in result.stderr
