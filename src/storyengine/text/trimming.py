"""How a rule's repair cuts junk out of a text: without the sentences that hold it when others
remain, else the text ending before it; and a phrase without a mark left dangling at its end.
"""

from __future__ import annotations

from collections.abc import Callable

import regex

from .segment import sentences, words


def _words_before(text: str, offset: int) -> int:
    return len(words(text[:offset]))


def cut_before(text: str, offset: int) -> str:
    """`text` before `offset`, without the separators left dangling there."""
    return tidy_end(text[:offset].rstrip(" -–—/|,;:([{\"'“‘"))


def without_sentences(text: str, bad: Callable[[str], bool]) -> str | None:
    """`text` without its sentences that are `bad` (paragraphs kept apart); None when none or all
    of them are."""
    paragraphs = [sentences(p) for p in regex.split(r"\n\s*\n", text) if p.strip()]
    kept = [[s for s in p if not bad(s)] for p in paragraphs]
    if not any(kept) or sum(map(len, kept)) == sum(map(len, paragraphs)):
        return None
    return "\n\n".join(" ".join(p) for p in kept if p)


def drop_or_cut(text: str, offset: int, bad: Callable[[str], bool]) -> str | None:
    """Without the sentences that are `bad` when there are others (or, when the splitter cuts the
    junk apart, without the sentence that holds `offset`); a single sentence ends before `offset`
    (when two words or more come first); else None. Text after a sentence is never cut away."""
    said = sentences(text)
    if len(said) >= 2:
        if all(bad(s) for s in said):
            return None  # nothing but junk: no repair
        if not any(bad(s) for s in said):  # the splitter cut the junk apart
            bad = _holding(text, offset)
        kept = without_sentences(text, bad)
        if kept is not None:
            return kept
    return cut_before(text, offset) if _words_before(text, offset) >= 2 else None


def _holding(text: str, offset: int) -> Callable[[str], bool]:
    """A predicate true of the sentence of `text` that holds character `offset`."""
    spans, at = [], 0
    for sentence in sentences(text):
        start = text.find(sentence, at)
        if start < 0:
            continue
        spans.append((start, start + len(sentence), sentence))
        at = start + len(sentence)
    target = next((s for a, b, s in spans if a <= offset < b), None)
    return lambda sentence: sentence == target


_DANGLING_MARK = regex.compile(r"\s*[,;:、，；：]+\s*(?=[.!?。！？]*$)")


def tidy_end(text: str) -> str:
    """A title or phrase without a comma, semicolon or colon left dangling at its end."""
    tidied = _DANGLING_MARK.sub("", text.rstrip())
    return tidied if tidied.strip(".!?。！？ ") else text
