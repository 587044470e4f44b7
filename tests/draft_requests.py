"""A free-writing request and a draft cut off at max_tokens: what the retry-layer tests send and get."""

from __future__ import annotations

from typing import Any

from storyengine.types import Completion, CompletionRequest, Message, Usage


def cut_off(text: str) -> Completion:
    """`text` as an answer cut off at a 400-token max_tokens."""
    return Completion(
        text=text, finish_reason="length", usage=Usage(completion_tokens=400), model="m", provider="p"
    )


def draft_request(**update: Any) -> CompletionRequest:
    """A sampled, seeded scene draft request with 400 tokens of room (fields in `update` replaced)."""
    fields: dict[str, Any] = {
        "messages": (Message(role="user", content="Write scene 1."),),
        "temperature": 0.8,
        "seed": 7,
        "max_tokens": 400,
        "stage": "freeform",
        "component": "scene",
    }
    return CompletionRequest(**{**fields, **update})
