"""The interface every routing wrapper shares with the router itself.

A `Provider` (providers/base.py) makes one call. A `Generator` is what the pipeline sees:
the same call plus an optional `check` that decides whether the answer is usable. Each
wrapper (retry, fallback, cache, instrumentation) is a Generator around a Generator, so
they compose in any order config asks for, and no step knows which are on.

`check(completion)` returns normally when the completion is usable and raises when it is
not: `SchemaValidationError` for output that does not validate, `EmptyOutput` or
`TruncatedOutput` for empty or cut-off text. Wrappers use it to retry, to fall back, and to
keep invalid output out of the cache.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from ..types import Completion, CompletionRequest

Check = Callable[[Completion], Any]


@runtime_checkable
class Generator(Protocol):
    async def generate(self, request: CompletionRequest, check: Check | None = None) -> Completion: ...
