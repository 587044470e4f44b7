"""An OpenAI-compatible chat server on 127.0.0.1 that misbehaves on purpose.

`FaultyServer(["500", "429", "ok"])` answers its first request with HTTP 500, its second
with 429 and its third with a valid completion; once the script runs out it keeps
answering with `then` (default "ok"). It runs in a background thread, so it works with any
event loop, and it records every request body it received.

Faults:

    ok              a valid chat completion whose content is `answer`
    500             HTTP 500 with an OpenAI-style error body
    429             HTTP 429 with `Retry-After: <retry_after>`
    401             HTTP 401 (a missing or wrong API key)
    hang            read the request, then say nothing for `hang_s` seconds
    reset           read the request, then reset the connection (TCP RST)
    empty           HTTP 200 with an empty body
    garbage         HTTP 200 with an HTML page
    truncated_json  HTTP 200 whose JSON body stops half-way
    cut_body        HTTP 200 that promises more bytes than it sends, then closes
    length          a valid completion cut off by max_tokens (finish_reason "length")
    empty_content   a valid completion whose content is ""
    prose           a valid completion whose content is prose, not the JSON asked for
    slow            a valid completion after `delay_s` seconds
    drip            a valid completion whose body arrives one byte every `drip_s` seconds
    huge            HTTP 200 declaring and sending `huge_bytes` bytes (20 MB by default)
    huge_chunked    HTTP 200, chunked (no Content-Length), sending `huge_bytes` bytes
    parts           a valid completion whose content is a list of text parts
    redirect        HTTP 307 to `redirect_to`
    echo            HTTP 502, an HTML page that echoes the request's headers (Authorization too),
                    as a misconfigured proxy does
    echo_answer     a valid completion whose content echoes the request's Authorization header
    bad_gzip        HTTP 200 that says Content-Encoding: gzip and is not gzip
    no_finish       a valid completion without finish_reason and without usage
    bad_utf8        HTTP 200 whose content holds bytes that are not UTF-8 (the JSON around them is fine)
    tool_calls      a completion whose content is null and whose `answer` is a tool call's arguments
    html_502        HTTP 502, a proxy's HTML error page with a style sheet
    object_content  a valid completion whose content is `answer` as a JSON object, not a string
    nan_usage       a valid completion whose usage counts are NaN
    inf_usage       a valid completion whose usage counts are Infinity

Streams (server-sent events, `answer` in word-sized pieces; see `stream_events`), for a request
that asks for one or not:

    sse             a valid stream: a keep-alive comment, the pieces, finish_reason "stop", usage, [DONE]
    sse_no_usage    ... without the usage chunk          sse_length   ... finish_reason "length"
    sse_cut         two pieces, then half an event, then the connection closes
    sse_no_end      the pieces, then the connection closes (no finish_reason, no [DONE])
    sse_not_json    an event that is not JSON among the pieces
    sse_done_empty  [DONE] and nothing else
    sse_done_early  two pieces, then [DONE] with no finish_reason (llama_cpp.server's cut when
                    another request arrives)
    sse_bad_utf8    a piece whose bytes are not UTF-8       sse_surrogate  a piece that is a lone surrogate
    sse_tool        a tool call's arguments, no content (finish_reason "tool_calls")
    sse_secret      the request's Authorization header echoed, split into 6-character pieces
    sse_hang        two pieces, then keep-alive comments until the client hangs up (`client_gone`)
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import BaseModel, ValidationError

from storyengine.config import COMPONENTS, Settings
from storyengine.errors import SchemaValidationError
from storyengine.routing.instrument import CallRecord, RunRecorder
from storyengine.routing.router import Router
from storyengine.types import Completion, CompletionRequest, Message

FAULTS = (
    "ok", "500", "429", "401", "hang", "reset", "empty", "garbage", "truncated_json", "cut_body",
    "length", "empty_content", "prose", "slow", "drip", "huge", "huge_chunked", "parts", "redirect",
    "echo", "echo_answer", "bad_gzip", "no_finish", "bad_utf8", "tool_calls", "html_502", "object_content",
    "nan_usage", "inf_usage", "sse", "sse_no_usage", "sse_length", "sse_cut", "sse_no_end", "sse_not_json",
    "sse_done_empty", "sse_done_early", "sse_bad_utf8", "sse_surrogate", "sse_tool", "sse_secret", "sse_hang",
)  # fmt: skip

DEFAULT_ANSWER = '{"title": "The Lighthouse", "mood": "calm"}'
# A proxy's error page, as nginx behind a CDN sends it: markup and a style sheet, no JSON.
PROXY_PAGE = (
    "<!DOCTYPE html><html><head><title>502 Bad Gateway</title><style>body { font-family: Tahoma, "
    "Verdana, Arial, sans-serif; margin: 0 auto; width: 35em; } h1 { color: #c00; }</style></head>"
    "<body><h1>502 Bad Gateway</h1><p>The upstream server did not answer.</p><hr><center>nginx</center>"
    "</body></html>"
)


class FaultyServer:
    """A misbehaving chat-completions server; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        script: list[str] | None = None,
        *,
        then: str = "ok",
        answer: str = DEFAULT_ANSWER,
        retry_after: str = "1",
        hang_s: float = 30.0,
        delay_s: float = 0.3,
        drip_s: float = 1.0,
        huge_bytes: int = 20_000_000,
        redirect_to: str = "http://127.0.0.1:9/v2/chat/completions",
    ) -> None:
        unknown = [f for f in [*(script or []), then] if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown faults {unknown}; known: {FAULTS}")
        self.script = list(script or [])
        self.then = then
        self.answer = answer
        self.retry_after = retry_after
        self.hang_s = hang_s
        self.delay_s = delay_s
        self.drip_s = drip_s
        self.huge_bytes = huge_bytes
        self.redirect_to = redirect_to
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.bytes_sent = 0
        self.served: list[str] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self.client_gone = threading.Event()  # a client hung up on an endless stream (sse_hang)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    @property
    def requests(self) -> int:
        return len(self.served)

    def next_fault(self, body: dict[str, Any]) -> str:
        with self._lock:
            self.bodies.append(body)
            fault = self.script.pop(0) if self.script else self.then
            self.served.append(fault)
            return fault

    def start(self) -> FaultyServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()  # wake every hanging handler
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait(self, seconds: float) -> None:
        """Sleep `seconds`, or less if the server is stopping."""
        self._released.wait(seconds)


def completion_body(content: str, *, finish_reason: str = "stop", model: str = "faulty") -> dict[str, Any]:
    return {
        "id": "chatcmpl-faulty",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": max(1, len(content) // 4)},
    }


def stream_events(answer: str, fault: str, *, authorization: str = "") -> list[bytes]:
    """The events of a streamed answer as `fault` sends them (see the module docstring)."""
    if fault == "sse_done_empty":
        return [b"data: [DONE]\n\n"]
    if fault == "sse_secret":
        said = f"The keeper read the note aloud: Authorization: {authorization}."
        pieces = [said[i : i + 6] for i in range(0, len(said), 6)]
    else:
        pieces = re.findall(r"\S+\s*", answer)
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}, *({"content": p} for p in pieces)]
    finish = {"sse_length": "length", "sse_tool": "tool_calls"}.get(fault, "stop")
    if fault == "sse_tool":
        deltas = [{"role": "assistant", "content": None, "tool_calls": [{"index": 0, "id": "call_1",
                   "type": "function", "function": {"name": "Title", "arguments": answer}}]}]  # fmt: skip
    chunks = [
        {"model": "faulty", "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas
    ]
    chunks.append({"model": "faulty", "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if fault != "sse_no_usage":
        chunks.append({"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": len(pieces)}})
    events = [b": keep-alive\n\n", *(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)]
    events.append(b"data: [DONE]\n\n")
    piece = b'data: {"choices": [{"index": 0, "delta": {"content": "Light%shouse"}}]}\n\n'
    bad = {"sse_not_json": b"data: {the model said: hello\n\n", "sse_bad_utf8": piece % b"\xe2\x80(\xff",
           "sse_surrogate": piece % b"\\ud800"}.get(fault)  # fmt: skip
    if bad is not None:
        events.insert(3, bad)
    if fault == "sse_done_early":
        return [*events[:4], b"data: [DONE]\n\n"]
    if fault == "sse_cut":
        return [*events[:4], events[4][: len(events[4]) // 2]]
    return {"sse_no_end": events[: 2 + len(pieces)], "sse_hang": events[:4]}.get(fault, events)


def _handler_for(server: FaultyServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return None

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {"unparsed": raw.decode("utf-8", "replace")}
            with server._lock:
                server.headers.append(dict(self.headers.items()))
            fault = server.next_fault(body)
            try:
                self._serve(fault)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up: as it should
                self.close_connection = True

        def _serve(self, fault: str) -> None:
            if fault == "ok":
                self._json(200, completion_body(server.answer))
            elif fault == "500":
                self._json(500, {"error": {"message": "internal error: the model crashed"}})
            elif fault == "429":
                self._json(
                    429, {"error": {"message": "too many requests"}}, {"Retry-After": server.retry_after}
                )
            elif fault == "401":
                self._json(401, {"error": {"message": "invalid api key"}})
            elif fault == "hang":
                server.wait(server.hang_s)
                self.close_connection = True
            elif fault == "reset":
                self._reset()
            elif fault == "empty":
                self._raw(200, b"", "application/json")
            elif fault == "garbage":
                self._raw(200, b"<html><body>502 Bad Gateway (nginx)</body></html>", "text/html")
            elif fault == "truncated_json":
                text = json.dumps(completion_body(server.answer)).encode()
                self._raw(200, text[: len(text) // 2], "application/json")
            elif fault == "cut_body":
                self._cut_body()
            elif fault == "length":
                self._json(
                    200, completion_body(server.answer[: len(server.answer) // 2], finish_reason="length")
                )
            elif fault == "empty_content":
                self._json(200, completion_body(""))
            elif fault == "prose":
                self._json(200, completion_body("Sure! Here is a story about a lighthouse keeper."))
            elif fault == "slow":
                server.wait(server.delay_s)
                self._json(200, completion_body(server.answer))
            elif fault == "drip":
                self._drip(json.dumps(completion_body(server.answer)).encode())
            elif fault == "huge":
                self._huge(chunked=False)
            elif fault == "huge_chunked":
                self._huge(chunked=True)
            elif fault == "parts":
                body = completion_body(server.answer)
                half = len(server.answer) // 2
                body["choices"][0]["message"]["content"] = [
                    {"type": "text", "text": server.answer[:half]},
                    {"type": "text", "text": server.answer[half:]},
                ]
                self._json(200, body)
            elif fault == "redirect":
                self._raw(307, b"", "text/plain", {"Location": server.redirect_to})
            elif fault == "echo":
                first = sorted(self.headers.items(), key=lambda item: item[0].lower() != "authorization")
                echoed = "".join(f"<li>{name}: {value}</li>" for name, value in first)
                page = (
                    "<html><body><h1>502 Bad Gateway</h1><p>upstream failed; request was:</p>"
                    f"<ul>{echoed}</ul></body></html>"
                )
                self._raw(502, page.encode(), "text/html")
            elif fault == "echo_answer":
                said = self.headers.get("Authorization", "no Authorization header")
                self._json(200, completion_body(f"The keeper read the note aloud: Authorization: {said}."))
            elif fault == "bad_gzip":
                self._raw(200, json.dumps(completion_body(server.answer)).encode(), "application/json",
                          {"Content-Encoding": "gzip"})  # fmt: skip
            elif fault == "no_finish":
                body = completion_body(server.answer)
                del body["usage"]
                del body["choices"][0]["finish_reason"]
                self._json(200, body)
            elif fault == "bad_utf8":
                # "Lighthouse" with a broken sequence in it: decoded leniently it still validates.
                data = json.dumps(completion_body(server.answer.replace("Lighthouse", "Light@@house")))
                self._raw(200, data.encode().replace(b"@@", b"\xe2\x80(\xff"), "application/json")
            elif fault == "tool_calls":
                body = completion_body(server.answer, finish_reason="tool_calls")
                message = body["choices"][0]["message"]
                message["content"] = None
                call = {"name": "Title", "arguments": server.answer}
                message["tool_calls"] = [{"id": "call_1", "type": "function", "function": call}]
                self._json(200, body)
            elif fault == "html_502":
                self._raw(502, PROXY_PAGE.encode(), "text/html")
            elif fault == "object_content":
                body = completion_body(server.answer)
                body["choices"][0]["message"]["content"] = json.loads(server.answer)
                self._json(200, body)
            elif fault.startswith("sse"):
                self._stream(fault)
            elif fault in ("nan_usage", "inf_usage"):
                body = completion_body(server.answer)
                count = float("nan") if fault == "nan_usage" else float("inf")
                body["usage"] = {"prompt_tokens": count, "completion_tokens": count}
                self._json(200, body)

        def _json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            self._raw(status, json.dumps(payload).encode(), "application/json", headers)

        def _raw(
            self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()

        def _stream(self, fault: str) -> None:
            """Events, the body ending when the connection closes (no Content-Length)."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Connection", "close")
            self.end_headers()
            authorization = self.headers.get("Authorization", "")
            for event in stream_events(server.answer, fault, authorization=authorization):
                self.wfile.write(event)
                self.wfile.flush()
            while fault == "sse_hang" and not server._released.is_set():
                server.wait(0.05)
                try:
                    self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()
                except OSError:
                    server.client_gone.set()
                    break
            self.close_connection = True

        def _drip(self, data: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.flush()
            for byte in data:
                if server._released.is_set():
                    break
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                server.bytes_sent += 1
                server.wait(server.drip_s)
            self.close_connection = True

        def _huge(self, *, chunked: bool) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(server.huge_bytes))
            self.end_headers()
            block = b" " * 65536
            left = server.huge_bytes
            while left > 0 and not server._released.is_set():
                piece = block[: min(left, len(block))]
                if chunked:
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                else:
                    self.wfile.write(piece)
                server.bytes_sent += len(piece)
                left -= len(piece)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            self.close_connection = True

        def _reset(self) -> None:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True

        def _cut_body(self) -> None:
            data = json.dumps(completion_body(server.answer)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data) * 2))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
            self.close_connection = True

    return Handler


# -- a trial: one routed call against misbehaving servers, as the pipeline would make it --


class Title(BaseModel):
    title: str
    mood: str


def check_title(completion: Completion) -> None:
    """The check a structuring step passes: the text must be a valid `Title`."""
    try:
        Title.model_validate_json(completion.text)
    except ValidationError as exc:
        raise SchemaValidationError(
            f"not a valid Title: {exc.errors()[0]['msg']}", raw_text=completion.text, parse_error=str(exc)
        ) from None


def trial_settings(
    urls: dict[str, str],
    chain: list[str],
    *,
    attempts: int = 3,
    timeout: float = 5.0,
    backoff: float = 0.5,
    api_key_env: str | None = None,
    max_response_bytes: int | None = None,
    breaker_failures: int = 3,
    breaker_cooldown: float = 60.0,
) -> Settings:
    extra: dict[str, Any] = {}
    if api_key_env:
        extra["api_key_env"] = api_key_env
    if max_response_bytes:
        extra["max_response_bytes"] = max_response_bytes
    providers = {
        name: {"type": "openai", "base_url": url, "model": f"model-{name}", "timeout": timeout,
               "context_window": 4096, **extra}
        for name, url in urls.items()
    }  # fmt: skip
    routes = {component: chain for component in COMPONENTS}
    return Settings.model_validate(
        {
            "narrative": {"providers": routes},
            "retry": {
                "attempts": attempts,
                "backoff_initial": backoff,
                "backoff_max": 20.0,
                "breaker_failures": breaker_failures,
                "breaker_cooldown": breaker_cooldown,
            },
            "cache": {"enabled": False},
            "providers": providers,
        }
    )


TRIAL_REQUEST = CompletionRequest(
    messages=(
        Message(role="system", content="You turn notes into JSON with the keys title and mood."),
        Message(role="user", content="Notes: a lighthouse keeper; calm seas."),
    ),
    component="plot",
    stage="structuring",
    temperature=0.3,
    max_tokens=64,
    json_schema=Title.model_json_schema(),
    schema_name="Title",
)


@dataclass
class Trial:
    """What one routed call against the servers came to."""

    completion: Completion | None
    error: BaseException | None
    records: list[CallRecord]
    sleeps: list[float]
    seconds: float

    @property
    def attempts(self) -> list[CallRecord]:
        return [r for r in self.records if r.kind == "attempt"]

    @property
    def switches(self) -> list[CallRecord]:
        return [r for r in self.records if r.kind == "switch"]


async def run_trial(
    urls: dict[str, str],
    chain: list[str],
    *,
    request: CompletionRequest = TRIAL_REQUEST,
    real_sleep: bool = False,
    **settings: Any,
) -> Trial:
    """Route `request` through real OpenAICompatProviders at `urls`; never raises the call's error."""
    from storyengine.providers.registry import build_providers

    config = trial_settings(urls, chain, **settings)
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if real_sleep:
            await asyncio.sleep(seconds)

    router = Router(config, build_providers(config), sleep=sleep)
    recorder = RunRecorder("fault-trial")
    completion: Completion | None = None
    error: BaseException | None = None
    started = time.perf_counter()
    try:
        with recorder.active():
            completion = await router.generate(request, check=check_title)
    except Exception as exc:
        error = exc
    finally:
        await router.aclose()
    return Trial(completion, error, recorder.records, sleeps, time.perf_counter() - started)
