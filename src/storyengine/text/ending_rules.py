"""The text rules about how a text ends, in the order they run: a mark left dangling at the end of a
label or name, a mark before the final one, and prose cut off (on a comma in any script; in English
also a fragment such as "the bott" or a dangling word such as "of the"), repaired to its last whole
sentence, else its last whole clause.
"""

from __future__ import annotations

import regex

from .language import is_english
from .rule_base import LABELS, PEOPLE, WRITTEN, Context, Hit, RuleList, clip
from .segment import CLOSERS, LETTERS_WORD, ends_a_sentence, sentences, words
from .trimming import tidy_end

RULES = RuleList()
rule = RULES.rule

_MARK_BEFORE_END = regex.compile(r"\s*[,;:、，；：]+\s*(?=[.!?。！？]+$)")


@rule("dangling_mark", LABELS | PEOPLE)
def dangling_mark(text: str, context: Context) -> Hit | None:
    """A title ending on a comma ("The Beat ,"): measured, SmolLM2 ends a scene title on a comma on
    every re-ask; the words are whole, so code drops the mark."""
    repaired = tidy_end(text)
    if repaired == text.rstrip():
        return None
    return Hit(text.rstrip()[-3:], f"{clip(text)!r} ends on a dangling mark", repaired=repaired)


@rule("mark_before_end", WRITTEN)
def mark_before_end(text: str, context: Context) -> Hit | None:
    """Prose with a mark before its final one ("knows no end,."): the grammar ended a field that
    stopped on a comma with a full stop."""
    stripped = text.rstrip()
    repaired = _MARK_BEFORE_END.sub("", stripped)
    if repaired == stripped or not repaired.strip(".!?。！？ "):
        return None
    return Hit(stripped[-3:], f"{clip(text)!r} has a mark before its final one", repaired=repaired)


# English words no complete sentence ends with, and final letter clusters English words do not
# end in: measured (tests/test_quality_rules.py) to flag no complete sentence of a story
# vocabulary and about half of all mid-word truncations.
DANGLING = frozenset(
    "the a an of and or but nor their its my your our into onto than because whose very".split()
)
VOWELS = set("aeiouyàáâäãåæèéêëìíîïòóôöõøœùúûüýÿ")
NO_VOWEL_WORDS = frozenset("hmm hm shh sh psst pst brr grr tsk pfft mm nth zzz tv dj vs st".split())
_FRAGMENT_END = regex.compile(
    r"(?:[bcdfgkpstz]l|[bcdfgkptv]r|wh|kn|qu|sw|tw|dw|sn|sl|tt|pp|cc|nn|mm|hh|ww|vv|xx|rr|dg|tc|rg|hr"
    r"|[bcdfghjklmnpqrstvwxz]i|ai|[^y]ou|[jqv])$"
)
_COMPLETE_ENDINGS = frozenset(
    """butt watt mitt putt mutt inn hmm mmm err burr purr app aww hi ski taxi alibi chili deli mini
    safari sushi spaghetti tsunami yeti khaki broccoli bikini graffiti kiwi semi anti multi pi chi
    wi-fi macaroni salami origami confetti ravioli zucchini martini bonsai samurai thou bayou
    caribou iceberg etc""".split()
)


def fragment(word: str) -> bool:
    """True when a lower-case English `word` cannot be a complete English word."""
    w = word.casefold().strip("'’-")
    if not w or w in NO_VOWEL_WORDS or w in _COMPLETE_ENDINGS or not w.isascii():
        return False
    if len(w) == 1:
        return w not in ("a", "i", "o")
    if not any(c in VOWELS for c in w):
        return True
    return bool(_FRAGMENT_END.search(w))


def _last_whole_sentence(text: str) -> str | None:
    """`text` up to its last finished sentence of two words or more, or None."""
    parts = sentences(text)
    while parts and not (ends_a_sentence(parts[-1]) and not _english_cut(parts[-1])):
        parts.pop()
    kept = " ".join(parts)
    return kept if parts and len(words(kept)) >= 2 else None


_CLAUSE_END = regex.compile(r"[,;:、，；：،؛—–](?=\s|$)")
_WIDE_SCRIPT = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}]$")


def _last_whole_clause(text: str, english: bool) -> str | None:
    """A text of no whole sentence cut back to the end of its last whole clause and closed with a
    full stop ("A keeper's home in the town, where they're separated by a." is "A keeper's home in
    the town."), or None. The clause keeps three words or more; in English it must not end on a
    dangling word or a fragment; in other languages only the clause before a final mark is kept
    (no other sign there tells a whole clause from a cut one)."""
    marks = list(_CLAUSE_END.finditer(text))
    if not english:
        marks = [m for m in marks if not text[m.end() :].strip()]
    for mark in reversed(marks):
        head = text[: mark.start()].rstrip()
        if len(words(head)) < 3:
            return None
        found = LETTERS_WORD.findall(head)
        last = found[-1] if found else ""
        if english and last and head.endswith(last) and (last.casefold() in DANGLING or fragment(last)):
            continue
        if ends_a_sentence(head):
            return head
        return head + ("。" if _WIDE_SCRIPT.search(head) else ".")
    return None


def _english_cut(sentence: str) -> str | None:
    """The English word a finished-looking sentence stops on that no sentence ends with."""
    body = sentence.rstrip(CLOSERS + ".!?… ")
    found = LETTERS_WORD.findall(body)
    last = found[-1] if found else ""
    if last and body.endswith(last) and last[0].islower() and not sentence.rstrip().endswith(("…", "...")):
        if last.casefold() in DANGLING or fragment(last):
            return last
    return None


@rule("cut_off", WRITTEN)
def cut_off(text: str, context: Context) -> Hit | None:
    stripped = text.rstrip()
    if not stripped:
        return None
    english = is_english(context.language)
    problem: str | None = None
    if stripped[-1] in ",;:、，；：،؛":
        problem = "stops mid-sentence"
    elif ends_a_sentence(stripped):
        last = _english_cut(stripped) if english else None
        if last:
            problem = f"is cut off ({last!r} does not end a sentence)"
    elif english:
        found = LETTERS_WORD.findall(stripped)
        last = found[-1] if found else ""
        if last and stripped.endswith(last) and last[0].islower():
            if last.casefold() in DANGLING:
                problem = f"stops mid-sentence after {last!r}"
            elif fragment(last):
                problem = f"is cut off mid-word ({last!r})"
    if problem is None:
        return None
    return Hit(
        stripped[-20:],
        f"{clip(text)!r} {problem}; finish the sentence",
        repaired=_last_whole_sentence(stripped) or _last_whole_clause(stripped, english),
    )
