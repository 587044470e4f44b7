"""The language of a text, detected once per text (cached): an ISO 639-1 code such as "en", "ja".

The script decides where it can (Kana is Japanese, Hangul Korean, Han without Kana Chinese,
Thai, Greek, Hebrew, Armenian, Georgian each one language); otherwise `py3langid` decides (a
maintained fork of langid.py: 97 languages, a model shipped in the wheel, deterministic,
offline; about 1.5 s to load once per process). A text too short to judge (fewer than four
words) in Latin script counts as English, the language of the prompts, so that a two-word
title in English is judged as English; any other script keeps its script's language.

Rules that know only English ask `is_english(language)`; "und" (undetermined) is not English.
"""

from __future__ import annotations

from functools import lru_cache

import regex

UNDETERMINED = "und"
_BY_SCRIPT = (
    (regex.compile(r"[\p{Hiragana}\p{Katakana}]"), "ja"),
    (regex.compile(r"\p{Hangul}"), "ko"),
    (regex.compile(r"\p{Han}"), "zh"),
    (regex.compile(r"\p{Thai}"), "th"),
    (regex.compile(r"\p{Greek}"), "el"),
    (regex.compile(r"\p{Hebrew}"), "he"),
    (regex.compile(r"\p{Armenian}"), "hy"),
    (regex.compile(r"\p{Georgian}"), "ka"),
)
_LATIN = regex.compile(r"\p{Latin}")
_LETTER = regex.compile(r"\p{L}")


def _main_script_share(text: str, pattern: regex.Pattern[str]) -> float:
    letters = _LETTER.findall(text)
    if not letters:
        return 0.0
    return sum(1 for c in letters if pattern.match(c)) / len(letters)


@lru_cache(maxsize=512)
def detect(text: str) -> str:
    """The language of `text` (see the module docstring)."""
    sample = " ".join(text.split())[:2000]
    if not _LETTER.search(sample):
        return UNDETERMINED
    for pattern, language in _BY_SCRIPT:
        # Japanese is Kana mixed with Han: any Kana among the letters makes it Japanese.
        share = _main_script_share(sample, pattern)
        if (language == "ja" and share >= 0.05) or share >= 0.3:
            return language
    latin = _main_script_share(sample, _LATIN)
    if latin >= 0.5 and len(sample.split()) < 4:
        return "en"
    return _classify(sample)


def _classify(sample: str) -> str:
    import py3langid

    language, _ = py3langid.classify(sample)
    return str(language)


def is_english(language: str) -> bool:
    return language == "en"


__all__ = ["UNDETERMINED", "detect", "is_english"]
