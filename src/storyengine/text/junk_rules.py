"""The text rules against junk, in the order they run: control characters, "null" as text, machine
timestamps, JSON debris, gibberish, loops, a leading mark, meta talk (English), and a title or
setting that copies the prompt's instructions. rules.py says why each exists.
"""

from __future__ import annotations

import regex

from .language import is_english
from .loops import letter_run, loop_at
from .rule_base import ALL, BODY, CRITIQUE, ENGLISH, LABELS, PROSE, SPEECH, Context, Hit, RuleList, clip
from .segment import sentences, words
from .similarity import similar
from .trimming import cut_before, drop_or_cut, without_sentences

RULES = RuleList()
rule = RULES.rule

_CONTROL = regex.compile(r"[\p{Cc}--[\n\t]]", regex.V1)


def without_controls(text: str) -> str:
    """`text` without NUL and the other control characters (line breaks and tabs stay)."""
    return _CONTROL.sub("", text)


@rule("control", ALL | BODY)
def control(text: str, context: Context) -> Hit | None:
    found = _CONTROL.search(text)
    if not found:
        return None
    repaired = _CONTROL.sub("", text).strip()
    return Hit(
        f"U+{ord(found.group()):04X}",
        "contains control characters; write plain text",
        repaired=repaired or None,
        unusable=not repaired,
    )


NULL_TEXTS = frozenset({"null", "none", "nil", "n/a", "na", "undefined", "nan", "-", "..."})


@rule("null_text", ALL | BODY)
def null_text(text: str, context: Context) -> Hit | None:
    if text.strip().strip("\"'").casefold() in NULL_TEXTS:
        return Hit(
            text.strip(), f"{clip(text)!r} is not text; write the words this field asks for", unusable=True
        )
    return None


_TIMESTAMP = regex.compile(
    r"\S*\b\d{4}-\d{2}-\d{2}[T ]\d{1,2}:\d{2}(?::\d{2})?\S*|\S*\b\d{1,2}:\d{2}:\d{2}\.\d+\S*"
    # "2018-04-30 at 1:57:59 PM GMT+6" (SmolLM2, README command (a)'s third setting)
    r"|\b\d{4}-\d{2}-\d{2},? at \d{1,2}:\d{2}(?::\d{2})?(?: ?[AP]M)?(?: ?(?:GMT|UTC)[+-]?\d{0,2})?"
    # a list of machine dates: "Maine, 2018-04-30, 2019-05-07, 2020-06-07." (the fourth novella's
    # first setting); one date alone is a writer's
    r"|\b\d{4}-\d{2}-\d{2}(?:\s*[,;/]\s*\d{4}-\d{2}-\d{2})+"
)


@rule("timestamp", ALL | BODY)
def timestamp(text: str, context: Context) -> Hit | None:
    found = _TIMESTAMP.search(text)
    if not found:
        return None
    repaired = drop_or_cut(text, found.start(), lambda s: _TIMESTAMP.search(s) is not None)
    if repaired is None:
        repaired = " ".join(_TIMESTAMP.sub(" ", text).split())
    return Hit(
        found.group(0)[:40],
        f"{clip(text)!r} contains a machine timestamp; write plain words",
        repaired=repaired if words(repaired) else None,
        unusable=not words(repaired),
    )


_DEBRIS = regex.compile(r'\]\s*\[|[{}]|"\s*:|\\["ntu]|\'\w+\'\s*:\s*\'')
_SCHEMA_ECHO = regex.compile(
    r"\b(?:min|max)(?:Length|Items|imum)\s*:|\badditionalProperties\b|\brequired\s*:\s*(?:true|false)\b"
    r"|(?:\d+\s*:\s*\d+\s*,\s*){3}|\b[a-z]+[A-Z]\w*\(\)"
    r"|(?i:\bjson\b|\bschemas?\b|\benums?\b)"
    r"|\(tension\s+\d+\s*/\s*10\)"  # the prompt's note on a beat
)


def _debris_in(text: str) -> regex.Match[str] | None:
    return _DEBRIS.search(text) or _SCHEMA_ECHO.search(text)


def only_debris(text: str) -> bool:
    """Whether every sentence of `text` holds JSON or schema text ("This is a JSON object that I am
    not able to access. Please provide the JSON data you need.")."""
    said = sentences(text)
    return bool(said) and all(_debris_in(s) is not None for s in said)


@rule("debris", ALL | BODY)
def debris(text: str, context: Context) -> Hit | None:
    found = _debris_in(text)
    if found is None:
        if not regex.search(r"\p{L}", text):
            return Hit(clip(text), f"{clip(text)!r} has no words; write words", unusable=True)
        return None
    message = f"{clip(text)!r} contains JSON or schema text ({found.group(0).strip()!r}); write plain words"
    repaired = drop_or_cut(text, found.start(), lambda s: _debris_in(s) is not None)
    return Hit(found.group(0).strip()[:40], message, repaired=repaired)


# A token of letters and five or more digits ("jsonp1234567890"), a path ("./the_story"), an
# identifier joined by underscores ("the_story"), a dotted call ("story.write("), a file's name
# ("Lighthouse-Dreaming-In-the-Maelstroms-2018-3.jpg": SmolLM2's scene setting, README command (a)).
_JUNK_TOKEN = regex.compile(
    r"\S*(?:\p{L}\d{5,}|\d{5,}\p{L})\S*|\S*(?:\.{1,2}/|/\w+/)\S*|\S*\p{L}_\p{L}\S*|\S*\w\.\w+\(\S*"
    r"|\S*\w\.(?i:jpe?g|png|gif|webp|json|txt|md|html?|pdf|csv|py|js|ya?ml|xml)\b"
)


# Letters in a row that no word holds, in a script that puts spaces between words (Chinese,
# Japanese or Thai write a sentence without any): English's longest words in use are about 21
# ("counterrevolutionaries" 22); elsewhere compounds run long (German's
# "Rindfleischetikettierungsüberwachungsaufgabe" is 44), so only a run past 50 letters is junk
# there. SmolLM2 wrote "Theeardoriliguadunzundulitamarkelenoycabra" (42) in a novella's prose,
# which no rule named.
LONGEST_ENGLISH_WORD = 24
LONGEST_WORD = 50
_SPACED = r"\p{Latin}\p{Cyrillic}\p{Greek}\p{Armenian}\p{Georgian}\p{Arabic}\p{Hebrew}"
_OVERLONG_ENGLISH, _OVERLONG = (
    regex.compile(rf"(?:[{_SPACED}]\p{{M}}*){{{most + 1},}}") for most in (LONGEST_ENGLISH_WORD, LONGEST_WORD)
)


def _overlong(text: str, language: str) -> regex.Match[str] | None:
    return (_OVERLONG_ENGLISH if is_english(language) else _OVERLONG).search(text)


@rule("gibberish", ALL | BODY)
def gibberish(text: str, context: Context) -> Hit | None:
    run = letter_run(text)
    junk = _JUNK_TOKEN.search(text)
    long = _overlong(text, context.language)
    found = [(run.offset, run.phrase)] if run else []
    found += [(junk.start(), junk.group(0))] if junk else []
    found += [(long.start(), long.group(0))] if long else []
    if not found:
        return None
    at, evidence = min(found)
    start = max(text.rfind(" ", 0, at), text.rfind("\n", 0, at)) + 1  # the word it is in

    def bad(part: str) -> bool:
        return bool(letter_run(part) or _JUNK_TOKEN.search(part) or _overlong(part, context.language))

    repaired = drop_or_cut(text, start, bad)
    return Hit(
        evidence[:40],
        f"{clip(text)!r} contains letters or symbols that are not words ({evidence[:24]!r}); "
        "write plain words",
        repaired=repaired,
    )


@rule("loop", ALL)
def loop(text: str, context: Context) -> Hit | None:
    found = loop_at(text)
    if found is None:
        return None
    message = f"{clip(text)!r} repeats {found.phrase!r} over and over; say it once"
    if found.offset >= len(text):  # low variety: nothing to cut
        return Hit(
            found.phrase, f"{clip(text)!r} uses the same few words again and again; write varied sentences"
        )
    repaired = cut_before(text, found.offset)
    return Hit(found.phrase, message, repaired=repaired if len(words(repaired)) >= 2 else None)


_LEADING = regex.compile(r"^\s*(?:[,;:.)\]}!?]|['’]s\b)")


@rule("leading_mark", PROSE | CRITIQUE | SPEECH | LABELS)
def leading_mark(text: str, context: Context) -> Hit | None:
    if _LEADING.match(text) and not text.lstrip().startswith(("...", "…")):
        return Hit(
            clip(text, 24),
            f"{clip(text)!r} begins with punctuation: a word is missing at its start; write the whole "
            "sentence, naming who or what it is about",
        )
    return None


_META = regex.compile(
    r"\bthis is (?:the|a) (?:(?:first|second|third|next|last|final|opening) )?"
    r"(?:scene|chapter|paragraph|section|part|excerpt)\b"
    r"|\b(?:this|the) (?:(?:first|second|third|next|last|final|opening) )?(?:scene|chapter|paragraph"
    r"|section|passage|excerpt) (?:will |is going to )?"
    r"(?:explores?|introduces?|describes?|focuses|sets up|shows|is about)\b"
    r"|^\W*in this (?:story|scene|chapter|paragraph|section)\b"
    r"|\b(?:my|our) readers?\b|\bdear reader\b|\bthe (?:story|scene) itself\b"
    r"|\bas an ai\b|\blanguage model\b"
    r"|\b(?:here is|here's|below is) (?:the|a|my) (?:scene|story|chapter|draft|dialogue)\b"
    r"|\bthe (?:first|second|next|last|final) (?:paragraph|sentence|section)\b"
    r"|\b(?:this|the) story (?:is|was) set up\b|\bof a series\b"
    # offers and notes to the user (README command's story: "Here's a few more options to use: 1.
    # The End: At the climax of the story, …", "This is another example, using different wording")
    r"|\bhere(?:'s| is| are) (?:a few |some |two |three )?(?:more |other )?(?:options|examples|versions|ideas"
    r"|alternatives)\b|\bthis is another (?:example|version|option)\b|\bcan be used as needed\b"
    r"|^\W*the (?:end|beginning|climax)\s*:\s*(?:at the climax|in the end|sets up)\b",
    regex.I,
)


def meta_sentence(sentence: str) -> bool:
    """Whether an English sentence talks about the story rather than telling it."""
    return bool(_META.search(sentence))


@rule("meta_talk", PROSE | BODY, ENGLISH)
def meta_talk(text: str, context: Context) -> Hit | None:
    bad = [s for s in sentences(text) if meta_sentence(s)]
    if not bad:
        return None
    return Hit(
        clip(bad[0]),
        f"{clip(bad[0])!r} talks about the story instead of telling it; write what happens",
        repaired=without_sentences(text, meta_sentence),
    )


# The openers a tiny model's beat purposes begin with (parts.py) and prompt words that are
# instructions, not story: shown in a title or a setting they were copied, not written.
_OPENERS = regex.compile(
    r"^\s*(?:the (?:end|beginning|climax|start)\s*:|sets up\b|at the climax,|in the end,"
    r"|sets off the conflict|raises the stakes as|complicates things as|turns the story as"
    r"|deepens the trouble as|tests the hero as"
    r"|tightens the knot as|shifts the balance as)",
    regex.I,
)


def copies(text: str, instruction: str) -> bool:
    """Whether `text` copies `instruction`: mostly the same words, or its first six words."""
    mine, theirs = words(text), words(instruction)
    if len(theirs) < 3 or len(mine) < 3:
        return False
    if similar(text, instruction):
        return True
    head = " ".join(theirs[:6])
    return len(theirs) >= 6 and head in " ".join(mine)


@rule("repeats_earlier", frozenset({"purpose"}))
def repeats_earlier(text: str, context: Context) -> Hit | None:
    """A purpose that says again what an earlier plan said (SmolLM2, planning a chapter, copied the
    chapter before it): the story would tell that part twice. Any script (words are Unicode's)."""
    copied = next((e for e in context.earlier if copies(text, e)), None)
    if copied is None:
        return None
    return Hit(
        clip(copied, 40),
        f"{clip(text)!r} repeats what an earlier chapter already does ({clip(copied, 40)!r}); write what "
        "happens next instead",
    )


@rule("copied_instruction", frozenset({"title", "setting"}))
def copied_instruction(text: str, context: Context) -> Hit | None:
    opener = _OPENERS.search(text)
    copied = next((i for i in context.instructions if copies(text, i)), None)
    if opener is None and copied is None:
        return None
    evidence = opener.group(0).strip() if opener else clip(copied or "", 40)
    return Hit(
        evidence,
        f"{clip(text)!r} copies the instructions ({evidence!r}) instead of saying something of its own; "
        "write it in your own words",
    )
