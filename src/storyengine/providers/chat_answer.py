"""The parts of a chat completion that servers send in many shapes: its text and its usage.

A message's content may be a string, a list of text parts, or JSON the server parsed for you; a
structured answer may come as a tool call. Usage counts may be missing or not counts at all
(NaN, Infinity, negative, fractional): those are estimated from the text instead.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..types import CompletionRequest, Usage
from .base import estimate_tokens
from .server_messages import excerpt


def are_parts(content: list[Any]) -> bool:
    """Whether a list content is content parts (`{"type": ...}` objects or strings), not an answer
    that is a JSON array."""
    return all(isinstance(part, str) or (isinstance(part, dict) and "type" in part) for part in content)


def text_parts(parts: list[Any]) -> str | None:
    """The text of a content given as parts (`[{"type": "text", "text": ...}, ...]`), joined;
    None when no part is text."""
    texts: list[str] = []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and isinstance(part.get("text"), str):
            texts.append(part["text"])
    return "".join(texts) if texts else None


def tool_arguments(message: dict[str, Any]) -> str | None:
    """The arguments of the message's first tool call (or legacy function call) as JSON text."""
    calls = message.get("tool_calls")
    function: Any = None
    if isinstance(calls, list) and calls and isinstance(calls[0], dict):
        function = calls[0].get("function")
    elif isinstance(message.get("function_call"), dict):
        function = message["function_call"]
    if not isinstance(function, dict) or "arguments" not in function:
        return None
    arguments = function["arguments"]
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def usage_of(raw: Any, request: CompletionRequest, text: str) -> tuple[Usage, list[str]]:
    """The token counts of an answer, and the fields that held something other than a count.

    A count is a non-negative whole number (20 or 20.0); anything else the server put there (NaN,
    Infinity, -3, 2.5, "20") is treated as absent, like a missing field: estimated from the text."""
    fields = raw if isinstance(raw, dict) else {}
    prompt = "".join(m.content for m in request.messages)
    counts: dict[str, int] = {}
    bad: list[str] = []
    for field, source in (("prompt_tokens", prompt), ("completion_tokens", text)):
        value = fields.get(field)
        count = _count(value)
        if count is None:
            if value is not None:
                bad.append(f"{field}={excerpt(json.dumps(value))}")
            count = estimate_tokens(source)
        counts[field] = count
    # OpenAI, vLLM and llama.cpp's server say how much of the prompt their cache held.
    details = fields.get("prompt_tokens_details")
    reused = _count(details.get("cached_tokens")) if isinstance(details, dict) else None
    if reused is not None:
        counts["prompt_tokens_reused"] = min(reused, counts["prompt_tokens"])
    return Usage(**counts), bad


def _count(value: Any) -> int | None:
    """`value` as a token count, or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and value >= 0:
        return int(value)
    return None
