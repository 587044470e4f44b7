"""What the pipeline does with a stage-1 draft: check it before structuring, clean it into prose.

Pure functions, no model call:

- `draft_problems(component, draft, *, premise, beats=None, beat=None)`: why a draft should be
  drawn again (empty: keep it) — empty, looping, a plot draft without the beats asked for, a
  scene draft of one line or one that shares no word with its beat and the premise;
- `draft_score(draft, premise=..., beat=..., problems=...)`: how good a draft is, by code (to
  keep the best of several);
- `clean_prose(text)`: the draft as the prose a reader gets (no headings or answer prefixes, no
  markup, no repeated or looping sentences, no unfinished last sentence);
- `cast_problems(cast, prose, known=...)`: names the prose uses that a scene's cast lacks;
- `loop_start(text)`: where a runaway loop begins, so a provider can stop generating there.

Words, sentences, stems and loops come from the text package (any script); `names_in` and the
cast check read capitalised words, so they know only English and find nothing in other languages
(German capitalises every noun).
"""

from __future__ import annotations

import re
from collections import Counter

from .text.language import detect, is_english
from .text.loops import loop_at
from .text.review import Finding, check_text
from .text.rules import Context, meta_sentence, person_name_problem
from .text.segment import (
    ENGLISH_STOPWORDS,
    TERMINAL_END,
    content_units,
    sentences,
    word_key,
    words,
)

STOPWORDS = ENGLISH_STOPWORDS

# -- clean_prose --

_PREFIX = re.compile(
    r"^\s*(?:#+\s*|>\s*|(?:A|Q|Answer|Response|Assistant|Output|Prose|Story|Scene(?:\s+\d+(?:\s+of\s+\d+)?)?)\s*:\s*)+",
    re.I,
)
_HEADING_LINE = re.compile(r"^\s*(?:#+\s+.*|\*\*[^*]+\*\*.*|title\s*:.*|scene\s+\d+.*)$", re.I)


# A list's marker at a line's start ("1. ", "2) ", "• "): measured, SmolLM2 wrote the prose of 8 of
# the third novella's 60 scenes as a numbered list.
_LIST_MARKER = re.compile(r"^\s*(?:\d{1,2}[.)]|•)\s+")

# A sentence that opens with a label of the scene prompt copies the prompt ("Premise: A lighthouse
# keeper finds…", README command (a)'s third scene).
_PROMPT_LABEL = re.compile(r"^(?:Premise|Plot|Story bible|Characters in this story|Story so far)\s*:", re.I)

# The prompt's own note on a beat, copied into a draft ("... of the month (tension 2/10).").
_PROMPT_NOTE = re.compile(r"\s*\(tension\s+\d+\s*/\s*10\)", re.I)


def clean_prose(text: str) -> str:
    """A stage-1 draft as prose a reader gets.

    Drops heading lines ("# Scene 1", "**Title**", "Title: ..."), answer prefixes ("A:",
    "Answer:", "Scene 2:"), markup (`**`, `__`, backticks, `#`), the prompt's beat notes
    ("(tension 2/10)"), list markers ("1. "), sentences said before (a loop), sentences that loop
    inside or hold no letter ("2015.", an inline list's "2."), sentences that open with a label of
    the scene prompt ("Premise: …"), and the unfinished sentence that
    ends a paragraph (a heading-like line without a full stop goes with it). Paragraphs stay
    paragraphs (joined by one blank line); whitespace inside a paragraph is collapsed.
    """
    paragraphs: list[list[str]] = []
    current: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            if current:
                paragraphs.append(current)
                current = []
            continue
        line = _LIST_MARKER.sub("", _PREFIX.sub("", line))
        if _HEADING_LINE.match(line) and not TERMINAL_END.search(line.strip().rstrip("*")):
            continue
        line = re.sub(r"\*\*|__|`+|(?<!\w)\*(?=\S)|(?<=\S)\*(?!\w)", "", line).replace("#", "")
        line = _PROMPT_NOTE.sub("", line)
        if line.strip():
            current.append(line.strip())
    if current:
        paragraphs.append(current)
    seen: set[str] = set()
    kept: list[list[str]] = []
    for paragraph in paragraphs:
        fresh = []
        for sentence in sentences(" ".join(paragraph)):
            sentence = " ".join(sentence.split())
            key = word_key(sentence)
            if not key or key in seen or loop_at(sentence) or not any(c.isalpha() for c in sentence):
                continue
            if _PROMPT_LABEL.match(sentence):
                continue
            seen.add(key)
            fresh.append(sentence)
        if fresh:
            kept.append(fresh)
    # An unfinished sentence ends any paragraph a small model broke off (not only the last one).
    kept = [p if TERMINAL_END.search(p[-1]) else p[:-1] for p in kept]
    return "\n\n".join(" ".join(paragraph) for paragraph in kept if paragraph)


# -- draft_problems --

_BEAT_LINE = re.compile(
    r"^\s*(?:\d+\s*[.):\-、．）]|[-*•・]|(?:beat|step|part)\s+\d+\s*[.:)-]?|第\s*\d+\s*[幕章部]?)\s*"
    r"(?P<item>\S.*)",
    re.I,
)
MIN_SCENE_WORDS = 60


def listed_items(draft: str) -> list[str]:
    """The items of a list a draft writes, one a line ("1. Name: what happens", "- …", "Beat 2: …",
    "第3章 …"), without their markers: what a plot or chapter draft is counted and read by."""
    found = (_BEAT_LINE.match(line.lstrip("*_#> ")) for line in draft.splitlines())
    return [m.group("item").strip() for m in found if m]


def draft_problems(
    component: str,
    draft: str,
    *,
    premise: str,
    beats: int | None = None,
    beat: str | None = None,
) -> list[str]:
    """Why a stage-1 draft should be drawn again (empty list: keep it).

    Every draft: not empty, and no loop (a sentence said three times, or a word or phrase
    repeated in a row, see text/loops.py). A plot draft: a line per beat
    (numbered or bulleted), at least `beats` of them (3 when not given). A scene draft: more than
    one line or sentence, at least MIN_SCENE_WORDS words of prose once cleaned (`reader_prose`),
    and at least one content word shared with its beat (`beat`: name and purpose) or the premise.
    Each reason is a sentence that can be logged or shown in a re-draw.
    """
    text = draft.strip()
    if not text:
        return [f"the {component} draft is empty"]
    problems = []
    said = Counter(word_key(s) for s in sentences(text) if len(words(s)) >= 3)
    looped = [s for s, n in said.items() if n >= 3]
    if looped:
        problems.append(f"the {component} draft loops: {looped[0]!r} is said {said[looped[0]]} times")
    else:
        # A long draft may say a phrase again far apart: only a short one is judged whole.
        pieces = [text] if len(words(text)) <= 120 else sentences(text)
        tandem = next(
            (found for piece in pieces if (found := loop_at(piece, variety=len(pieces) == 1))), None
        )
        if tandem:
            problems.append(f"the {component} draft loops: it repeats {tandem.phrase!r}")
    if component in ("plot", "chapter"):  # a plot lists its beats, a chapter its scenes
        wanted = beats or 3
        unit = "beats" if component == "plot" else "scenes"
        named = sum(
            1
            for line in text.splitlines()
            if _BEAT_LINE.match(line.lstrip("*_#> ")) and len(words(line)) >= 3
        )
        if named < wanted:
            problems.append(
                f"the {component} draft names {named} of the {wanted} {unit} asked for; write a "
                f"numbered list of {wanted} {unit}, one per line"
            )
    if component == "scene":
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) <= 1 and len(sentences(text)) <= 1:
            problems.append("the scene draft is one line; write two or three paragraphs of prose")
        else:
            # Judged by what a reader would get of it: a draft that is mostly a list, a cut-off end
            # or junk keeps few words once cleaned (SmolLM2 wrote 90 words that kept 19).
            kept = len(words(reader_prose(text)[0]))
            if kept < MIN_SCENE_WORDS:
                problems.append(
                    f"the scene draft keeps {kept} words of prose once cleaned; write two or three "
                    "paragraphs of prose"
                )
        language = detect(f"{premise} {text}")
        wanted_words = set(content_units(f"{premise} {beat or ''}", language))
        if wanted_words and not wanted_words & set(content_units(text, language)):
            problems.append(
                "the scene draft shares no word with its beat or the premise; write the scene the "
                "beat describes"
            )
    return problems


def reader_prose(draft: str) -> tuple[str, list[Finding]]:
    """A scene's prose as a reader gets it: `clean_prose`, then the text rules of a prose body
    (junk and meta talk dropped by the sentence, each drop a recorded finding)."""
    prose = clean_prose(draft)
    if not prose:
        return prose, []
    text, found, unusable = check_text(prose, "prose", Context(language=detect(prose)), "prose")
    if unusable:
        return "", found
    return text, found


def draft_score(draft: str, *, premise: str, beat: str = "", problems: list[str] | None = None) -> float:
    """How good a stage-1 draft is, by code (higher is better), to choose among drafts:

    + 2 x the share of the premise's and the beat's content (text/segment.content_units) it uses;
    + 0.5 x its length against 150 words (capped at 1);
    - 1 per problem a check found (a loop, one line, names outside the cast, a pronoun slip, ...);
    - 0.5 per sentence that talks about the story instead of telling it (English);
    - 1 when it loops anywhere (text/loops.loop_at on each sentence, or on the whole when short).
    """
    text = draft.strip()
    if not text:
        return -10.0
    language = detect(f"{premise} {text}")
    wanted = set(content_units(f"{premise} {beat}", language))
    coverage = len(wanted & set(content_units(text, language))) / len(wanted) if wanted else 1.0
    said = sentences(text)
    length = min(len(words(text)) / 150, 1.0)
    meta = sum(1 for s in said if meta_sentence(s)) if is_english(language) else 0
    looping = 1 if any(loop_at(s) for s in said) else 0
    score = 2 * coverage + 0.5 * length - len(problems or []) - 0.5 * meta - looping
    return round(score, 3)


# A run of capitalised words with one of these is a place, not a person ("New York City",
# "Westminster Palace", "the City of Light"); so is a run after "<place noun> of" ("the town of
# Ashwood"). Words that are also common surnames (Hall, Hill, Park, West, ...) are left out.
PLACE_WORDS = frozenset(
    """city town village kingdom empire republic county province island isle river lake sea ocean
    bay harbor harbour port mountains valley forest square street road avenue bridge palace abbey
    cathedral manor university hotel new""".split()
)
# Capitalised English words that name a day, a month, a holiday, a language, a nation or its
# people, or a title, never a person by themselves (months that are also given names, April, May,
# June, August, are left out; "Captain Osric" is still Osric). Measured: "Friday", "English" and
# "Japan" counted as names outside the cast in the third novella; "Egypt", "Mesopotamian", "King",
# "Pharaoh" and "Christmas" in bench stories.
NOT_PEOPLE = frozenset(
    """monday tuesday wednesday thursday friday saturday sunday january february march july september
    october november december christmas easter halloween thanksgiving hanukkah ramadan diwali
    english french spanish german italian chinese japanese russian arabic american british european
    african asian japan china russia america england france spain germany italy europe africa asia
    egypt egyptian greece greek rome roman persia persian india indian mesopotamia mesopotamian
    babylon babylonian israel ireland irish scotland scottish wales welsh korea korean mexico mexican
    canada canadian brazil brazilian australia australian dutch norse viking king queen pharaoh
    prince princess emperor empress lord lady sir madam captain doctor professor mister mrs mr
    ms""".split()
)
_CAPITALISED_RUN = re.compile(r"[A-Z][\w'’-]*(?:\s+(?:of\s+(?:the\s+)?)?[A-Z][\w'’-]*)*")
_PLACE_OF = re.compile(
    r"\b(?:city|town|village|kingdom|realm|land|island|county|province|state)\s+of\s+(?:the\s+)?"
    r"([A-Z][\w'’-]*(?:\s+[A-Z][\w'’-]*)*)"
)


# A capitalised run after "the" names a thing or a body, not a person ("the Royal Council",
# "the Royal Wedding"): people are not "the Sophia".
_AFTER_THE = re.compile(r"\b[Tt]he\s+([A-Z][\w'’-]*(?:\s+(?:of\s+(?:the\s+)?)?[A-Z][\w'’-]*)*)")


def place_names(text: str) -> set[str]:
    """Words (lower case) that `text` uses in the name of a place or a thing: in a run with a
    PLACE_WORD, after "<place noun> of", or after "the". Once "the city of Ashwood" is a place,
    "in Ashwood" is one too."""
    found: set[str] = set()
    for sentence in sentences(text):
        runs = [m.group() for m in _CAPITALISED_RUN.finditer(sentence) if PLACE_WORDS & set(words(m.group()))]
        runs += [m.group(1) for m in _PLACE_OF.finditer(sentence)]
        runs += [m.group(1) for m in _AFTER_THE.finditer(sentence)]
        found.update(w for run in runs for w in words(run) if w not in ("of", "the"))
    return found


def names_in(text: str, known: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Capitalised words `text` uses as names (not at a sentence start, not a stop word or one of
    NOT_PEOPLE, not in a place's name anywhere in the text, a person's name by
    person_name_problem), except those in `known` (lower case), sorted. A possessive is its name
    ("Aria's" is Aria)."""
    found: set[str] = set()
    places = place_names(text)
    for sentence in sentences(text):
        for match in re.finditer(r"(?<=[\s,;(])([A-Z][a-z]+(?:['’-][A-Za-z]+)?)\b", sentence):
            name = re.sub(r"['’]s$", "", match.group(1))
            lower = name.casefold()
            if lower in places:
                continue
            stem = re.sub(r"['’](?:re|ll|ve|d|m|t)$", "", lower)  # "It's", "You're": not names
            if lower in known or lower in NOT_PEOPLE or STOPWORDS & {lower, stem} or name in ("I", "I'm"):
                continue
            if person_name_problem(name) is None:
                found.add(name)
    return sorted(found)


def cast_problems(cast: list[str], prose: str, *, known: str = "") -> list[str]:
    """Names the prose of a scene uses that its cast does not hold (words of `known`, e.g. the
    premise and title, are not names to ask about). One sentence per problem, for a re-ask."""
    if not is_english(detect(prose)):
        return []  # capitalised words are names only in English (German capitalises every noun)
    words_of_cast = {w.casefold() for name in cast for w in name.split()}
    words_known = {w.casefold() for w in re.findall(r"[A-Z][\w'’-]+", known)}
    outside = names_in(prose, frozenset(words_of_cast | words_known))
    if not outside:
        return []
    return [
        f"the scene's prose names {', '.join(outside)}, who are not in its cast ({', '.join(cast)}); "
        "list the characters who appear in the scene"
    ]
