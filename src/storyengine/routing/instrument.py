"""Instrumentation: the one layer that records. Two wrappers feed the same sinks.

    Instrumented         around a component's whole chain: one `call` row per Router call
    RecordedAttempts     around one provider's attempt (inside Retrying): one `attempt` row each
    RecordedLink         around one link of a fallback chain: notes why the chain moved on

Retry, fallback and cache know nothing of recording. An attempt's outcome is only known once
the next thing happens, so its row waits in the call's scope: the next attempt of the same
provider makes it `retry`; an attempt of another provider makes it final (`error` or
`invalid`), and after a failed link (retried out, or skipped by its breaker) the next
provider's first attempt adds a `switch` row (outcome `fallback`); the end of the call makes it final,
or `ok` when the call's answer is that attempt's text made usable (a cut-off draft kept as far
as it goes).

An answer a check refused (not JSON, the wrong shape, words re-asked) is also kept whole, with its
errors, in `invalid_json/` (failures.InvalidOutputLog), by `RecordedAttempts`.

Rows go to the run's `RunRecorder` (a context variable, so the concurrent scenes of one run
record into that run, and two runs in one process never mix) and to every sink the router was
given: the SQLite run log, OpenTelemetry spans (see telemetry.py).

    attempt  one provider call                  outcome ok | retry | error | invalid
    switch   the chain moved on to the next     outcome fallback
    call     what the caller got                outcome ok | error | invalid
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, cast

from ..errors import SchemaValidationError, is_output_problem
from ..failures import InvalidOutputLog
from ..hashing import canonical_json, prompt_hash, sha256_hex
from ..structuring import format_errors
from ..types import CallRecord, Completion, CompletionRequest, Kind, Outcome
from .base import Check, Generator
from .error_text import short_error

__all__ = [
    "CallRecord",
    "Instrumentation",
    "Instrumented",
    "RecordedAttempts",
    "RecordedLink",
    "RunRecorder",
    "RunSink",
    "Sink",
    "current_recorder",
    "is_output_problem",
    "params_snapshot",
    "prompt_hash",
    "short_error",
]

_SECRET_KEY = re.compile(r"api[_-]?key|authorization|secret|password|bearer", re.IGNORECASE)


class Sink(Protocol):
    """Where finished rows go (the run log, OpenTelemetry). Must not raise and must not block."""

    def record(self, record: CallRecord) -> None: ...


class RunSink(Protocol):
    """A sink that also keeps runs (the SQLite run log): a row per run, its status when it ends."""

    def start_run(self, run_id: str, premise: str, meta: dict[str, Any] | None = None) -> None: ...

    def finish_run(self, run_id: str, status: str, error: str | None = None) -> None: ...


class RunRecorder:
    """The rows of one run, in order (they become `Story.meta["calls"]`), plus the run's own sinks;
    `start` and `finish` tell the sinks that keep runs (`RunSink`) that the run began and ended."""

    def __init__(self, run_id: str | None, *sinks: Sink | None, runs: Sequence[RunSink] = ()) -> None:
        self.run_id = run_id
        self.sinks = [s for s in sinks if s is not None]
        self.runs = list(runs)
        self.records: list[CallRecord] = []

    def start(self, premise: str, meta: dict[str, Any]) -> None:
        for sink in self.runs:
            sink.start_run(str(self.run_id), premise, meta)

    def finish(self, status: str, error: str | None = None) -> None:
        for sink in self.runs:
            sink.finish_run(str(self.run_id), status, error)

    def record(self, record: CallRecord) -> CallRecord:
        self.records.append(record)
        for sink in self.sinks:
            sink.record(record)
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
current_step: ContextVar[str | None] = ContextVar("storyengine_step", default=None)
"""The run's step being made ("scene.4"), set by the run engine: every call record names it."""


class Instrumentation:
    """The sinks of one router; makes the two wrappers that feed them. `invalid_outputs` keeps
    every answer a check refused, with its errors (`invalid_json/`: failures.InvalidOutputLog)."""

    def __init__(self, sinks: Sequence[Sink] = (), invalid_outputs: InvalidOutputLog | None = None) -> None:
        self.sinks = list(sinks)
        self.invalid_outputs = invalid_outputs

    async def invalid(
        self, request: CompletionRequest, provider: str, model: str, exc: SchemaValidationError
    ) -> None:
        """Keep an answer its check refused (a file write: off the event loop)."""
        if self.invalid_outputs is None:
            return
        await asyncio.to_thread(
            self.invalid_outputs.record,
            component=request.component,
            stage=request.stage,
            attempt=request.attempt,
            prompt_hash=prompt_hash(request.messages),
            provider=provider,
            model=model,
            errors=format_errors(exc),
            raw_text=exc.raw_text,
            repaired_text=exc.repaired_text,
        )

    def recorder(self, run_id: str) -> RunRecorder:
        """The recorder of run `run_id`: its rows, and its start and end told to the sinks that keep runs."""
        runs = [s for s in self.sinks if callable(getattr(s, "start_run", None))]
        return RunRecorder(run_id, runs=cast(list[RunSink], runs))

    def emit(self, record: CallRecord) -> None:
        recorder = current_recorder.get()
        record = record.model_copy(update={"run_id": recorder.run_id if recorder else None})
        if recorder is not None:
            recorder.record(record)
        for sink in self.sinks:
            sink.record(record)

    def calls(self, inner: Generator) -> Instrumented:
        return Instrumented(inner, self)

    def attempts(self, inner: Generator, *, provider: str, model: str) -> RecordedAttempts:
        return RecordedAttempts(inner, provider=provider, model=model, instrumentation=self)

    def link(self, inner: Generator, *, provider: str) -> RecordedLink:
        return RecordedLink(inner, provider=provider)


_NO_SINKS = Instrumentation()


@dataclass
class _Pending:
    """An attempt whose outcome waits for what comes next."""

    request: CompletionRequest
    provider: str
    model: str
    latency_s: float
    completion: Completion | None
    error: BaseException


@dataclass
class _CallScope:
    call_id: str
    instrumentation: Instrumentation
    attempts: int = 0
    provider: str = ""
    model: str = ""
    pending: _Pending | None = None
    failed_link: tuple[str, CompletionRequest, BaseException] | None = None  # the chain moves on from it

    def settle(self, outcome: Outcome) -> None:
        """Write the waiting attempt's row with `outcome`."""
        if self.pending is not None:
            p, self.pending = self.pending, None
            row = _row(
                p.request,
                "attempt",
                self.call_id,
                p.provider,
                p.model,
                outcome,
                p.latency_s,
                p.completion,
                p.error,
            )
            self.instrumentation.emit(row)


_current_call: ContextVar[_CallScope | None] = ContextVar("storyengine_call", default=None)


class RecordedAttempts:
    """A Generator around one provider's attempt that records it (see the module docstring)."""

    def __init__(
        self, inner: Generator, *, provider: str, model: str, instrumentation: Instrumentation | None = None
    ) -> None:
        self.inner = inner
        self.provider = provider
        self.model = model
        self.instrumentation = instrumentation or _NO_SINKS

    async def generate(self, request: CompletionRequest, check: Check | None = None) -> Completion:
        scope = _current_call.get()
        if scope is not None:
            self._before(scope)
        started = time.perf_counter()
        try:
            completion = await self.inner.generate(request, check)
        except Exception as exc:
            answered = getattr(exc, "completion", None)
            if isinstance(exc, SchemaValidationError) and exc.raw_text:
                await self.instrumentation.invalid(request, self.provider, self.model, exc)
            latency = answered.latency_s if answered is not None else time.perf_counter() - started
            pending = _Pending(request, self.provider, self.model, latency, answered, exc)
            if scope is None:
                self.instrumentation.emit(
                    _row(
                        request,
                        "attempt",
                        None,
                        self.provider,
                        self.model,
                        _final(exc),
                        latency,
                        answered,
                        exc,
                    )
                )
            else:
                scope.pending = pending
            raise
        # The provider's own measure (an embedded call excludes its wait for the model lock).
        row = _row(
            request,
            "attempt",
            scope.call_id if scope else None,
            self.provider,
            self.model,
            "ok",
            completion.latency_s,
            completion,
            None,
        )
        self.instrumentation.emit(row)
        return completion

    def _before(self, scope: _CallScope) -> None:
        pending = scope.pending
        if pending is not None:
            scope.settle("retry" if pending.provider == self.provider else _final(pending.error))
        failed = scope.failed_link
        if failed is not None and failed[0] != self.provider:
            source, request, error = failed
            scope.failed_link = None
            switch = _row(request, "switch", scope.call_id, source, "", "fallback", 0.0, None,
                          f"switching to {self.provider}: {short_error(error)}")  # fmt: skip
            scope.instrumentation.emit(switch)
        scope.attempts += 1
        scope.provider, scope.model = self.provider, self.model


class RecordedLink:
    """A Generator around one link of a fallback chain: notes its failure (a retried-out provider,
    one its breaker skips), so the next provider's first attempt writes the `switch` row."""

    def __init__(self, inner: Generator, *, provider: str) -> None:
        self.inner = inner
        self.provider_name = provider

    def __getattr__(self, name: str) -> Any:  # the wrapped link's own attributes (provider, ...)
        return getattr(self.inner, name)

    async def generate(self, request: CompletionRequest, check: Check | None = None) -> Completion:
        try:
            return await self.inner.generate(request, check)
        except Exception as exc:
            scope = _current_call.get()
            if scope is not None:
                scope.failed_link = (self.provider_name, request, exc)
            raise


class Instrumented:
    """Records the final outcome of every call, after whatever retries and fallbacks happened inside.

    The `attempt` of a call row is the number of provider attempts it took (0 for a cache hit).
    """

    def __init__(self, inner: Generator, instrumentation: Instrumentation | None = None) -> None:
        self.inner = inner
        self.instrumentation = instrumentation or _NO_SINKS

    async def generate(self, request: CompletionRequest, check: Check | None = None) -> Completion:
        scope = _CallScope(call_id=uuid.uuid4().hex[:16], instrumentation=self.instrumentation)
        token = _current_call.set(scope)
        started = time.perf_counter()
        try:
            completion = await self.inner.generate(request, check)
        except Exception as exc:
            outcome = _final(exc)
            if scope.pending is not None:
                scope.settle(_final(scope.pending.error))
            self.instrumentation.emit(
                _row(
                    request,
                    "call",
                    scope.call_id,
                    scope.provider,
                    scope.model,
                    outcome,
                    time.perf_counter() - started,
                    None,
                    exc,
                    attempt=scope.attempts,
                )
            )
            raise
        finally:
            _current_call.reset(token)
        # A waiting attempt whose text became the answer (a cut-off draft kept as far as it goes).
        scope.settle("ok")
        self.instrumentation.emit(
            _row(
                request,
                "call",
                scope.call_id,
                scope.provider,
                scope.model,
                "ok",
                time.perf_counter() - started,
                completion,
                None,
                attempt=scope.attempts,
            )
        )
        return completion


# -- rows --


def _final(error: BaseException) -> Outcome:
    return "invalid" if is_output_problem(error) else "error"


def _row(
    request: CompletionRequest,
    kind: Kind,
    call_id: str | None,
    provider: str,
    model: str,
    outcome: Outcome,
    latency_s: float,
    completion: Completion | None,
    error: BaseException | str | None,
    *,
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
        step=current_step.get(),
        prompt_hash=prompt_hash(request.messages),
        params_snapshot=params_snapshot(request),
        latency_s=latency_s,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        prompt_tokens_reused=usage.prompt_tokens_reused if usage else 0,
        cache_hit=completion.cached if completion is not None else False,
        finish_reason=completion.finish_reason if completion is not None else None,
        outcome=outcome,
        error=short_error(error),
    )


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
