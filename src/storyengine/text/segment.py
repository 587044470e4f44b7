"""Words, sentences and content words of a text in any script: the one tokenizer and the one splitter.

- `words(text)`: lower-case words. In scripts written with spaces (Latin, Cyrillic, Greek,
  Arabic, Hebrew, Devanagari, Hangul, ...) a word is a run of letters, combining marks and
  digits, with an apostrophe or hyphen inside ("o'neil", "mary-jane", "مَرْحَبًا", "नमस्ते": the
  marks of Arabic and Indic scripts stay in their word). In scripts written without spaces
  (Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar) every character is a token: a
  dictionary segmenter per language would be better and is not worth its size here, because
  the measures that use tokens (loops, distinct-n, overlap) work on characters for these
  scripts (see `content_units`).
- `sentences(text)`: split after a sentence's final mark (`. ! ? …` and the CJK, Arabic,
  Devanagari and Urdu marks `。！？؟।۔`), with closing quotes and brackets kept on the
  sentence; Latin marks need a space after them, the full-width marks do not; a full stop
  after an honorific or a single capital ("Dr.", "J.") does not end a sentence; lines are
  breaks too.
- `content_units(text, language)`: what "the same content" means across texts: for spaced
  scripts the words that carry meaning (not stop words, stemmed by Snowball where it has the
  language); for spaceless scripts the character pairs that hold a Han or Katakana character
  (Japanese particles and kana endings carry little).

Libraries: `regex` (Unicode script classes that `re` lacks), `snowballstemmer` (34 languages,
pure Python, what Sphinx and many search tools use) and `stopwordsiso` (stop words for 50+
languages). English keeps its own short stop-word list, measured in earlier rounds (the ISO
list for English has 1,298 words, many of them content words such as "information").
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import regex

SPACELESS = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}"
_LETTER = rf"(?:(?![{SPACELESS}])[\p{{L}}\p{{M}}\p{{N}}])"
WORD = regex.compile(rf"[{SPACELESS}]|{_LETTER}+(?:['’\-]{_LETTER}+)*")
# A word written with letters only (no digits): names, and what the cut-off rule looks at.
LETTERS_WORD = regex.compile(
    rf"[{SPACELESS}]|(?:(?![{SPACELESS}])[\p{{L}}\p{{M}}])+(?:['’\-](?:(?![{SPACELESS}])[\p{{L}}\p{{M}}])+)*"
)
_SPACELESS_CHAR = regex.compile(rf"[{SPACELESS}]")
_HAN_OR_KATAKANA = regex.compile(r"[\p{Han}\p{Katakana}]")

# Final marks of a sentence. Full-width and CJK marks end a sentence with or without a space.
LATIN_END = ".!?…"
WIDE_END = "。！？｡؟।॥۔"
SENTENCE_END = LATIN_END + WIDE_END
CLOSERS = "\"'”’»)]）」』】〉》\u201d*"
_SPLIT = regex.compile(
    rf"(?<=[{regex.escape(LATIN_END)}][{regex.escape(CLOSERS)}]*)\s+"
    rf"|(?<=[{regex.escape(WIDE_END)}][{regex.escape(CLOSERS)}]*)(?![{regex.escape(CLOSERS)}])\s*"
)
# A full stop that does not end a sentence: after an honorific or an initial ("Dr. Reed", "J. Reed").
_NOT_AN_END = regex.compile(
    r"(?:\b(?:Mr|Mrs|Ms|Mx|Dr|St|Prof|Capt|Sgt|Lt|Col|Gen|Rev|Jr|Sr|vs|etc|e\.g|i\.e)|\b\p{Lu})\.$"
)
TERMINAL_END = regex.compile(rf"[{regex.escape(SENTENCE_END)}][{regex.escape(CLOSERS)}]*$")


def words(text: str) -> list[str]:
    """The words of `text`, lower case (a spaceless script's characters one by one)."""
    return [w.casefold() for w in WORD.findall(text)]


def spaceless(text: str) -> bool:
    """Whether most of `text`'s letters belong to scripts written without spaces."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return False
    return sum(1 for c in letters if _SPACELESS_CHAR.match(c)) * 2 > len(letters)


def sentences(text: str) -> list[str]:
    """The sentences of `text` (see the module docstring); lines are breaks too."""
    found: list[str] = []
    for line in text.splitlines():
        pending = ""
        for piece in _SPLIT.split(line):
            if not piece or not piece.strip():
                continue
            pending = f"{pending} {piece.strip()}" if pending else piece.strip()
            if _NOT_AN_END.search(pending):
                continue
            found.append(pending)
            pending = ""
        if pending:
            found.append(pending)
    return found


def ends_a_sentence(text: str) -> bool:
    """Whether `text` ends with a sentence's final mark (any script), maybe inside quotes."""
    return bool(TERMINAL_END.search(text.rstrip()))


# -- content --

ENGLISH_STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each even ever every
    few for from further had has have having he her here hers herself him himself his how i if in
    into is it its itself just least less let like made make many may me more most much must my
    myself never no nor not now of off on once one only or other our ours out over own same she
    should so some such than that the their theirs them themselves then there these they this
    those through to too under until up upon very was we were what when where which while who whom
    whose why will with within without would yet you your yours yourself""".split()
)

_SNOWBALL = {
    "ar": "arabic", "ca": "catalan", "cs": "czech", "da": "danish", "de": "german", "el": "greek",
    "es": "spanish", "eu": "basque", "fi": "finnish", "fr": "french", "ga": "irish", "hi": "hindi",
    "hu": "hungarian", "hy": "armenian", "id": "indonesian", "it": "italian", "lt": "lithuanian",
    "ne": "nepali", "nl": "dutch", "no": "norwegian", "nb": "norwegian", "fa": "persian",
    "pl": "polish", "pt": "portuguese", "ro": "romanian", "ru": "russian", "sr": "serbian",
    "sv": "swedish", "ta": "tamil", "tr": "turkish", "uk": "russian", "yi": "yiddish",
    "et": "estonian",
}  # fmt: skip


@lru_cache(maxsize=64)
def stopwords(language: str) -> frozenset[str]:
    """Stop words of `language` (ISO 639-1): our English list, else stopwordsiso's (empty if none)."""
    if language == "en":
        return ENGLISH_STOPWORDS
    try:
        import stopwordsiso

        return frozenset(w.casefold() for w in stopwordsiso.stopwords(language))
    except Exception:  # an unknown language has no list; that only means fewer words are skipped
        return frozenset()


@lru_cache(maxsize=64)
def _stemmer(language: str) -> Any:
    name = _SNOWBALL.get(language)
    if name is None:
        return None
    import snowballstemmer

    return snowballstemmer.stemmer(name)


def english_stem(word: str) -> str:
    """A crude stem, enough to match "lighthouses" with "lighthouse" or "written" with "writes"
    (kept for English: measured in earlier rounds, and it treats names gently)."""
    w = word.casefold().removesuffix("'s").removesuffix("’s")
    for suffix in ("ing", "ed", "es", "en", "s", "ly", "er"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 4:
            return w[: -len(suffix)]
    return w


def stem(word: str, language: str = "en") -> str:
    """The stem of `word` in `language`: Snowball's where it has the language, ours for English."""
    if language == "en":
        return english_stem(word)
    stemmer = _stemmer(language)
    return stemmer.stemWord(word.casefold()) if stemmer is not None else word.casefold()


def content_words(text: str, language: str = "en") -> list[str]:
    """The words of `text` that carry meaning, in order, once: not stop words; three letters or
    more in alphabetic scripts. Spaceless scripts: see `content_units`."""
    stop = stopwords(language)
    return list(
        dict.fromkeys(
            w for w in words(text) if not _SPACELESS_CHAR.match(w) and len(w) >= 3 and w not in stop
        )
    )


def content_units(text: str, language: str = "en") -> list[str]:
    """What two texts must share to be about the same thing: stems of content words; in Japanese
    the runs of Kanji and Katakana; in other spaceless scripts the character pairs holding a Han
    or Katakana character (in order, once)."""
    units = [stem(w, language) for w in content_words(text, language)]
    if language == "ja":
        # Kanji and Katakana carry the content; Hiragana between them is particles and endings.
        return list(dict.fromkeys(units + regex.findall(r"[\p{Han}\p{Katakana}ー]+", text)))
    for run in regex.findall(rf"[{SPACELESS}]+", text):
        units += [run[i : i + 2] for i in range(len(run) - 1) if _HAN_OR_KATAKANA.search(run[i : i + 2])]
        if len(run) == 1 and _HAN_OR_KATAKANA.match(run):
            units.append(run)
    return list(dict.fromkeys(units))


def word_key(text: str) -> str:
    """Only the words of `text`, lower case: "The Climax!" -> "the climax" (any script)."""
    return " ".join(words(text))


__all__ = [
    "SENTENCE_END",
    "TERMINAL_END",
    "content_units",
    "content_words",
    "ends_a_sentence",
    "sentences",
    "spaceless",
    "stem",
    "stopwords",
    "word_key",
    "words",
]
