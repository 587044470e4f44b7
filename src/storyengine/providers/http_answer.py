"""Reading an HTTP answer within a size limit, and knowing how far it got when it did not.

An OpenAI-compatible server's answer is read as a stream of at most `max_response_bytes` (a
larger one is refused, not read: `ResponseTooLarge`), into an `HTTPAnswer` (a stream of events
is counted the same way: `take_chunk`, used by sse.py); `ReadProgress` keeps
how far the reading got, so a message about an answer that never finished can say so.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import ResponseTooLarge


async def read_body(
    response: httpx.Response, url: str, progress: ReadProgress, *, limit: int, provider: str
) -> bytes:
    """The decoded body, read in chunks; refused as soon as it is over `limit` bytes."""
    declared = response.headers.get("Content-Length", "")
    if declared.strip().isdigit() and int(declared) > limit:
        raise ResponseTooLarge(
            f"{provider}: the answer from {url} declares {int(declared):,} bytes, more than "
            f"max_response_bytes ({limit:,}); refused without reading it (raise max_response_bytes "
            "of this provider if its answers are really this large)",
            provider=provider,
        )
    chunks: list[bytes] = []
    async for chunk in response.aiter_bytes():
        take_chunk(progress, chunk, limit=limit, url=url, provider=provider)
        chunks.append(chunk)
    return b"".join(chunks)


def take_chunk(progress: ReadProgress, chunk: bytes, *, limit: int, url: str, provider: str) -> None:
    """Count a chunk read of an answer (whole or streamed); refuse the answer once it is over `limit`."""
    progress.received += len(chunk)
    if progress.received > limit:
        raise ResponseTooLarge(
            f"{provider}: the answer from {url} is larger than max_response_bytes ({limit:,}); "
            "refused after reading that much (raise max_response_bytes of this provider "
            "if its answers are really this large)",
            provider=provider,
        )


@dataclass
class ReadProgress:
    """How far reading an answer got (for the message when it does not finish)."""

    received: int = 0
    encoding: str = ""
    answering: bool = False  # the status line and headers arrived
    declared: str = ""  # the Content-Length the server announced, if any


@dataclass(frozen=True)
class HTTPAnswer:
    """A response read whole (within the deadline and the size limit)."""

    status_code: int
    reason_phrase: str
    headers: httpx.Headers
    url: str
    content: bytes
    encoding: str = "utf-8"

    @property
    def text(self) -> str:
        """The body for quoting in a message: invalid bytes replaced (never for the answer itself)."""
        try:
            return self.content.decode(self.encoding, errors="replace")
        except LookupError:  # an unknown charset
            return self.content.decode("utf-8", errors="replace")

    def strict_text(self) -> str:
        """The body as text; UnicodeDecodeError when its bytes are not valid in its charset."""
        try:
            return self.content.decode(self.encoding)
        except LookupError:  # an unknown charset
            return self.content.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.strict_text())


def network_reason(exc: BaseException) -> str:
    """The most telling reason for a transport failure: the OS error at its root, when there is one."""
    seen: BaseException | None = exc
    while seen is not None:
        errno = getattr(seen, "errno", None)
        if isinstance(seen, OSError) and errno:
            return os.strerror(errno).lower()
        seen = seen.__cause__ or seen.__context__
    return str(exc) or type(exc).__name__
