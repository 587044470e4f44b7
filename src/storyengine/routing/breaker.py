"""Breaker: stop asking a provider that keeps failing, for a while.

    Breaker(Retrying(provider))

A *call failure* is a call whose retries all ended in a failure of the provider itself
(connection, timeout, 5xx, garbage, a model that will not run: a `ProviderError` that is not
an unusable answer). After `failures` of them in a row the breaker *opens*: for `cooldown`
seconds every call fails at once with `ProviderDown` ("marked down until ..."), so a
`Fallback` moves straight on to the next provider instead of spending the retry budget again.
After the cooldown the breaker is *half-open*: one call probes the provider (others still fail
fast meanwhile); if it succeeds the breaker closes, if it fails it opens for another cooldown.

A 429 whose Retry-After is longer than the retry layer may wait (`ProviderBusy`) opens the
breaker at once, for as long as the server asked (at most a day), instead of after `failures`
calls: the server said when it will answer again, and every call before then is wasted.

An answer that arrived but is unusable (empty, cut off, not schema-valid) proves the provider
is up: it resets the count and never trips the breaker.

The state is shared per provider object (`BreakerState.of(provider)`): every component's
chain that names a provider sees the same breaker, and it lasts as long as the provider (the
web app's and a batch's runs share it). A trip and a recovery are logged as warnings, and the
fallback's switch row in the run log says "marked down until ...".
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from ..errors import ProviderBusy, ProviderDown, ProviderError, is_output_problem
from ..secrets import scrub
from ..types import Completion, CompletionRequest
from .base import Check, Generator

logger = logging.getLogger("storyengine")

Clock = Callable[[], float]
State = Literal["closed", "open", "half-open"]

_ERROR_CHARS = 200
_LONGEST_HOLD = 86_400.0  # a Retry-After beyond a day is a server's mistake, not a plan


def counts_as_failure(error: BaseException) -> bool:
    """True for a failure of the provider itself, as opposed to an unusable answer it gave."""
    return isinstance(error, ProviderError) and not is_output_problem(error)


class BreakerState:
    """The breaker of one provider: consecutive failures, and until when it is open."""

    def __init__(
        self, name: str, *, failures: int = 3, cooldown: float = 60.0, clock: Clock = time.time
    ) -> None:
        if failures < 1:
            raise ValueError("breaker failures must be at least 1")
        if cooldown <= 0:
            raise ValueError("breaker cooldown must be positive")
        self.name = name
        self.failures = failures
        self.cooldown = cooldown
        self.clock = clock
        self.consecutive = 0
        self.open_until: float | None = None
        self.last_error = ""
        self.reason = ""
        self.probing = False
        self.trips = 0

    @classmethod
    def of(cls, provider: Any, *, failures: int, cooldown: float, clock: Clock = time.time) -> BreakerState:
        """The breaker shared by every chain that names `provider` (made on first use)."""
        name = str(getattr(provider, "name", "provider"))
        try:
            state = _by_provider.get(provider)
        except TypeError:  # not weak-referenceable: a breaker of its own
            return cls(name, failures=failures, cooldown=cooldown, clock=clock)
        if state is None:
            state = _by_provider[provider] = cls(name, failures=failures, cooldown=cooldown, clock=clock)
        return state

    @property
    def state(self) -> State:
        if self.open_until is None:
            return "closed"
        return "open" if self.clock() < self.open_until else "half-open"

    def admit(self) -> Literal["call", "probe"] | None:
        """May a call go to the provider now: as a plain call, as the one probe (half-open), or not."""
        state = self.state
        if state == "closed":
            return "call"
        if state == "half-open" and not self.probing:
            self.probing = True
            logger.warning("provider %s: cooldown over; probing it with one call", self.name)
            return "probe"
        return None

    def succeeded(self, probe: bool) -> None:
        if self.open_until is not None and probe:
            logger.warning("provider %s answers again; the circuit breaker is closed", self.name)
            self.open_until = None
        if probe:
            self.probing = False
        self.consecutive = 0

    def failed(self, error: BaseException, probe: bool) -> None:
        self.last_error = " ".join(str(error).split())[:_ERROR_CHARS]
        if isinstance(error, ProviderBusy) and error.retry_after:
            if probe:
                self.probing = False
            wait = min(error.retry_after, _LONGEST_HOLD)
            if self.state != "open" or (self.open_until or 0.0) < self.clock() + wait:
                # Not again for each of the concurrent calls that all got the same 429.
                self._trip(f"it answered 429 with Retry-After: {wait:g}s", seconds=wait)
            return
        if probe:
            self.probing = False
            self._trip(f"the probe after the cooldown failed too ({self.last_error})")
            return
        if self.open_until is not None:  # a call admitted before the trip, finishing late
            return
        self.consecutive += 1
        if self.consecutive >= self.failures:
            self._trip(f"{self.consecutive} calls in a row failed (last: {self.last_error})")

    def _trip(self, why: str, seconds: float | None = None) -> None:
        """Open the breaker for `seconds` (default: the cooldown), never shortening an open spell."""
        seconds = self.cooldown if seconds is None else seconds
        self.reason = why
        self.open_until = max(self.open_until or 0.0, self.clock() + seconds)
        self.trips += 1
        self.consecutive = 0
        logger.warning(
            "provider %s marked down for %gs until %s: %s", self.name, seconds, self.until_text(), why
        )

    def until_text(self) -> str:
        when = self.open_until if self.open_until is not None else self.clock()
        return datetime.fromtimestamp(when, UTC).strftime("%H:%M:%S UTC")

    def down_error(self, secrets: list[str] | None = None) -> ProviderDown:
        message = (
            f"{self.name}: marked down until {self.until_text()} by the circuit breaker "
            f"({self.reason or 'it kept failing'}); it is skipped until then"
        )
        if secrets:
            message = scrub(message, secrets, "***")
        return ProviderDown(message, provider=self.name, until=self.open_until or 0.0)


_by_provider: weakref.WeakKeyDictionary[Any, BreakerState] = weakref.WeakKeyDictionary()


class Breaker:
    """A Generator around one provider's generator (usually its `Retrying`) with a circuit breaker."""

    def __init__(
        self, inner: Generator, state: BreakerState, *, secrets: Callable[[], list[str]] | None = None
    ) -> None:
        self.inner = inner
        self.state = state
        self._secrets = secrets

    @classmethod
    def around(
        cls, provider: Any, inner: Generator, *, failures: int, cooldown: float, clock: Clock = time.time
    ) -> Breaker:
        """`inner` behind the breaker shared by every chain that names `provider`."""
        from ..config import secret_values

        state = BreakerState.of(provider, failures=failures, cooldown=cooldown, clock=clock)
        return cls(inner, state, secrets=secret_values)

    @property
    def name(self) -> str:
        return self.state.name

    def __getattr__(self, attribute: str) -> Any:
        """What the wrapped generator exposes (`provider`, `attempts`, ...), read through."""
        if attribute == "inner":  # not set yet (during unpickling or a failed __init__)
            raise AttributeError(attribute)
        return getattr(self.inner, attribute)

    async def generate(self, request: CompletionRequest, check: Check | None = None) -> Completion:
        state = self.state
        admitted = state.admit()
        if admitted is None:
            raise state.down_error(self._secrets() if self._secrets else None)
        probe = admitted == "probe"
        try:
            completion = await self.inner.generate(request, check)
        except Exception as exc:
            if counts_as_failure(exc):
                state.failed(exc, probe)
            elif is_output_problem(exc):  # an answer arrived, unusable: the provider is up
                state.succeeded(probe)
            elif probe:
                state.probing = False
            raise
        except BaseException:  # cancelled: let another call probe
            if probe:
                state.probing = False
            raise
        state.succeeded(probe)
        return completion


__all__ = ["Breaker", "BreakerState", "counts_as_failure"]
