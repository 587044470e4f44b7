"""The provider seam: one async method and a few capability flags."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..types import Completion, CompletionRequest

# finish_reason of a free-text answer the provider stopped because it fell into a loop; the loop
# is cut off (see providers/embedded.py). Not "length": the answer is used as it is.
LOOP_STOP = "loop"
STRUCTURED_MODES = ("json_schema", "json_object_schema", "ollama_format", "tool_call", "grammar", "none")


@runtime_checkable
class Provider(Protocol):
    """Anything that turns a `CompletionRequest` into a `Completion`.

    `structured_mode` names how `request.json_schema` is honoured ("none" = ignored, the
    caller falls back to prompt-only structuring). `context_window` is in tokens.
    Errors are raised as `storyengine.errors.ProviderError` subclasses.
    """

    name: str
    model: str
    context_window: int
    structured_mode: str

    async def complete(self, request: CompletionRequest) -> Completion: ...

    def count_tokens(self, text: str) -> int: ...

    async def aclose(self) -> None: ...


def estimate_tokens(text: str) -> int:
    """A calibrated estimate for providers without a local tokenizer: ~3.6 chars a token in English."""
    return max(1, int(len(text) / 3.6) + 1) if text else 0
