"""Copies: two texts that say the same (the same words, or most of them), and the first such pair
of a list (copied rationales, suggestions, beat purposes).
"""

from __future__ import annotations

from .segment import words


def similar(a: str, b: str) -> bool:
    """The same words, or (six words or more each) at least 80 % the same words."""
    wa, wb = words(a), words(b)
    if wa == wb:
        return True
    sa, sb = set(wa), set(wb)
    if min(len(sa), len(sb)) < 6:
        return False
    return len(sa & sb) / len(sa | sb) >= 0.8


def first_similar(texts: list[str]) -> tuple[int, int] | None:
    """The indexes of the first pair of `texts` that are `similar`."""
    for j in range(len(texts)):
        for i in range(j):
            if similar(texts[i], texts[j]):
                return i, j
    return None
