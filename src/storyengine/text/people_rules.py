"""The text rules about the story's people, in the order they run: a character's or speaker's name
must be a person's name, and a dialogue line must be speech (not a label list, a bullet list, a
stage direction alone or, in English, a description).
"""

from __future__ import annotations

import regex

from .language import is_english
from .rule_base import PEOPLE, SPEECH, Context, Hit, RuleList, clip
from .segment import words

RULES = RuleList()
rule = RULES.rule

# -- names --

ARTICLES = frozenset({"the", "a", "an"})
PLACEHOLDERS = frozenset(
    "he she they it we you i him her them narrator character characters speaker name names none "
    "null unknown someone somebody everyone everybody nobody all both other others person people "
    "man woman voice voices crowd protagonist antagonist hero heroine villain n/a".split()
)
PARTICLES = frozenset("van von de da del della di du la le der den ter bin ibn al el y of".split())
HONORIFICS = frozenset("dr. mr. mrs. ms. mx. st. prof. capt. sgt. lt. col. gen. rev. sir lady lord".split())


# Letters in one piece of a name's word and in the whole word (its hyphened and apostrophed pieces
# together): real names stay under both in every script ("Bartholomew-Maximilian" is 21); SmolLM2
# named a character "Theeardofthelight-haulinglighthousek" (35).
MAX_NAME_PIECE_LETTERS = 20
MAX_NAME_WORD_LETTERS = 28


def _run_together(word: str) -> bool:
    pieces = regex.split(r"['’\-]", word)
    letters = [sum(c.isalpha() for c in piece) for piece in pieces]
    return max(letters) > MAX_NAME_PIECE_LETTERS or sum(letters) > MAX_NAME_WORD_LETTERS


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
        if _run_together(part):  # "Theeardofthelight-haulinglighthousek"
            return f"{clip(name)!r} is words run together, not a name"
    return None


def names_person(name: str, text: str) -> bool:
    """Whether `text` names the person `name`: by any word of their name (of 3 letters or more) at
    a word's start ("Mara's"), or, in a script without case (李娜), by their name anywhere. Any
    script, though an inflected form (Марии for Мария) is missed."""
    pieces = [p for p in name.split() if len(p) >= 3] or [name]
    for piece in pieces:
        if piece[0].isupper() or piece[0].islower():  # a cased script: at a word's start
            if regex.search(rf"(?<!\w){regex.escape(piece)}", text):
                return True
        elif piece in text:
            return True
    return False


# -- a name the English text treats as a person (the growing bible's test) --

# Words before a name that make it a person's: honorifics, kin and trades ("harbour master Osric").
ROLE_NOUNS = frozenset(
    "master keeper captain uncle aunt mother father mum mom dad sister brother daughter son wife "
    "husband widow widower cousin niece nephew grandmother grandfather friend rival king queen prince "
    "princess duke duchess earl baron knight doctor detective inspector officer sergeant constable "
    "merchant baker sailor fisherman smuggler priest mayor judge lawyer clerk teacher apprentice "
    "stranger neighbour neighbor named called".split()
) | {h.rstrip(".") for h in HONORIFICS}
# Words after a name that show it doing something: auxiliaries and common past or present verbs.
AUXILIARIES = frozenset(
    "is was has had will would must can could should may might does did refuses tries wants needs "
    "says said asks asked".split()
)
_SUBJECT_START = regex.compile(r"(?:^|[.;:!?]\s+|,\s+|\b(?:and|but|while|when|as|until|so|then)\s+)$")


def _verb_like(word: str) -> bool:
    w = word.casefold()
    if w in AUXILIARIES:
        return True
    return len(w) > 3 and (w.endswith("ed") or (w.endswith("s") and not w.endswith(("ss", "us", "is"))))


def acts_as_person(name: str, text: str) -> bool:
    """Whether an English `text` treats `name` as a person at least once: a role or honorific before
    it ("harbour master Osric Vale", "Captain Osric"), its possession of a thing ("Osric's ledger"),
    or it doing something at a clause's start ("Osric confronts Mara", "and Osric refuses"). A
    noun capitalised for a title is none of these ("with Love and Respect", "A Tale of Two
    Cities", "App Development with React Native"). English only: other languages' names are
    not told by their neighbours here, and the growing bible that asks runs only on English."""
    for found in regex.finditer(rf"(?<![\w'’-]){regex.escape(name)}(?![\w-])", text):
        before, after = text[: found.start()], text[found.end() :]
        previous = regex.findall(r"[\w'’.-]+", before[-40:])
        if previous and previous[-1].casefold().rstrip(".") in ROLE_NOUNS:
            return True
        if regex.match(r"['’]s\s+\p{Ll}", after):
            return True
        following = regex.match(r"\s+(\p{Ll}[\p{L}'’]*)", after)
        if following and _verb_like(following.group(1)) and _SUBJECT_START.search(before):
            return True
    return False


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
