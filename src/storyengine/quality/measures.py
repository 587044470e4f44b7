"""The report's measures that take more than a line of code, each a function of the story: tension
words per 100 words and its rank correlation with the plan, names in the prose that no cast holds,
people of the premise the story never mentions, the lead's other pronouns, the bible facts a kept
draft still contradicts, copied rationales and suggestions.
"""

from __future__ import annotations

import re
import statistics

from ..bible import premise_pronouns
from ..drafts import names_in
from ..schemas import Story
from ..text.language import is_english
from ..text.rules import first_similar
from ..text.segment import stem, words
from .reading import scene_prose

TENSION_WORDS = frozenset(
    """afraid alarm anger angry attack blood break breaks broke chase crash cries cry danger dark
    dead death desperate die dies escape explode fear fight fire flee gun hide horror hurt kill
    lost panic rage risk run runs scream screams shout shouts shock sudden suddenly terror threat
    trap trapped warn warning wound""".split()
)


def spearman(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None

    def ranks(values: list[float]) -> list[float]:
        order = sorted(range(len(values)), key=lambda i: values[i])
        result = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                result[order[k]] = (i + j) / 2
            i = j + 1
        return result

    rx, ry = ranks(xs), ranks(ys)
    return round(statistics.correlation(rx, ry), 3)


def tension_per_100(text: str) -> float:
    tokens = words(text)
    if not tokens:
        return 0.0
    hits = sum(1 for w in tokens if w in TENSION_WORDS or stem(w) in TENSION_WORDS) + text.count("!")
    return round(100 * hits / len(tokens), 2)


def names_not_in_cast(story: Story, language: str) -> list[str]:
    if not is_english(language):
        return []  # capitalised words are names only in English
    people = [*story.plot.characters, *(story.bible.names if story.bible else [])]
    cast = {w.casefold() for name in people for w in name.split()}
    for item in story.scenes:
        cast |= {w.casefold() for name in item.scene.characters for w in name.split()}
    known = {w.casefold() for w in re.findall(r"[A-Z][\w'’-]+", f"{story.premise} {story.plot.title}")}
    found: set[str] = set()
    for item in story.scenes:
        found.update(names_in(item.prose or "", frozenset(cast | known)))
    return sorted(found)


FACT_PROBLEM = "contradicts the bible's fact"
_HONORIFIC_NAME = re.compile(r"\b(?:Mr|Mrs|Ms|Mx|Dr|Prof|Captain|Capt|Lady|Lord|Sir)\.?\s+([A-Z][\w'’-]+)")
_SHE, _HE = {"she", "her", "hers", "herself"}, {"he", "him", "his", "himself"}


def premise_names_missing(story: Story, told: str, language: str) -> list[str]:
    """People the premise names ("Mr. Dorbenson finds a book…": Dorbenson) whom the story never
    mentions. English: a name after an honorific, or a capitalised word inside a sentence."""
    if not is_english(language):
        return []
    named = set(_HONORIFIC_NAME.findall(story.premise))
    named |= set(names_in(story.premise))
    present = {w.casefold() for w in words(told)}
    return sorted(n for n in named if n.casefold() not in present)


def lead_other_pronouns(story: Story, language: str) -> float | None:
    """The share of the prose's he/she pronouns that are of the set the premise does not give its
    lead, when the premise speaks of its people with one set ("her future self"). English only;
    None without a premise set or with fewer than five such pronouns."""
    wanted = premise_pronouns(story.premise) if is_english(language) else None
    if wanted not in ("she/her", "he/him"):
        return None
    tokens = [w for item in story.scenes for w in words(scene_prose(item))]
    she = sum(1 for w in tokens if w in _SHE)
    he = sum(1 for w in tokens if w in _HE)
    if she + he < 5:
        return None
    return round((he if wanted == "she/her" else she) / (she + he), 3)


def fact_contradictions(story: Story) -> list[str]:
    """What the model's fact check still found in each scene's kept draft (its step metadata)."""
    steps = story.meta.get("steps") or {}
    found = []
    for i in range(len(story.scenes)):
        problems = (steps.get(f"scene.{i}.draft") or {}).get("draft_problems") or []
        found += [f"scenes[{i}]: {p}" for p in problems if str(p).startswith(FACT_PROBLEM)]
    return found


def copied_pairs(story: Story) -> list[str]:
    copied = []
    scores = story.evaluation.scores if story.evaluation is not None else []
    pair = first_similar([s.rationale for s in scores])
    if pair:
        copied.append(f"rationales of {scores[pair[0]].criterion} and {scores[pair[1]].criterion}")
    suggestions = story.enhancement.suggestions if story.enhancement is not None else []
    for key in ("change", "problem"):
        pair = first_similar([getattr(s, key) for s in suggestions])
        if pair:
            copied.append(f"suggestions[{pair[0]}] and suggestions[{pair[1]}]: same {key}")
    return copied
