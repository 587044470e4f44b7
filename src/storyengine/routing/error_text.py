"""An error as one short line for a log row or a fallback note, with anything secret blanked out.

Shared by the wrappers (fallback.py notes why a chain moved on) and by instrument.py (the
`error` of every row); it records nothing itself.
"""

from __future__ import annotations

import re

from ..config import secret_values
from ..secrets import scrub

_ERROR_CHARS = 300
_SECRET_TEXT = re.compile(r"(Bearer\s+)\S+|\bsk-[A-Za-z0-9_-]{8,}", re.IGNORECASE)


def short_error(error: BaseException | str | None) -> str | None:
    """A one-line error text for the log, with anything that looks like a key blanked out."""
    if error is None:
        return None
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    first = (getattr(error, "validation_errors", None) or [{}])[0].get("msg")
    if first and first not in text:  # which rule fired, not only "1 validation error(s)"
        text = f"{text} ({first})"
    text = scrub(text, secret_values())  # every configured key, whatever its name
    text = _SECRET_TEXT.sub(lambda m: (m.group(1) or "") + "***", " ".join(text.split()))
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 1] + "…"
