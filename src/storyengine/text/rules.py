"""The rules about text: each one finds a problem in a field and, where it is safe, repairs it.

A rule is registered with a name, the fields it applies to (by the field's key: "title",
"purpose", "text", "character", ...), the languages it knows (None: every language) and a
check that returns a `Hit` or None. A Hit says what was found (evidence), what to tell the
model in a re-ask (a sentence with no example values a model could copy), and the repaired
text when code can repair it safely; `unusable` says nothing of the text is worth keeping
(an optional field becomes null, a list item is dropped). `review.py` applies the rules in
registration order, each to the text the earlier ones repaired, and decides what happens:
repair, re-ask once, or keep and record.

A rule that knows only English (`languages={"en"}`: fragments such as "bott", dangling words
such as "the", meta talk, descriptions instead of speech) does not run on other languages.

The rules and why each exists (what was measured in stories that passed the old rules or
failed runs on them):
- control: NUL and other control characters (not line breaks or tabs) are removed.
- null_text: "null", "None", "N/A" as a field's whole text is no text.
- timestamp: a machine timestamp ("2019-13-25T14:38:07.628ZMAD") is cut from the text; what
  follows it on the same field is debris more often than not, so the field ends before it when
  two words or more come first (a setting "Ashwood, England, 2019-…" failed two stories).
- debris: JSON syntax, the schema's own words, code calls; the sentences holding it are
  dropped when others remain, else the field ends before it.
- gibberish: letter runs ("zwzwzw"), tokens of letters and many digits ("jsonp1234567890"),
  paths and identifiers ("./the_story"); the field ends before it.
- loop: a phrase said over and over (loops.loop_at); the field keeps the first saying.
- leading_mark: a field that begins with punctuation (", a lighthouse keeper, stands …": a
  name was dropped); re-asked, not repaired (the missing word is unknown).
- meta_talk (English): sentences about the story rather than of it ("This is the first scene
  of a series…", "The first paragraph is about the setting:"); dropped.
- copied_instruction: a title or setting that copies an instruction the prompt gave (a beat's
  purpose, a beat opener such as "At the climax,"); re-asked (a scene's title is then repaired
  from its beat's name by review.py).
- dangling_mark: a comma, semicolon or colon left at the end ("The Beat ,", "no end,.").
- cut_off: prose that stops on a comma (any script); in English also a fragment ("the bott")
  or a dangling word ("of the"); the field ends at its last whole sentence when it has one.
- not_a_name: a character's name is one to four words, capitalised in scripts with case, not
  a placeholder or a description ("wearing white robes and armor"); a lower-case name ("bo") is
  capitalised.
- not_speech: a dialogue line that is a label list, a bullet list or only a stage direction;
  in English also a description ("the keeper of the glass door").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import regex

from .language import is_english
from .loops import letter_run, loop_at
from .segment import (
    CLOSERS,
    LETTERS_WORD,
    ends_a_sentence,
    sentences,
    words,
)

# -- the fields --

PROSE = frozenset({"purpose", "description", "setting", "summary", "fact"})
# What the evaluation and the enhancement write about the story: talk about the story is their job.
CRITIQUE = frozenset({"rationale", "problem", "change", "critique"})
SPEECH = frozenset({"text"})
LABELS = frozenset({"title", "name", "structure_type", "mood", "direction", "target", "role", "beat"})
PEOPLE = frozenset({"character", "speaker"})
ALL = PROSE | CRITIQUE | SPEECH | LABELS | PEOPLE
WRITTEN = PROSE | CRITIQUE | SPEECH  # sentences, which must not be cut off
# A scene's prose (drafts.clean_prose made it: no loops, no unfinished sentence): only junk rules.
BODY = frozenset({"prose"})


@dataclass(frozen=True)
class Context:
    """What a rule may know beyond the text: the story's language, its cast, and the texts the
    prompt gave as instructions."""

    language: str = ""  # "" until detected (text/language.py); English-only rules need "en"
    cast: tuple[str, ...] = ()
    instructions: tuple[str, ...] = ()  # texts a title or setting must not copy (a beat's purpose)
    beat_name: str = ""  # the scene's beat: its title when the title copied the instructions
    # (field, text): what a required field whose text is unusable becomes (the bible's setting: the
    # premise, as a plain bible has it)
    fallbacks: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Hit:
    evidence: str
    message: str
    repaired: str | None = None
    unusable: bool = False


@dataclass(frozen=True)
class Rule:
    name: str
    fields: frozenset[str]
    languages: frozenset[str] | None
    check: Callable[[str, Context], Hit | None] = field(compare=False)

    def applies(self, key: str, language: str) -> bool:
        return key in self.fields and (self.languages is None or language in self.languages)


RULES: list[Rule] = []


def rule(
    name: str, fields: frozenset[str], languages: frozenset[str] | None = None
) -> Callable[[Callable[[str, Context], Hit | None]], Callable[[str, Context], Hit | None]]:
    def register(check: Callable[[str, Context], Hit | None]) -> Callable[[str, Context], Hit | None]:
        RULES.append(Rule(name, fields, languages, check))
        return check

    return register


ENGLISH = frozenset({"en"})


def clip(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _words_before(text: str, offset: int) -> int:
    return len(words(text[:offset]))


def _cut(text: str, offset: int) -> str:
    """`text` before `offset`, without the separators left dangling there."""
    return tidy_end(text[:offset].rstrip(" -–—/|,;:([{\"'“‘"))


def _without_sentences(text: str, bad: Callable[[str], bool]) -> str | None:
    """`text` without its sentences that are `bad` (paragraphs kept apart); None when none or all
    of them are."""
    paragraphs = [sentences(p) for p in regex.split(r"\n\s*\n", text) if p.strip()]
    kept = [[s for s in p if not bad(s)] for p in paragraphs]
    if not any(kept) or sum(map(len, kept)) == sum(map(len, paragraphs)):
        return None
    return "\n\n".join(" ".join(p) for p in kept if p)


def _drop_or_cut(text: str, offset: int, bad: Callable[[str], bool]) -> str | None:
    """Without the sentences that are `bad` when there are others (or, when the splitter cuts the
    junk apart, without the sentence that holds `offset`); a single sentence ends before `offset`
    (when two words or more come first); else None. Text after a sentence is never cut away."""
    said = sentences(text)
    if len(said) >= 2:
        if all(bad(s) for s in said):
            return None  # nothing but junk: no repair
        if not any(bad(s) for s in said):  # the splitter cut the junk apart
            bad = _holding(text, offset)
        kept = _without_sentences(text, bad)
        if kept is not None:
            return kept
    return _cut(text, offset) if _words_before(text, offset) >= 2 else None


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


# -- the rules, in the order they run --

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
)


@rule("timestamp", ALL | BODY)
def timestamp(text: str, context: Context) -> Hit | None:
    found = _TIMESTAMP.search(text)
    if not found:
        return None
    repaired = _drop_or_cut(text, found.start(), lambda s: _TIMESTAMP.search(s) is not None)
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


@rule("debris", ALL | BODY)
def debris(text: str, context: Context) -> Hit | None:
    found = _debris_in(text)
    if found is None:
        if not regex.search(r"\p{L}", text):
            return Hit(clip(text), f"{clip(text)!r} has no words; write words", unusable=True)
        return None
    message = f"{clip(text)!r} contains JSON or schema text ({found.group(0).strip()!r}); write plain words"
    repaired = _drop_or_cut(text, found.start(), lambda s: _debris_in(s) is not None)
    return Hit(found.group(0).strip()[:40], message, repaired=repaired)


# A token of letters and five or more digits ("jsonp1234567890"), a path ("./the_story"), an
# identifier joined by underscores ("the_story"), a dotted call ("story.write(").
_JUNK_TOKEN = regex.compile(
    r"\S*(?:\p{L}\d{5,}|\d{5,}\p{L})\S*|\S*(?:\.{1,2}/|/\w+/)\S*|\S*\p{L}_\p{L}\S*|\S*\w\.\w+\(\S*"
)


@rule("gibberish", ALL | BODY)
def gibberish(text: str, context: Context) -> Hit | None:
    run = letter_run(text)
    junk = _JUNK_TOKEN.search(text)
    found = [(run.offset, run.phrase)] if run else []
    found += [(junk.start(), junk.group(0))] if junk else []
    if not found:
        return None
    at, evidence = min(found)
    start = max(text.rfind(" ", 0, at), text.rfind("\n", 0, at)) + 1  # the word it is in
    repaired = _drop_or_cut(text, start, lambda s: bool(letter_run(s) or _JUNK_TOKEN.search(s)))
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
    repaired = _cut(text, found.offset)
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
        repaired=_without_sentences(text, meta_sentence),
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


_DANGLING_MARK = regex.compile(r"\s*[,;:、，；：]+\s*(?=[.!?。！？]*$)")
_MARK_BEFORE_END = regex.compile(r"\s*[,;:、，；：]+\s*(?=[.!?。！？]+$)")


def tidy_end(text: str) -> str:
    """A title or phrase without a comma, semicolon or colon left dangling at its end."""
    tidied = _DANGLING_MARK.sub("", text.rstrip())
    return tidied if tidied.strip(".!?。！？ ") else text


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
    if stripped[-1] in ",;:、，；：":
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
        repaired=_last_whole_sentence(stripped),
    )


# -- names --

ARTICLES = frozenset({"the", "a", "an"})
PLACEHOLDERS = frozenset(
    "he she they it we you i him her them narrator character characters speaker name names none "
    "null unknown someone somebody everyone everybody nobody all both other others person people "
    "man woman voice voices crowd protagonist antagonist hero heroine villain n/a".split()
)
PARTICLES = frozenset("van von de da del della di du la le der den ter bin ibn al el y of".split())
HONORIFICS = frozenset("dr. mr. mrs. ms. mx. st. prof. capt. sgt. lt. col. gen. rev. sir lady lord".split())


_NAME_WORD = regex.compile(r"[\p{L}\p{M}]+(?:['’\-][\p{L}\p{M}]+)*")


def capitalise_lower_case(name: str) -> str:
    """A name written all in lower case ("bo", "mary-jane") with each word capitalised."""
    if not name.islower() or len(name.split()) > 4:
        return name
    return " ".join(
        w if w in PARTICLES else regex.sub(r"(^|['’-])(\p{L})", lambda m: m.group(1) + m.group(2).upper(), w)
        for w in name.split()
    )


def _capitalised(word: str) -> bool:
    # A capital, or a letter of a script without case (李娜, ሰላም, Мария is cased): names in any letters.
    if word[0].isupper() or (word[0].isalpha() and not word[0].islower()):
        return True
    return len(word) > 2 and word[1] in "'’" and word[2].isupper()  # d'Artagnan


def person_name_problem(name: str) -> str | None:
    """Why `name` is not a person's name, or None (any script; see the module docstring)."""
    parts = name.split()
    if not 1 <= len(parts) <= 4:
        return f"{clip(name)!r} is not a name: a character's name is one to four words"
    if parts[0].casefold() in ARTICLES:
        return f"{clip(name)!r} is a description, not a name; give the character a name"
    if all(p.casefold() in PLACEHOLDERS | ARTICLES for p in parts):
        return f"{name!r} is a placeholder, not a name; give the character a name"
    for index, part in enumerate(parts):
        if index == 0 and part.casefold() in HONORIFICS and len(parts) > 1:
            continue
        if 0 < index < len(parts) - 1 and part in PARTICLES:
            continue
        if not _NAME_WORD.fullmatch(part):
            return f"{clip(name)!r} is not a name: a name is letters only (apostrophes and hyphens inside)"
        if not _capitalised(part):
            return f"{clip(name)!r} is not a name: each word of a name starts with a capital letter"
        if sum(c.isupper() for c in part) >= 3 and not part.isupper():  # "TheFutureBeginsWhen"
            return f"{clip(name)!r} is a phrase run together, not a name"
    return None


@rule("not_a_name", PEOPLE)
def not_a_name(text: str, context: Context) -> Hit | None:
    repaired = capitalise_lower_case(text)
    problem = person_name_problem(repaired)
    if problem is not None:
        return Hit(clip(text, 40), problem, unusable=True)
    if repaired != text:
        return Hit(text, f"{text!r} is written in lower case", repaired=repaired)
    return None


# -- speech --

_LABEL = regex.compile(r"(?:^|[\s.;,])(\p{Lu}[\p{L}]{1,20})\s*:\s*\S")
FIELD_LABELS = frozenset(
    "name character speaker scene setting action dialogue narrator description line text "
    "direction note notes role".split()
)
FIRST_SECOND_PERSON = frozenset(
    "i i'm i'll i've i'd me my mine we we're us our you you're your yours let's".split()
)


@rule("not_speech", SPEECH)
def not_speech(text: str, context: Context) -> Hit | None:
    stripped = text.strip()
    if len(_LABEL.findall(stripped)) >= 2:
        return Hit(
            clip(stripped, 40),
            f"{clip(text)!r} is a list of labels, not speech; write only the words the character says",
        )
    if regex.search(r"(?:^|\n)\s*(?:[-•*]|\d+[.)])\s", stripped) and "\n" in stripped:
        return Hit(clip(stripped, 40), f"{clip(text)!r} is a list, not speech; write what the character says")
    if regex.fullmatch(r"\(.*\)|\[.*\]|\*[^*].*\*|（.*）", stripped, flags=regex.S):
        return Hit(
            clip(stripped, 40),
            f"{clip(text)!r} is a stage direction, not speech; write what the character says",
            unusable=True,
        )
    if is_english(context.language):
        tokens = words(stripped)
        if (
            tokens
            and tokens[0] in ("the", "a", "an", "his", "her", "their")
            and stripped[0].islower()
            and not regex.search(r"[.!?…]", stripped)
            and not FIRST_SECOND_PERSON & set(tokens)
        ):
            return Hit(
                clip(stripped, 40),
                f"{clip(text)!r} describes something; a dialogue line is what the character says",
            )
    return None


# -- copies --


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


def findings_in(text: str, key: str, context: Context) -> list[tuple[str, Hit]]:
    """Every rule of field `key` on `text` as it is (no repair chained): what a report counts."""
    found = []
    for each in RULES:
        if each.applies(key, context.language):
            hit = each.check(text, context)
            if hit is not None:
                found.append((each.name, hit))
    return found


__all__ = [
    "ALL",
    "LABELS",
    "PEOPLE",
    "PROSE",
    "RULES",
    "SPEECH",
    "Context",
    "Hit",
    "Rule",
    "capitalise_lower_case",
    "copies",
    "findings_in",
    "first_similar",
    "fragment",
    "meta_sentence",
    "person_name_problem",
    "similar",
    "tidy_end",
    "without_controls",
]
