"""An OpenTelemetry sink: every call becomes a span, its attempts span events (GenAI conventions).

Spans go to the tracer provider the application configured (or the one given), so storyengine
never chooses an exporter. Needs `opentelemetry-api` (the `otel` extra brings the SDK too).
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..types import CallRecord

_NS = 1_000_000_000


class OpenTelemetrySink:
    """A `Sink` (routing/instrument.py) that turns `call` rows into `chat` spans."""

    def __init__(self, tracer_provider: Any = None) -> None:
        try:
            from opentelemetry import trace
        except ImportError:
            raise ConfigError(
                "logging.opentelemetry is true but OpenTelemetry is not installed; "
                "pip install 'storyengine[otel]'"
            ) from None
        self._trace = trace
        self.tracer = trace.get_tracer("storyengine", tracer_provider=tracer_provider)
        self._attempts: dict[str, list[CallRecord]] = {}

    def record(self, record: CallRecord) -> None:
        if record.kind != "call":
            self._attempts.setdefault(record.call_id or "", []).append(record)
            return
        attempts = self._attempts.pop(record.call_id or "", [])
        end = int(record.created_at.timestamp() * _NS)
        start = end - int(record.latency_s * _NS)
        params = record.params_snapshot
        span = self.tracer.start_span(
            f"chat {record.model}".strip(), start_time=start, attributes=self._attributes(record, params)
        )
        for row in attempts:
            span.add_event(
                f"storyengine.{row.kind}",
                {
                    "storyengine.provider": row.provider,
                    "storyengine.attempt": row.attempt,
                    "storyengine.outcome": row.outcome,
                    **({"error.message": row.error} if row.error else {}),
                },
                timestamp=int(row.created_at.timestamp() * _NS),
            )
        if record.outcome != "ok":
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, record.error or record.outcome))
        span.end(end_time=end)

    @staticmethod
    def _attributes(record: CallRecord, params: dict[str, Any]) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": record.provider,
            "gen_ai.provider.name": record.provider,
            "gen_ai.request.model": record.model,
            "gen_ai.response.model": record.model,
            "gen_ai.usage.input_tokens": record.prompt_tokens,
            "gen_ai.usage.output_tokens": record.completion_tokens,
            "storyengine.run_id": record.run_id or "",
            "storyengine.component": record.component,
            "storyengine.stage": record.stage,
            "storyengine.attempts": record.attempt,
            "storyengine.outcome": record.outcome,
            "storyengine.cache_hit": record.cache_hit,
            "storyengine.prompt_hash": record.prompt_hash,
        }
        for key, name in (
            ("temperature", "temperature"),
            ("top_p", "top_p"),
            ("max_tokens", "max_tokens"),
            ("seed", "seed"),
        ):
            if params.get(key) is not None:
                attributes[f"gen_ai.request.{name}"] = params[key]
        if record.finish_reason:
            attributes["gen_ai.response.finish_reasons"] = [record.finish_reason]
        if record.error:
            attributes["error.type"] = record.error.split(":", 1)[0]
        return attributes
