"""Token budgeting: does a prompt plus its answer fit the provider's context window?"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .types import Message

# Chat templates add a few tokens per message (role markers, separators).
PER_MESSAGE_OVERHEAD = 6


@dataclass(frozen=True)
class Budget:
    """The token budget of one provider chain: the smallest window and a token counter."""

    context_window: int
    count_tokens: Callable[[str], int]
    margin: int = 16

    def prompt_tokens(self, messages: Iterable[Message]) -> int:
        return sum(self.count_tokens(m.content) + PER_MESSAGE_OVERHEAD for m in messages)

    def overflow(self, messages: Iterable[Message], max_tokens: int) -> int:
        """Tokens over the window (<= 0 when the request fits)."""
        return self.prompt_tokens(messages) + max_tokens + self.margin - self.context_window

    def room_for_answer(self, messages: Iterable[Message]) -> int:
        return self.context_window - self.margin - self.prompt_tokens(messages)


def clip_middle(text: str, max_chars: int) -> str:
    """Keep the head and the tail of `text` within `max_chars`, marking the cut."""
    if len(text) <= max_chars:
        return text
    marker = " […] "
    keep = max(0, max_chars - len(marker))
    head = keep * 2 // 3
    return text[:head] + marker + text[len(text) - (keep - head) :]
