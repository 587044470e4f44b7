"""The web app's guard: an access token for the API, bounded request bodies, no bare 500.

A pure ASGI middleware, so it wraps the event stream without buffering it:

- **Token** (when the app has one; `storyengine serve` makes one when it binds beyond
  loopback): every request under `/api/` must carry it, as `Authorization: Bearer TOKEN` or
  as `?token=TOKEN` (an EventSource or a download link cannot set headers). Without it:
  HTTP 401, and nothing is started. The page (`/`), its static files and the API docs need no
  token: they hold no data, and the page reads the token from its own `?token=`.
- **Body size**: a request body over `max_body_bytes` is refused with HTTP 413, by its
  Content-Length before reading, or as soon as a chunked body grows past the limit.
- **Errors**: an exception that escapes the app before it answered becomes a JSON 500 that
  says what failed (`{"error": ...}`), never a bare "Internal Server Error".
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

logger = logging.getLogger("storyengine")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PROTECTED_PREFIX = "/api/"
DEFAULT_MAX_BODY_BYTES = 1_000_000
_BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class BodyTooLarge(Exception):
    pass


class Guard:
    """Token check, body limit and JSON errors in front of `app`."""

    def __init__(
        self, app: ASGIApp, *, token: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    ) -> None:
        self.app = app
        self.token = token or None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if (
            self.token
            and (path.startswith(PROTECTED_PREFIX) or path == "/api")
            and not self.authorized(scope)
        ):
            await _answer(
                send,
                401,
                "this server needs its access token: open the URL that `storyengine serve` printed "
                "(it ends in ?token=...), or send the header Authorization: Bearer TOKEN",
                {"www-authenticate": "Bearer"},
            )
            return
        if scope.get("method") in _BODY_METHODS:
            declared = _header(scope, b"content-length")
            if declared is not None and declared.strip().isdigit() and int(declared) > self.max_body_bytes:
                await _answer(send, 413, self._too_large())
                return
            try:
                receive = await self._buffered(receive)
            except BodyTooLarge:
                await _answer(send, 413, self._too_large())
                return
        await self.app(scope, receive, send)  # errors: web/errors.py answers them as JSON

    def authorized(self, scope: Scope) -> bool:
        assert self.token is not None
        expected = self.token.encode()
        header = _header(scope, b"authorization")
        if header is not None:
            scheme, _, value = header.partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), expected):
                return True
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        return any(hmac.compare_digest(given.encode(), expected) for given in query.get("token", []))

    def _too_large(self) -> str:
        return f"the request body is larger than {self.max_body_bytes:,} bytes (web.max_request_bytes)"

    async def _buffered(self, receive: Receive) -> Receive:
        """Read the body (at most max_body_bytes), then hand it to the app as if unread."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                raise BodyTooLarge
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            if messages:
                return messages.pop(0)
            return await receive()  # after the body: http.disconnect, when it comes

        return replay


def _clean(text: str) -> str:
    from ..config import secret_values
    from ..secrets import scrub

    text = " ".join(scrub(text, secret_values()).split())
    return text[:300] or "no details"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _answer(send: Send, status: int, error: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": error}).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


__all__ = ["DEFAULT_MAX_BODY_BYTES", "Guard"]
