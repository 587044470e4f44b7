"""The one loop detector: whether a text repeats itself, and where the repeating starts.

A loop is said in tokens of `segment.words` (characters for spaceless scripts), so the same
rules hold in every script:

- a phrase said in a row: one word four times, two words four times, three to eight words
  three times ("no no no no"); in spaceless scripts, where a token is a character, one
  character eight times, two to four characters four times, five to sixteen three times
  ("はははは" laughs; "ドキドキ" is a word);
- a run of five words (twelve characters) said a third time anywhere;
- in a short text (10 to 120 words) fewer than 40 % distinct words (spaced scripts only);
- a letter run inside a word: two to four letters said four times or more ("zwzwzwzw",
  "abcabcabcabc"), or one letter twelve times; laughter and song ("hahaha", "lalala") is
  speech, not a loop.

`loop_at(text)` gives the character offset where the loop's first repeat begins:
`text[:offset]` says the looping part once, which is how a field is repaired and where a
provider stops a runaway answer (`loop_start`, which counts only finished sentences).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import regex

from .segment import TERMINAL_END, WORD, spaceless, word_key

SPACED_TANDEMS = ((1, 4), (2, 4), *((size, 3) for size in range(3, 9)))
SPACELESS_TANDEMS = ((1, 8), *((size, 4) for size in range(2, 5)), *((size, 3) for size in range(5, 17)))
SPACED_SHINGLE = 5
SPACELESS_SHINGLE = 12
_LETTER_RUN = regex.compile(r"(\p{L}{2,4}?)\1{3,}|(\p{L})\2{11,}", regex.I)
_SPOKEN_RUNS = frozenset("ha he hi ho la na da ah oh eh mm hm".split())


@dataclass(frozen=True)
class Loop:
    phrase: str  # what repeats
    offset: int  # where in the text its first repeat begins


def _tokens(text: str) -> list[tuple[str, int]]:
    return [(m.group().casefold(), m.start()) for m in WORD.finditer(text)]


def _tandem(tokens: list[str], size: int, times: int) -> int | None:
    """Index of the first token of a phrase of `size` tokens said `times` times in a row."""
    span = size * times
    for start in range(len(tokens) - span + 1):
        phrase = tokens[start : start + size]
        if all(tokens[start + k * size : start + (k + 1) * size] == phrase for k in range(1, times)):
            return start
    return None


def letter_run(text: str) -> Loop | None:
    """A run of letters inside a word said over and over ("zwzwzw"), not laughter or song."""
    for match in _LETTER_RUN.finditer(text):
        unit = (match.group(1) or match.group(2)).casefold()
        if unit in _SPOKEN_RUNS:
            continue
        return Loop(match.group(0)[:24], match.start() + len(unit))
    return None


def loop_at(text: str, *, variety: bool = True) -> Loop | None:
    """The first loop in `text` (see the module docstring), or None."""
    found = _tokens(text)
    tokens = [w for w, _ in found]
    wide = spaceless(text)
    joiner = "" if wide else " "
    best: Loop | None = None
    for size, times in SPACELESS_TANDEMS if wide else SPACED_TANDEMS:
        start = _tandem(tokens, size, times)
        if start is not None:
            loop = Loop(joiner.join(tokens[start : start + size]), found[start + size][1])
            best = loop if best is None or loop.offset < best.offset else best
    shingle = SPACELESS_SHINGLE if wide else SPACED_SHINGLE
    seen: dict[tuple[str, ...], list[int]] = {}
    for i in range(len(tokens) - shingle + 1):
        at = seen.setdefault(tuple(tokens[i : i + shingle]), [])
        at.append(i)
        if len(at) == 3:
            loop = Loop(joiner.join(tokens[i : i + shingle]), found[at[1]][1])
            best = loop if best is None or loop.offset < best.offset else best
            break
    run = letter_run(text)
    if run is not None and (best is None or run.offset < best.offset):
        best = run
    if (
        best is None
        and variety
        and not wide
        and 10 <= len(tokens) <= 120
        and len(set(tokens)) < 0.4 * len(tokens)
    ):
        return Loop("the same few words", len(text))
    return best


# -- where a runaway answer loops (a provider stops generating there) --

_SENTENCE_GAP = regex.compile(
    r"(?<=[^\d\s][.!?…])[\"')\]”’」』]*\s+|(?<=[。！？؟।])[\"')\]”’」』]*\s*(?=\S)|\s*\n\s*"
)
LOOP_PAIR_WORDS = 4  # a repeated pair of sentences starts with one of at least this many words
LOOP_THRICE_WORDS = 3  # a sentence of at least this many words said a third time is a loop


def loop_start(text: str) -> int | None:
    """Where a runaway loop in `text` begins, or None: `text[:offset]` says the looping part once.

    Besides `loop_at`'s phrase rules (letter runs and low variety aside: a stream is not
    judged by them), two sentences in a row said again in the same order, or a sentence of
    three words or more said a third time. Only finished sentences count (text being
    generated ends mid-sentence), so a caller can check a growing text as often as it likes.
    """
    cuts: list[int] = []
    found = _tokens(text)
    tokens = [w for w, _ in found]
    wide = spaceless(text)
    for size, times in SPACELESS_TANDEMS if wide else SPACED_TANDEMS:
        start = _tandem(tokens, size, times)
        if start is not None:
            cuts.append(found[start + size][1])
    shingle = SPACELESS_SHINGLE if wide else SPACED_SHINGLE + 1
    seen: dict[tuple[str, ...], list[int]] = {}
    for i in range(len(tokens) - shingle + 1):
        at = seen.setdefault(tuple(tokens[i : i + shingle]), [])
        at.append(i)
        if len(at) == 3:
            cuts.append(found[at[1]][1])
            break
    spans = _finished_sentences(text)
    keys = [word_key(text[a:b]) for a, b in spans]
    first: dict[str, int] = {}
    said: Counter[str] = Counter()
    for j, key in enumerate(keys):
        said[key] += 1
        if len(key.split()) >= LOOP_THRICE_WORDS and said[key] == 3:
            cuts.append(spans[[i for i, k in enumerate(keys) if k == key][1]][0])
        i = first.setdefault(key, j)
        if i < j and j + 1 < len(keys) and len(key.split()) >= LOOP_PAIR_WORDS and keys[i + 1] == keys[j + 1]:
            cuts.append(spans[j][0])
    return min(cuts) if cuts else None


def before_loop(text: str) -> str:
    """`text` up to where a runaway loop begins (`loop_start`), all of it when none does."""
    start = loop_start(text)
    return text if start is None else text[:start]


def _finished_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each finished sentence of `text` (one a break or an end mark follows)."""
    spans: list[tuple[int, int]] = []
    start = 0
    for gap in _SENTENCE_GAP.finditer(text):
        if gap.start() > start:
            spans.append((start, gap.start()))
        start = gap.end()
    tail = text[start:].rstrip()
    if tail and TERMINAL_END.search(tail):
        spans.append((start, start + len(tail)))
    return spans


__all__ = ["Loop", "letter_run", "loop_at", "loop_start"]
