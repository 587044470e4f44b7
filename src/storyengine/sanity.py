"""Sanity rules on the text a model writes into a field: pure functions, one problem or None.

Each rule returns a sentence that can be shown to the model in a re-ask (what is wrong and
what to write instead), or None when the text passes. `schemas.py` attaches them to the
field types, so they hold on every path (one-shot structuring, structuring in parts, a
story.json loaded from disk); `quality.py` counts the same problems in a finished story.

The rules, and how each is measured:

- debris: JSON syntax inside text — `][`, `{`, `}`, `":`, an escaped `\\"` or `\\n`, or a
  field with no letter at all ("1", "][").
- loop: a word said four times in a row ("no no no no"), a phrase of two words four times
  or of three to eight words three times in a row, a phrase of five words three times
  anywhere, or (10 to 120 words) fewer than 40 % distinct words.
- cut off (prose fields only; titles and names carry no final punctuation): the field ends
  mid-sentence or mid-word. Complete: it ends with terminal punctuation (`. ! ? …`, a closing
  quote or bracket, a dash), or its last word is capitalised (a name) or a number, or is a
  plausible complete English word. Cut off: it ends with a comma, or with a word no complete
  sentence ends with (the, a, of, and, their, ...), or with a fragment: one letter other than
  "a"/"i", no vowel ("fm", "th"), a final letter j/q/v, or a final cluster English words do
  not end in ("compl", "lett", "bott", "wh"). A full stop after such a word does not finish
  the sentence either ("the fm.", "to a."). Without a word list this misses fragments that
  look like words ("ligh") and cut-offs that end in a real word ("keep" of "keeper"); it is
  conservative. Measured (tests/test_quality_rules.py): it flags no complete sentence and no
  word of a story vocabulary, and among the 1,571 words Python's own docs use three times or
  more only code tokens (repr, attr, stderr); it catches 47 % of all mid-word truncations of a
  set of story sentences, a third of which end in a real word no rule could flag.
- not a name: a person's name is one to four capitalised words of letters, with apostrophes
  and hyphens inside ("José", "O'Neil", "Zoë", "Mary-Jane", "Tom Reed"), an optional title
  ("Dr.") and lower-case particles inside ("Ludwig van Beethoven"); not starting with an
  article ("The New", "A lighthouse keeper"), not a pronoun or placeholder ("She", "Narrator",
  "Person A").
- not speech: a dialogue line that is a label list ("NAME: Sarah, ... NAME: John"), a bullet
  list, a stage direction in brackets or asterisks, or a lower-case noun phrase with no
  sentence punctuation and no speaker ("the keeper of the glass door").
- copied: two texts with the same words, or (six words or more each) 80 % the same words
  (suggestions copied are rejected; rationales copied mark their evaluation unreliable).
"""

from __future__ import annotations

import re

# -- debris --

LENIENT = "skip_sanity_rules"  # validation context key: load without the text rules (old files)

_DEBRIS = re.compile(r'\]\s*\[|[{}]|"\s*:|\\["ntu]|\'\w+\'\s*:\s*\'')  # ... 'type': 'object' ...
# What SmolLM2 was measured writing into a suggestion's text: the schema's own words unquoted
# ("minLength:70,maxLength:489,required:true"), numbered pairs ("32:4, 33:5, 34:6"), code calls,
# machine timestamps ("2019-07-31T14:58:56.143.14.BREAK;Thelma is ..."), and talk about the
# format itself in a dialogue line ("This is a JSON object that matches the schema you provided").
_SCHEMA_ECHO = re.compile(
    r"\b(?:min|max)(?:Length|Items|imum)\s*:|\badditionalProperties\b|\brequired\s*:\s*(?:true|false)\b"
    r"|(?:\d+\s*:\s*\d+\s*,\s*){3}|\b[a-z]+[A-Z]\w*\(\)|\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}"
    r"|(?i:\bjson\b|\bschemas?\b|\benums?\b)"
    r"|\b\d{1,2}:\d{2}:\d{2}\.\d|\(tension\s+\d+\s*/\s*10\)"  # "1:57:59.633333", the prompt's beat note
)


def debris_problem(text: str) -> str | None:
    found = _DEBRIS.search(text)
    if found:
        return (
            f"{_clip(text)!r} contains JSON syntax ({found.group(0)!r}); write plain words, "
            "with no brackets, braces or quoted keys"
        )
    echo = _SCHEMA_ECHO.search(text)
    if echo:
        return (
            f"{_clip(text)!r} contains schema or code text ({echo.group(0).strip()!r}); write plain "
            "words about the story"
        )
    if not re.search(r"[^\W\d_]", text):
        return f"{_clip(text)!r} has no words; write words, not numbers or symbols"
    return None


# -- loops --

_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")


def words(text: str) -> list[str]:
    """The words of `text`, lower case, apostrophes and hyphens kept inside a word."""
    return [w.casefold() for w in _WORD.findall(text)]


def _tandem(tokens: list[str], size: int, times: int) -> str | None:
    """A phrase of `size` words repeated `times` times in a row, if any."""
    span = size * times
    for start in range(len(tokens) - span + 1):
        phrase = tokens[start : start + size]
        if all(tokens[start + k * size : start + (k + 1) * size] == phrase for k in range(1, times)):
            return " ".join(phrase)
    return None


def loop_problem(text: str) -> str | None:
    tokens = words(text)
    found = _tandem(tokens, 1, 4) or _tandem(tokens, 2, 4)
    for size in range(3, 9):
        found = found or _tandem(tokens, size, 3)
    if found is None and len(tokens) >= 15:
        counts: dict[tuple[str, ...], int] = {}
        for i in range(len(tokens) - 4):
            gram = tuple(tokens[i : i + 5])
            counts[gram] = counts.get(gram, 0) + 1
            if counts[gram] >= 3:
                found = " ".join(gram)
                break
    if found is not None:
        return f"{_clip(text)!r} repeats {found!r} over and over; that is a loop — write it once"
    if 10 <= len(tokens) <= 120 and len(set(tokens)) < 0.4 * len(tokens):
        return f"{_clip(text)!r} uses the same few words again and again; write varied sentences"
    return None


# -- cut off --

TERMINAL = ".!?…\"'”’»)]*—–-"
# Words a complete sentence does not end with.
DANGLING = frozenset(
    "the a an of and or but nor their its my your our into onto than because whose very the".split()
)
VOWELS = set("aeiouyàáâäãåæèéêëìíîïòóôöõøœùúûüýÿ")
NO_VOWEL_WORDS = frozenset("hmm hm shh sh psst pst brr grr tsk pfft mm nth zzz tv dj vs st".split())
# Final letter clusters English words do not end in (fragments such as "compl", "lett", "bott").
_FRAGMENT_END = re.compile(
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
    """True when a lower-case `word` cannot be a complete English word (see the module docstring)."""
    w = word.casefold().strip("'’-")
    if not w or w in NO_VOWEL_WORDS or w in _COMPLETE_ENDINGS:
        return False
    if len(w) == 1:
        return w not in ("a", "i", "o")
    if not any(c in VOWELS for c in w):
        return True
    return bool(_FRAGMENT_END.search(w))


_DANGLING_MARK = re.compile(r"\s*[,;:]+\s*(?=[.!?]*$)")  # a title's or a sentence's last mark
_MARK_BEFORE_END = re.compile(r"\s*[,;:]+\s*(?=[.!?]+$)")  # only before a sentence's end


def tidy_end(text: str) -> str:
    """A title or phrase without a comma, semicolon or colon left dangling at its end: "The Beat ,"
    is "The Beat" (measured: SmolLM2 ends a scene title on a comma on every re-ask; the words are
    whole, so code drops the mark instead of failing the scene)."""
    tidied = _DANGLING_MARK.sub("", text.rstrip())
    return tidied if tidied.strip(".!? ") else text


def tidy_sentence_end(text: str) -> str:
    """Prose without a mark before its final one: "knows no end,." is "knows no end." (the grammar
    made the field end with a full stop after a comma). A sentence that stops on a comma with no
    full stop is still cut off (`cut_off_problem`)."""
    tidied = _MARK_BEFORE_END.sub("", text.rstrip())
    return tidied if tidied.strip(".!? ") else text


def cut_off_problem(text: str) -> str | None:
    """Whether prose `text` stops mid-sentence or mid-word (see the module docstring).

    A full stop after a fragment or a dangling word ("the fm.", "accessible to a.") does not
    finish the sentence: a grammar that makes a field end with punctuation would hide a cut-off.
    """
    stripped = text.rstrip()
    if not stripped:
        return None
    if stripped[-1] in TERMINAL:
        body = stripped.rstrip(TERMINAL + " ")
        found = _WORD.findall(body)
        last = found[-1] if found else ""
        trailing = stripped.endswith(("…", "..."))  # an ellipsis trails off on purpose
        if last and body.endswith(last) and last[0].islower() and not trailing:
            if last.casefold() in DANGLING or fragment(last):
                return f"{_clip(text)!r} is cut off ({last!r} does not end a sentence); finish the sentence"
        return None
    if stripped[-1] in ",;:":
        return f"{_clip(text)!r} stops mid-sentence; finish the sentence and end it with a full stop"
    found = _WORD.findall(stripped)
    if not found:
        return None
    last = found[-1]
    if not stripped.endswith(last) or last[0].isupper() or any(c.isdigit() for c in last):
        return None
    if last.casefold() in DANGLING:
        return f"{_clip(text)!r} stops mid-sentence after {last!r}; finish the sentence"
    if fragment(last):
        return f"{_clip(text)!r} is cut off mid-word ({last!r}); finish the word and the sentence"
    return None


# -- names --

ARTICLES = frozenset({"the", "a", "an"})
PLACEHOLDERS = frozenset(
    "he she they it we you i him her them narrator character characters speaker name names none "
    "null unknown someone somebody everyone everybody nobody all both other others person people "
    "man woman voice voices crowd protagonist antagonist hero heroine villain n/a".split()
)
PARTICLES = frozenset("van von de da del della di du la le der den ter bin ibn al el y of".split())
HONORIFICS = frozenset("dr. mr. mrs. ms. mx. st. prof. capt. sgt. lt. col. gen. rev. sir lady lord".split())
_NAME_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
EXAMPLE = "such as 'Mara' or 'Tom Reed'"


def capitalise_lower_case(name: str) -> str:
    """A name written all in lower case ("bo", "mary-jane") with each word capitalised; others unchanged."""
    if not name.islower() or len(name.split()) > 4:
        return name
    return " ".join(
        w if w in PARTICLES else re.sub(r"(^|['’-])([^\W\d_])", lambda m: m.group(1) + m.group(2).upper(), w)
        for w in name.split()
    )


def person_name_problem(name: str) -> str | None:
    parts = name.split()
    if not 1 <= len(parts) <= 4:
        return (
            f"{_clip(name)!r} is not a name: a character's name is one to four words "
            f"(a first name, maybe a last name), {EXAMPLE}"
        )
    if parts[0].casefold() in ARTICLES:
        return f"{_clip(name)!r} is a description, not a name; give the character a name {EXAMPLE}"
    if all(p.casefold() in PLACEHOLDERS | ARTICLES for p in parts):
        return f"{name!r} is a placeholder, not a name; give the character a name {EXAMPLE}"
    for index, part in enumerate(parts):
        if index == 0 and part.casefold() in HONORIFICS and len(parts) > 1:
            continue
        if 0 < index < len(parts) - 1 and part in PARTICLES:
            continue
        if not _NAME_WORD.fullmatch(part):
            return (
                f"{_clip(name)!r} is not a name: use letters only (apostrophes and hyphens inside a "
                f"name are fine), {EXAMPLE}"
            )
        if not _capitalised(part):
            return f"{_clip(name)!r} is not a name: each word of a name starts with a capital letter"
        if sum(c.isupper() for c in part) >= 3:  # "TheFutureBeginsWhen": a phrase run together
            return f"{_clip(name)!r} is a phrase run together, not a name; {EXAMPLE}"
    return None


def _capitalised(word: str) -> bool:
    # A capital, or a letter of a script without case (李娜, ሰላም): names in any letters.
    if word[0].isupper() or (word[0].isalpha() and not word[0].islower()):
        return True
    # d'Artagnan, l'Estrange: a lower-case elided particle before a capitalised name
    return len(word) > 2 and word[1] in "'’" and word[2].isupper()


# -- speech --

_LABEL = re.compile(r"(?:^|[\s.;,])([A-Z][A-Za-z]{1,20})\s*:\s*\S")
FIELD_LABELS = frozenset(
    "name character speaker scene setting action dialogue narrator description line text "
    "direction note notes role".split()
)
FIRST_SECOND_PERSON = frozenset(
    "i i'm i'll i've i'd me my mine we we're us our you you're your yours let's".split()
)


def speech_problem(text: str) -> str | None:
    stripped = text.strip()
    labels = _LABEL.findall(stripped)
    first = re.match(r"^([A-Za-z]{2,20})\s*:", stripped)
    if len(labels) >= 2 or (
        first and (first.group(1).isupper() or first.group(1).casefold() in FIELD_LABELS)
    ):
        return (
            f"{_clip(text)!r} is a list of labels, not speech; write only the words the character "
            "says, without 'NAME:' labels"
        )
    if re.search(r"(?:^|\n)\s*(?:[-•*]|\d+[.)])\s", stripped) and "\n" in stripped:
        return f"{_clip(text)!r} is a list, not speech; write what the character says, in sentences"
    if re.fullmatch(r"\(.*\)|\[.*\]|\*[^*].*\*", stripped, flags=re.S):
        return (
            f"{_clip(text)!r} is a stage direction, not speech; put what the character does in "
            "'direction' and what they say in 'text'"
        )
    tokens = words(stripped)
    if (
        tokens
        and tokens[0] in ("the", "a", "an", "his", "her", "their")
        and stripped[0].islower()
        and not re.search(r"[.!?…]", stripped)
        and not FIRST_SECOND_PERSON & set(tokens)
    ):
        return (
            f"{_clip(text)!r} describes something; a dialogue line is what the character says, "
            "in their own words"
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


def _clip(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = [
    "cut_off_problem",
    "debris_problem",
    "first_similar",
    "fragment",
    "loop_problem",
    "person_name_problem",
    "similar",
    "speech_problem",
    "words",
]
