"""The web app's guard: who may ask, what they may send, and the headers of every answer.

A pure ASGI middleware, so it wraps the event stream without buffering it. In order:

- **Host**: the `Host` header must name this server: a loopback name (localhost, 127.0.0.1,
  [::1]) or the address it was started on (bound to every interface: also any IP address and
  this machine's names). A page of another site whose name was rebound to 127.0.0.1 (DNS
  rebinding) sends its own name, and gets HTTP 403: it can neither read a story nor start a
  run. A request without `Host` (HTTP/1.0) cannot come from a browser, and passes.
- **Token** (when the app has one; `storyengine serve` makes one when it binds beyond
  loopback): every request under `/api/` must carry it, as `Authorization: Bearer TOKEN` or
  as `?token=TOKEN` (an EventSource or a download link cannot set headers). Without it:
  HTTP 401, and nothing is started. The page (`/`), its static files and the API docs need no
  token: they hold no data, and the page reads the token from its own `?token=`.
- **Origin**: a request that can change something (POST, PUT, PATCH, DELETE) sent by a page of
  another origin (`Origin` not this server's, or `Sec-Fetch-Site: cross-site`) gets HTTP 403.
  Clients that are not browsers send no `Origin`, and pass.
- **JSON only**: such a request must say `Content-Type: application/json`, also when it has no
  body (restore, resume): else HTTP 415. A form or a `text/plain` body, which any site may post
  without asking the browser first, is never taken.
- **Body size**: a request body over `max_body_bytes` is refused with HTTP 413, by its
  Content-Length before reading, or as soon as a chunked body grows past the limit.
- **Headers**: every answer says `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`,
  `Referrer-Policy: no-referrer` and a Content-Security-Policy that lets the page run only its
  own static files (the API docs also load Swagger UI / ReDoc from their CDN), and no frame hold it.
- **Errors**: an exception that escapes the app before it answered becomes a JSON 500 that
  says what failed (`{"error": ...}`), never a bare "Internal Server Error".
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

logger = logging.getLogger("storyengine")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PROTECTED_PREFIX = "/api/"
DEFAULT_MAX_BODY_BYTES = 1_000_000
_BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_EVERY_INTERFACE = {"", "0.0.0.0", "::", "[::]"}

PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
"""The page loads only its own script and style sheet, and talks only to this server."""
DOCS_POLICY = (
    "default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "font-src https://fonts.gstatic.com; worker-src blob:; connect-src 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
"""FastAPI's /docs and /redoc pages: an inline script and Swagger UI / ReDoc from their CDN."""
DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc")
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",  # the page's URL may hold its ?token=
}


class BodyTooLarge(Exception):
    pass


class Guard:
    """Host, token, origin, content type and body checks, and security headers, in front of `app`.

    `hosts` are the names the server was started on, allowed in `Host` beside the loopback
    names (see the module's docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        hosts: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.token = token or None
        self.max_body_bytes = max_body_bytes
        self.hosts = Hosts(hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        send = _with_headers(send, DOCS_POLICY if path in DOCS_PATHS else PAGE_POLICY)
        host = _header(scope, b"host")
        if host is not None and not self.hosts.allows(host):
            await _answer(send, 403, self.hosts.refusal(host))
            return
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
            refused = _cross_site(scope, host)
            if refused:
                await _answer(send, 403, refused)
                return
            declared = _header(scope, b"content-length")
            if declared is not None and declared.strip().isdigit() and int(declared) > self.max_body_bytes:
                await _answer(send, 413, self._too_large())
                return
            media_type = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
            if media_type != "application/json":
                given = f"Content-Type {media_type}" if media_type else "no Content-Type"
                await _answer(
                    send,
                    415,
                    f"this server takes only JSON: send {scope.get('method')} requests with the header "
                    f"Content-Type: application/json, also without a body (this one had {given})",
                )
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


class Hosts:
    """The names a `Host` header may give: loopback names, the address the server was started
    on, and (bound to every interface) any IP address and this machine's own names.

    An IP address cannot be rebound, so only names are at stake: a page's name rebound to this
    machine still arrives as that name, which is not in the list."""

    def __init__(self, bound: Iterable[str] = ()) -> None:
        given = [_bare(h) for h in bound]
        self.every_interface = any(h in _EVERY_INTERFACE for h in given)
        self.names = {*LOOPBACK_NAMES, *(h for h in given if h not in _EVERY_INTERFACE)}
        if self.every_interface:
            self.names |= {_bare(socket.gethostname()), _bare(socket.getfqdn())} - {""}

    def allows(self, header: str) -> bool:
        name = _bare(_host_name(header))
        if name in self.names:
            return True
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return False
        return address.is_loopback or self.every_interface

    def refusal(self, header: str) -> str:
        shown = ", ".join(sorted(f"[{n}]" if ":" in n else n for n in self.names))
        return (
            f"this server answers only to {shown}, not to the Host {header[:100]!r}: open it by one of "
            "those names (a page of another site cannot use this server)"
        )


def _host_name(header: str) -> str:
    """The name of a Host header: without its port, an IPv6 address without its brackets."""
    header = header.strip()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    name, colon, port = header.rpartition(":")
    return name if colon and port.isdigit() and ":" not in name else header


def _bare(name: str) -> str:
    return name.strip().strip("[]").rstrip(".").lower()


def _cross_site(scope: Scope, host: str | None) -> str | None:
    """Why a request that changes something comes from another site's page, or None."""
    origin = _header(scope, b"origin")
    if origin is not None:
        parts = urlsplit(origin.strip())
        own = (
            host is not None
            and parts.scheme in ("http", "https")
            and parts.netloc.lower() == host.strip().lower()
        )
        if not own:
            return (
                f"a page of another origin ({origin[:100]}) may not change anything here; use this "
                "server's own page, or a client that sends no Origin"
            )
    if (_header(scope, b"sec-fetch-site") or "").strip().lower() == "cross-site":
        return "a page of another site may not change anything here; use this server's own page"
    return None


def _with_headers(send: Send, policy: str) -> Send:
    """`send`, adding the security headers (and `policy` as the CSP) to the answer's start."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            present = {bytes(k).lower() for k, _ in headers}
            extra = {**SECURITY_HEADERS, "content-security-policy": policy}
            headers += [(k.encode(), v.encode()) for k, v in extra.items() if k.encode() not in present]
            message = {**message, "headers": headers}
        await send(message)

    return sending


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


__all__ = ["DEFAULT_MAX_BODY_BYTES", "Guard", "Hosts"]
