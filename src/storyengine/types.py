"""The values that cross the provider seam: messages, requests, completions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant"]
Stage = Literal["freeform", "structuring", "summarize", "check"]
Outcome = Literal["ok", "retry", "fallback", "error", "invalid"]
Kind = Literal["attempt", "switch", "call"]


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    content: str


class CompletionRequest(BaseModel):
    """One call to a model. Frozen: wrappers derive new requests with `model_copy(update=...)`.

    `json_schema` asks for structured output; each provider turns it into its own native
    mechanism (constrained decoding, response_format, a forced tool call) or ignores it when
    its structured-output mode is `none`. `component`, `stage` and `attempt` describe the
    call for metadata and logs; they never change what the model is sent.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    messages: tuple[Message, ...]
    temperature: float = Field(default=0.8, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    max_tokens: int = Field(default=512, ge=1)
    stop: tuple[str, ...] = ()
    timeout: float = Field(default=180.0, gt=0.0)
    json_schema: dict[str, Any] | None = None
    schema_name: str = "output"

    component: str = "adhoc"
    stage: Stage = "freeform"
    attempt: int = 1

    def params(self) -> dict[str, Any]:
        """What, besides the messages, decides the model's answer (the cache key's params)."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "max_tokens": self.max_tokens,
            "stop": list(self.stop),
            "json_schema": self.json_schema,
            "schema_name": self.schema_name,
        }


class Usage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Of prompt_tokens, those read from a prefix cache (the embedded model's KV, a server's prompt
    # cache) instead of evaluated; 0 when the provider does not say.
    prompt_tokens_reused: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Completion(BaseModel):
    """A model's answer. `finish_reason` is "stop", "length", "tool_calls" or what the server said."""

    model_config = ConfigDict(extra="forbid")

    text: str
    finish_reason: str
    usage: Usage = Field(default_factory=Usage)
    model: str
    provider: str
    latency_s: float = 0.0
    structured_mode: str = "none"
    cached: bool = False
    # `usage` is the provider's estimate, not the server's count (it sent none, or none usable).
    usage_estimated: bool = False
    # What the caller's `check` returned for this text (the validated object): set by the
    # wrapper that checked it, so nobody parses the same answer again. Never serialized.
    value: Any = Field(default=None, exclude=True, repr=False)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


class CallRecord(BaseModel):
    """One row of the run log: what was asked, of whom, and what came of it (see routing/instrument.py)."""

    model_config = ConfigDict(extra="forbid")

    run_id: str | None = None
    call_id: str | None = None
    kind: Kind = "attempt"
    component: str
    stage: str
    attempt: int
    provider: str
    model: str = ""
    step: str | None = None  # the run's step it was made for ("scene.4"; None outside a run's steps)
    prompt_hash: str
    params_snapshot: dict[str, Any] = Field(default_factory=dict)
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_reused: int = 0  # of prompt_tokens, read from a prefix cache (see Usage)
    cache_hit: bool = False
    finish_reason: str | None = None
    outcome: Outcome
    error: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
