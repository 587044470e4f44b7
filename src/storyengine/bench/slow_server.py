"""A local OpenAI-compatible server with a fixed latency and k parallel slots, for the concurrency bench.

`SlowServer(latency=0.5, slots=2)` listens on 127.0.0.1 (a free port) in a background thread.
POST /v1/chat/completions waits for one of `slots` slots (a semaphore), sleeps `latency`
seconds holding it, and answers with what `story_script` makes of the request (JSON for the
schema in `response_format`, short prose otherwise). GET /v1/models lists one model. Every
request's arrival, start (slot taken) and end are kept in `.timings`, and `.max_in_flight`
says how many ever ran at once.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..providers.fake_story import story_script
from ..types import CompletionRequest, Message

MODEL = "slow-story"
# Structuring requests name their schema after the component's model (see pipeline/story.py).
_COMPONENT_OF_SCHEMA = {
    "PlotStructure": "plot",
    "Scene": "scene",
    "Dialogue": "dialogue",
    "Evaluation": "evaluation",
    "Enhancement": "enhancement",
}


@dataclass
class Timing:
    arrived: float
    started: float
    ended: float


# What a free-writing prompt asks for, by its template's words (a server sees no component).
_PROMPT_COMPONENTS = (
    (re.compile(r"list of \d+ beats"), "plot"),
    (re.compile(r"Write the dialogue of this scene"), "dialogue"),
    (re.compile(r"Write scene \d+ of"), "scene"),
    (re.compile(r"You keep the story bible"), "bible"),
)


def _component_of_prompt(messages: tuple[Message, ...]) -> str:
    text = "\n".join(m.content for m in messages)
    return next((component for pattern, component in _PROMPT_COMPONENTS if pattern.search(text)), "scene")


def request_from_body(body: dict[str, Any]) -> CompletionRequest:
    """The storyengine request an OpenAI chat body stands for (enough for `story_script`)."""
    messages = tuple(
        Message(role=m.get("role", "user"), content=str(m.get("content") or ""))
        for m in body.get("messages", [])
        if m.get("role") in ("system", "user", "assistant")
    )
    schema, name = None, "output"
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema, name = spec.get("schema"), spec.get("name", "output")
    elif response_format.get("type") == "json_object":
        schema = response_format.get("schema")
    component = _COMPONENT_OF_SCHEMA.get(name) or _component_of_prompt(messages)
    return CompletionRequest(
        messages=messages or (Message(role="user", content=""),),
        temperature=float(body.get("temperature", 0.8)),
        seed=body.get("seed"),
        max_tokens=int(body.get("max_tokens") or 512),
        json_schema=schema,
        schema_name=name,
        component=component,
        # "structuring" also without a response_format: story_script then looks for a schema in
        # the prompt (prompt-only structuring) and writes prose when the prompt holds none.
        stage="structuring",
    )


class SlowServer:
    """See the module docstring. Use as a context manager, or call start() and stop()."""

    def __init__(self, latency: float, slots: int, *, host: str = "127.0.0.1", port: int = 0) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.latency = latency
        self.slots = slots
        self.timings: list[Timing] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(slots)
        self.host = host
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self._server.server_port}/v1"

    def start(self) -> SlowServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="slow-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> SlowServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        """Wait for a slot, sleep the latency, and return the chat completion for `body`."""
        arrived = time.perf_counter()
        with self._slots:
            started = time.perf_counter()
            with self._lock:
                self._in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self._in_flight)
            try:
                time.sleep(self.latency)
                text = story_script(request_from_body(body))
            finally:
                with self._lock:
                    self._in_flight -= 1
            ended = time.perf_counter()
        with self._lock:
            self.timings.append(Timing(arrived, started, ended))
        words = sum(len(str(m.get("content") or "").split()) for m in body.get("messages", []))
        return {
            "id": f"chatcmpl-{len(self.timings)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or MODEL,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": words, "completion_tokens": len(text.split())},
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body are two writes; with Nagle's algorithm on, the client's
                # delayed ACK would add ~40 ms to every answer.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return None

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._send(400, {"error": {"message": "the body is not JSON"}})
                    return
                self._send(200, server.answer(body))

        return Handler
