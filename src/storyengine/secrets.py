"""Which values are secret, and how to scrub them from text. The one source of that answer.

A value is secret when it is the value of an environment variable that

- a provider's config names as its `api_key_env` (whatever the name; every provider settings
  object registers its name here when it is validated), or
- is named `*_KEY`, `*_TOKEN` or `*_SECRET` (any case),

and is at least `MIN_SECRET_LENGTH` characters long (shorter values would redact ordinary
words). This module does not read the environment itself (config.py does): callers pass the
environment mapping, e.g. `config.secret_values()`.

Every place that writes text that may carry a secret (a provider's error message, the
invalid-output log, the circuit breaker's message) scrubs it with `scrub`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

SECRET_SUFFIXES = ("_KEY", "_TOKEN", "_SECRET")
MIN_SECRET_LENGTH = 8
REDACTED = "[redacted]"

_names: set[str] = set()
_names_lock = threading.Lock()


def register_secret_env(name: str | None) -> None:
    """Treat the value of environment variable `name` as a secret from now on (in this process)."""
    if name:
        with _names_lock:
            _names.add(name)


def secret_env_names() -> frozenset[str]:
    """The variable names registered by `register_secret_env` (the configured `api_key_env`s)."""
    with _names_lock:
        return frozenset(_names)


def is_secret_name(name: str, names: Iterable[str] | None = None) -> bool:
    """True when a variable called `name` holds a secret: configured as a key, or by its suffix."""
    configured = secret_env_names() if names is None else set(names)
    return name in configured or name.upper().endswith(SECRET_SUFFIXES)


def secret_values_in(environ: Mapping[str, str], names: Iterable[str] | None = None) -> list[str]:
    """The secret values in `environ`: of the configured key variables (or `names`) and of the
    variables named *_KEY, *_TOKEN or *_SECRET, each at least 8 characters, longest first."""
    configured = secret_env_names() if names is None else set(names)
    found = {
        value.strip()
        for name, value in environ.items()
        if is_secret_name(name, configured) and len(value.strip()) >= MIN_SECRET_LENGTH
    }
    return sorted(found, key=lambda value: (-len(value), value))


def scrub(text: str, secrets: Iterable[str], replacement: str = REDACTED) -> str:
    """`text` with every occurrence of every secret replaced (longest first: no partial leftovers)."""
    kept = {s.strip() for s in secrets if s and len(s.strip()) >= MIN_SECRET_LENGTH}
    for secret in sorted(kept, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, replacement)
    return text


__all__ = [
    "MIN_SECRET_LENGTH",
    "REDACTED",
    "SECRET_SUFFIXES",
    "is_secret_name",
    "register_secret_env",
    "scrub",
    "secret_env_names",
    "secret_values_in",
]
