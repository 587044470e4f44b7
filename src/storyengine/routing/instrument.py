"""Instrumentation: one `CallRecord` per attempt, per fallback switch and per finished call.

The active `RunRecorder` lives in the context variable `current_recorder`. asyncio copies
the context into every task it creates, so the concurrent scenes of one run all record
into that run's recorder, and two runs in one process never mix. Nothing here is shared
mutable state on a router or a provider.

Rows come in three kinds:

    attempt  one provider call made by `Retrying`       outcome ok | retry | error | invalid
    switch   `Fallback` moved on to the next provider   outcome fallback
    call     what the caller of `Router.generate` got   outcome ok | error | invalid

`retry`: this attempt failed and the same provider is asked again. `error`: a provider or
transport failure with no retry left. `invalid`: the output was unusable (empty, cut off
or not schema-valid) with no retry left.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import EmptyOutput, SchemaValidationError, TruncatedOutput
from ..types import Completion, CompletionRequest, Message
from .base import Check, Generator
from .cache import canonical_json

if TYPE_CHECKING:
    from ..runlog import RunLog

Outcome = Literal["ok", "retry", "fallback", "error", "invalid"]
Kind = Literal["attempt", "switch", "call"]

_ERROR_CHARS = 300
_SECRET_KEY = re.compile(r"api[_-]?key|authorization|secret|password|bearer", re.IGNORECASE)
_SECRET_TEXT = re.compile(r"(Bearer\s+)\S+|\bsk-[A-Za-z0-9_-]{8,}", re.IGNORECASE)


class CallRecord(BaseModel):
    """One row of the run log: what was asked, of whom, and what came of it."""

    model_config = ConfigDict(extra="forbid")

    run_id: str | None = None
    call_id: str | None = None
    kind: Kind = "attempt"
    component: str
    stage: str
    attempt: int
    provider: str
    model: str = ""
    prompt_hash: str
    params_snapshot: dict[str, Any] = Field(default_factory=dict)
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hit: bool = False
    finish_reason: str | None = None
    outcome: Outcome
    error: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class RunRecorder:
    """The records of one run, in order; each is also written to the run log when there is one."""

    def __init__(self, run_id: str, runlog: RunLog | None = None) -> None:
        self.run_id = run_id
        self.runlog = runlog
        self.records: list[CallRecord] = []

    def record(self, record: CallRecord) -> CallRecord:
        record = record.model_copy(update={"run_id": self.run_id})
        self.records.append(record)
        if self.runlog is not None:
            self.runlog.record_call(record)
        return record

    @property
    def calls(self) -> list[CallRecord]:
        """The records so far (the same list as `records`)."""
        return self.records

    @contextmanager
    def active(self) -> Iterator[RunRecorder]:
        """Make this the recorder of the current context (and of every task started inside it)."""
        token = current_recorder.set(self)
        try:
            yield self
        finally:
            current_recorder.reset(token)


current_recorder: ContextVar[RunRecorder | None] = ContextVar("storyengine_recorder", default=None)


@dataclass
class _CallScope:
    """What `Instrumented` needs to know about the attempts made inside one call."""

    call_id: str
    attempts: int = 0
    provider: str = ""
    model: str = ""


_current_call: ContextVar[_CallScope | None] = ContextVar("storyengine_call", default=None)


# -- hashing and redaction --


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def prompt_hash(messages: Sequence[Message]) -> str:
    """sha256 of the canonical JSON of the messages (role, content), hashed as the cache key does."""
    return sha256_hex(canonical_json([m.model_dump() for m in messages]))


def params_snapshot(request: CompletionRequest) -> dict[str, Any]:
    """`request.params()` with the JSON schema replaced by its hash and secret-looking keys redacted."""
    params = request.params()
    schema = params.get("json_schema")
    if schema is not None:
        try:
            params["json_schema"] = "sha256:" + sha256_hex(canonical_json(schema))
        except (TypeError, ValueError):  # a schema that is not plain JSON
            params["json_schema"] = "sha256:" + sha256_hex(repr(schema))
    return _redact_keys(params)


def _redact_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "***" if _SECRET_KEY.search(str(k)) else _redact_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_keys(v) for v in value]
    return value


def short_error(error: BaseException | str | None) -> str | None:
    """A one-line error text for the log, with anything that looks like a key blanked out."""
    if error is None:
        return None
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    text = _SECRET_TEXT.sub(lambda m: (m.group(1) or "") + "***", " ".join(text.split()))
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 1] + "…"


def is_output_problem(error: BaseException) -> bool:
    """True for an answer that arrived but is unusable (as opposed to a failed call)."""
    return isinstance(error, EmptyOutput | TruncatedOutput | SchemaValidationError)


# -- recording --


def record_attempt(
    request: CompletionRequest,
    *,
    provider: str,
    model: str,
    outcome: Outcome,
    latency_s: float = 0.0,
    completion: Completion | None = None,
    error: BaseException | str | None = None,
    kind: Kind = "attempt",
) -> CallRecord | None:
    """Record one attempt (or a fallback switch) in the current run, if a recorder is active."""
    scope = _current_call.get()
    if scope is not None and kind == "attempt":
        scope.attempts += 1
        scope.provider, scope.model = provider, model
    recorder = current_recorder.get()
    if recorder is None:
        return None
    record = _make_record(
        request,
        kind=kind,
        call_id=scope.call_id if scope else None,
        provider=provider,
        model=model,
        outcome=outcome,
        latency_s=latency_s,
        completion=completion,
        error=error,
    )
    return recorder.record(record)


def _make_record(
    request: CompletionRequest,
    *,
    kind: Kind,
    call_id: str | None,
    provider: str,
    model: str,
    outcome: Outcome,
    latency_s: float,
    completion: Completion | None,
    error: BaseException | str | None,
    attempt: int | None = None,
) -> CallRecord:
    usage = completion.usage if completion is not None else None
    return CallRecord(
        call_id=call_id,
        kind=kind,
        component=request.component,
        stage=request.stage,
        attempt=request.attempt if attempt is None else attempt,
        provider=completion.provider if completion is not None else provider,
        model=completion.model if completion is not None else model,
        prompt_hash=prompt_hash(request.messages),
        params_snapshot=params_snapshot(request),
        latency_s=latency_s,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        cache_hit=completion.cached if completion is not None else False,
        finish_reason=completion.finish_reason if completion is not None else None,
        outcome=outcome,
        error=short_error(error),
    )


class Instrumented:
    """Records the final outcome of every call, after whatever retries and fallbacks happened inside.

    The `attempt` of a call row is the number of provider attempts it took (0 for a cache hit).
    """

    def __init__(self, inner: Generator) -> None:
        self.inner = inner

    async def generate(self, request: CompletionRequest, check: Check | None = None) -> Completion:
        scope = _CallScope(call_id=uuid.uuid4().hex[:16])
        token = _current_call.set(scope)
        started = time.perf_counter()
        try:
            completion = await self.inner.generate(request, check)
        except Exception as exc:
            outcome: Outcome = "invalid" if is_output_problem(exc) else "error"
            self._record(request, scope, outcome, time.perf_counter() - started, error=exc)
            raise
        finally:
            _current_call.reset(token)
        self._record(request, scope, "ok", time.perf_counter() - started, completion=completion)
        return completion

    @staticmethod
    def _record(
        request: CompletionRequest,
        scope: _CallScope,
        outcome: Outcome,
        latency_s: float,
        *,
        completion: Completion | None = None,
        error: BaseException | None = None,
    ) -> None:
        recorder = current_recorder.get()
        if recorder is None:
            return
        record = _make_record(
            request,
            kind="call",
            call_id=scope.call_id,
            provider=scope.provider,
            model=scope.model,
            outcome=outcome,
            latency_s=latency_s,
            completion=completion,
            error=error,
            attempt=scope.attempts,
        )
        recorder.record(record)
