"""What a server said, short enough to quote in an error message: its own error text, an HTML
page's visible text, a Retry-After header. Every text is scrubbed by the caller's `redact` before
it is cut (a cut must not leave half a key).
"""

from __future__ import annotations

import email.utils
import html
import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..secrets import scrub
from .http_answer import HTTPAnswer

_EXCERPT_CHARS = 200
_PAGE_TEXT_CHARS = 120


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def error_excerpt(response: HTTPAnswer, redact: Any) -> str:
    """The server's own error message, short: OpenAI's error.message, Ollama's error, FastAPI's detail.

    The whole body is scrubbed by `redact` before it is cut (a cut must not leave half a key)."""
    text = redact(response.text)
    try:
        data = json.loads(text)
    except ValueError:
        return body_excerpt(response, redact) or response.reason_phrase or "no error message"
    message: Any = data
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data.get("message")))
        if isinstance(error, dict):
            message = error.get("message", error)
        elif isinstance(error, list):
            message = "; ".join(_detail_line(item) for item in error)
        elif error is not None:
            message = error
    return excerpt(message if isinstance(message, str) else json.dumps(message))


def body_excerpt(response: HTTPAnswer, redact: Any) -> str:
    """A body that is not JSON, short: an HTML page (a proxy's error page, a web server at the wrong
    address) as its visible text only, never its markup or style sheet."""
    text = redact(response.text)
    content_type = response.headers.get("Content-Type", "").lower()
    if "html" not in content_type and not _HTML_START.match(text):
        return excerpt(text)
    visible = _page_text(_HTML_HIDDEN.sub(" ", text), redact)  # the body's text; the title repeats it
    if not visible:
        title = _HTML_TITLE.search(text)
        visible = _page_text(title.group(1), redact) if title else ""
    if len(visible) > _PAGE_TEXT_CHARS:
        visible = visible[: _PAGE_TEXT_CHARS - 1] + "…"
    said = f" saying “{visible}”" if visible else ""
    return (
        f"an HTML page came back{said} (a proxy or another web server answered, not the API: "
        "check base_url of this provider and the server behind it)"
    )


_HTML_START = re.compile(r"\s*<(!doctype\s+html|html|head|body)\b", re.IGNORECASE)
_HTML_HIDDEN = re.compile(r"<(script|style|head)\b.*?</\1\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL)
_HTML_TAG = re.compile(r"<[^>]*>")
_HTML_TITLE = re.compile(r"<title\b[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)


def _page_text(markup: str, redact: Any) -> str:
    """The text a browser would show for `markup`, on one line."""
    return " ".join(redact(html.unescape(_HTML_TAG.sub(" ", markup))).split())


def _detail_line(item: Any) -> str:
    if isinstance(item, dict) and "msg" in item:
        loc = ".".join(str(part) for part in item.get("loc", ()))
        return f"{loc}: {item['msg']}" if loc else str(item["msg"])
    return str(item)


def excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _EXCERPT_CHARS else text[: _EXCERPT_CHARS - 1] + "…"


def redactor(key: str | None, secrets: list[str]) -> tuple[Callable[[str], str], int]:
    """A function that takes `key` and every value of `secrets` out of a text (each becomes "***"),
    and how many characters a text shown piece by piece must hold back so that no piece shows the
    start of one: one less than the longest."""

    def redact(text: str) -> str:
        if key:
            text = text.replace(key, "***")
        return scrub(text, secrets, "***")

    return redact, max((len(secret) for secret in (key, *secrets) if secret), default=1) - 1
