"""Reading a streamed chat completion: server-sent events, each a chunk of the answer.

A stream (`"stream": true`) comes as `data: {chunk}` events, each holding a piece of the text
(`choices[0].delta.content`), the last of them a `finish_reason`, then (asked with
`stream_options.include_usage`) a chunk with the usage and no choices, then `data: [DONE]`.
`read_events` reads them as they arrive, sends each piece on (`streaming.delta`) and returns the
whole answer, held to the same guards as an answer read whole:

- at most `limit` bytes are read (`ResponseTooLarge`); the deadline is the caller's, for the whole
  stream (an `asyncio.timeout` around it), never per chunk;
- every line must be valid UTF-8 and every piece valid Unicode (no lone surrogate): a corrupt
  answer is refused (`BadResponse`), not patched;
- what is shown is redacted like the answer: a piece is held back while it could still be the
  start of a secret (`hold` characters), so a key split across two events is never shown;
- a stream that ends before the answer did (no `[DONE]` and no finish_reason, an event cut in
  the middle, an event that is not JSON) is a `BadResponse`: retried, never taken for a whole
  answer; `[DONE]` before a finish_reason is the server's own cut (`StreamInterrupted`: the
  provider asks again without a stream). (A connection dropped mid-stream is the caller's
  `ProviderUnavailable`, as for an answer read whole.)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from .. import streaming
from ..errors import BadResponse, StreamInterrupted
from .chat_answer import are_parts, text_parts
from .http_answer import ReadProgress, take_chunk
from .server_messages import excerpt

EVENT_STREAM = "text/event-stream"


def is_event_stream(response: httpx.Response) -> bool:
    """Whether a (successful) answer is a stream of events; a server that ignores `stream` answers
    with one JSON body instead, read whole."""
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    return 200 <= response.status_code < 300 and content_type == EVENT_STREAM


@dataclass
class StreamedAnswer:
    """A stream read to its end: what a chat completion read whole would have said."""

    text: str  # redacted: what the pieces shown add up to
    finish_reason: str | None
    usage: Any  # the last usage the server sent; None when it sent none
    model: str | None
    tool_call: bool  # a piece was a tool call (its text is not the answer's)
    received: int  # bytes


class _Shown:
    """The text so far, and how much of it (redacted) has been shown."""

    def __init__(self, redact: Callable[[str], str], hold: int) -> None:
        self.redact = redact
        self.hold = hold
        self.raw: list[str] = []
        self.shown = 0

    def add(self, piece: str) -> None:
        self.raw.append(piece)
        if not self.hold:  # no secret to look for: each piece as it comes
            self.shown += len(piece)
            streaming.delta(piece)
            return
        text = self.redact("".join(self.raw))
        upto = len(text) - self.hold
        if upto > self.shown:
            streaming.delta(text[self.shown : upto])
            self.shown = upto

    def finish(self) -> str:
        text = self.redact("".join(self.raw))
        streaming.delta(text[self.shown :])
        self.shown = len(text)
        return text


class _Reader:
    def __init__(
        self, where: str, shown: _Shown, redact: Callable[[str], str], refuse: Callable[[str], None]
    ) -> None:
        self.where = where
        self.shown = shown
        self.redact = redact
        self.refuse = refuse  # raises for a text that is no Unicode (a lone surrogate)
        self.data: list[str] = []  # the data lines of the event being read
        self.events = 0
        self.finish_reason: str | None = None
        self.usage: Any = None
        self.model: str | None = None
        self.tool_call = False
        self.done = False

    def line(self, raw: bytes) -> None:
        """One line of the stream (without its line break)."""
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadResponse(
                f"{self.where} is not valid UTF-8 (byte {exc.object[exc.start]:#04x} in event "
                f"{self.events + 1}); a corrupt answer is refused, not patched with replacement characters"
            ) from None
        if not line:
            self.dispatch()
        elif not line.startswith(":"):  # a comment (a keep-alive ping) otherwise
            name, _, value = line.partition(":")
            if name == "data":
                self.data.append(value.removeprefix(" "))

    def dispatch(self) -> None:
        """The event read so far is whole: take it in."""
        if not self.data:
            return
        data = "\n".join(self.data)
        self.data.clear()
        self.events += 1
        if data.strip() == "[DONE]":
            if self.finish_reason is None and not self.tool_call:
                said = f"after {len(self.shown.raw):,} characters" if self.shown.raw else "before any answer"
                raise StreamInterrupted(
                    f"{self.where} was ended ([DONE]) {said}, with no finish_reason: the server cut the "
                    "answer short (llama_cpp.server does so to a streamed answer whenever another "
                    "request arrives; start it with --interrupt_requests false, or set stream: off)"
                )
            self.done = True
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            raise BadResponse(
                f"{self.where} sent an event that is not JSON: {excerpt(self.redact(data))}"
            ) from None
        if not isinstance(chunk, dict):
            raise BadResponse(
                f"{self.where} sent an event that is not a JSON object: {excerpt(self.redact(data))}"
            )
        self.chunk(chunk)

    def chunk(self, chunk: dict[str, Any]) -> None:
        choices = chunk.get("choices")
        if chunk.get("error") is not None and not choices:
            error = chunk["error"]
            said = error.get("message", error) if isinstance(error, dict) else error
            raise BadResponse(f"{self.where} broke off with an error: {excerpt(self.redact(str(said)))}")
        if isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        if choices is None or choices == []:  # the usage chunk, or a server's own bookkeeping
            return
        if not isinstance(choices, list) or not isinstance(choices[0], dict):
            raise BadResponse(f"{self.where} sent a chunk whose choices are not a list of objects")
        choice = choices[0]
        delta = choice.get("delta", choice.get("message")) or {}
        if not isinstance(delta, dict):
            raise BadResponse(
                f"{self.where} sent a chunk whose delta is {type(delta).__name__}, not an object"
            )
        content = delta.get("content")
        if isinstance(content, list) and are_parts(content):
            content = text_parts(content) or ""
        if content is not None and not isinstance(content, str):
            raise BadResponse(
                f"{self.where} sent a piece of content that is {type(content).__name__}, not text"
            )
        if delta.get("tool_calls") or delta.get("function_call"):
            self.tool_call = True
        if content:
            self.refuse(content)
            self.shown.add(content)
        if choice.get("finish_reason"):
            self.finish_reason = str(choice["finish_reason"])


async def read_events(
    response: httpx.Response,
    url: str,
    progress: ReadProgress,
    *,
    limit: int,
    provider: str,
    redact: Callable[[str], str],
    hold: int,
    refuse: Callable[[str], None],
) -> StreamedAnswer:
    """Read the events of `response` to the stream's end; see the module docstring for the guards."""
    where = f"{provider}: the stream from {url}"
    reader = _Reader(where, _Shown(redact, hold), redact, refuse)
    pending = b""  # the start of a line whose end has not arrived
    try:
        async for chunk in response.aiter_bytes():
            take_chunk(progress, chunk, limit=limit, url=url, provider=provider)
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                reader.line(line.removesuffix(b"\r"))
                if reader.done:
                    return _answer(reader, progress)
        if pending.strip():
            raise BadResponse(
                f"{where} was cut in the middle of an event, after {progress.received:,} bytes; the "
                "server or a proxy ended it early"
            )
        reader.dispatch()  # a last event without its blank line
        if not reader.done and reader.finish_reason is None:
            raise BadResponse(
                f"{where} ended before the answer did (no [DONE] and no finish_reason, after "
                f"{progress.received:,} bytes); the server or a proxy cut it short"
            )
        return _answer(reader, progress)
    except BadResponse as exc:
        exc.provider = provider
        raise


def _answer(reader: _Reader, progress: ReadProgress) -> StreamedAnswer:
    return StreamedAnswer(
        text=reader.shown.finish(),
        finish_reason=reader.finish_reason,
        usage=reader.usage,
        model=reader.model,
        tool_call=reader.tool_call,
        received=progress.received,
    )
