"""A long story's quality chapter by chapter, and its open threads (by code, no model call).

- Per chapter: the chapter read as a story of its own (the same premise and bible) through the
  quality report, so every check of the bible (names, pronouns, facts) and every text rule runs
  on every chapter; its planned tension (its outline beat's) against the tension its prose and
  dialogue realise (tension words per 100 words), and over the chapters, their Spearman rank
  correlation.
- Open threads: a person the story brings in who is left hanging. A person a chapter brought in on
  purpose (`Chapter.introduces`) who is never named again in a later chapter's prose or dialogue;
  a person of the bible named in the story's first two thirds and never in its last third (a
  chapter-less story of fewer than 3 scenes has no thirds to tell). Who is named is
  text.people_rules.names_person's (any script).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Protocol

from pydantic import BaseModel, Field

from ..schemas import Story, StoryScene
from ..text.people_rules import names_person
from .measures import spearman


class ChapterQuality(BaseModel):
    number: int
    title: str
    scenes: int
    planned_tension: int
    realised_tension: float = Field(description="tension words and '!' per 100 words, its scenes' mean")
    repeated_sentences_pct: float
    cut_off_pct: float
    debris: int
    names_not_in_cast: int
    pronoun_slips: int
    fact_contradictions: int
    goals_failed: int


class _SceneMeasures(Protocol):
    @property
    def tension_words_per_100(self) -> float: ...


class _Report(Protocol):
    """What a chapter's measures read of the quality report of that chapter alone."""

    @property
    def scenes(self) -> Sequence[_SceneMeasures]: ...
    @property
    def repeated_sentences(self) -> float: ...
    @property
    def debris_fields(self) -> list[str]: ...
    @property
    def names_not_in_cast(self) -> list[str]: ...
    @property
    def pronoun_slips(self) -> list[str]: ...
    @property
    def fact_contradictions(self) -> list[str]: ...
    @property
    def failed(self) -> list[str]: ...
    @property
    def cut_off_share(self) -> float: ...


def chapter_qualities(story: Story, quality_report: Callable[[Story], _Report]) -> list[ChapterQuality]:
    """Each chapter's measures (none for a story without chapters), by `quality_report` of each
    chapter alone."""
    rows: list[ChapterQuality] = []
    for number, (chapter, scenes) in enumerate(story.chapter_scenes(), 1):
        if chapter is None or not scenes:
            continue
        alone = quality_report(
            Story(premise=story.premise, plot=story.plot, bible=story.bible, scenes=scenes)
        )
        rows.append(
            ChapterQuality(
                number=number,
                title=chapter.title,
                scenes=len(scenes),
                planned_tension=chapter.tension,
                realised_tension=round(statistics.mean(s.tension_words_per_100 for s in alone.scenes), 2),
                repeated_sentences_pct=round(100 * alone.repeated_sentences, 1),
                cut_off_pct=round(100 * alone.cut_off_share, 1),
                debris=len(alone.debris_fields),
                names_not_in_cast=len(alone.names_not_in_cast),
                pronoun_slips=len(alone.pronoun_slips),
                fact_contradictions=len(alone.fact_contradictions),
                goals_failed=len(alone.failed),
            )
        )
    return rows


def chapter_tension_correlation(chapters: list[ChapterQuality]) -> float | None:
    """Spearman of the chapters' planned tension against what they realise (None: under 3 or flat)."""
    return spearman([float(c.planned_tension) for c in chapters], [c.realised_tension for c in chapters])


def _said(scene: StoryScene) -> str:
    return " ".join([scene.prose or scene.scene.summary, *(line.text for line in scene.dialogue.lines)])


def open_threads(story: Story) -> list[str]:
    """The people the story leaves hanging (see the module docstring), one line each."""
    if story.bible is None:
        return []
    texts = [_said(s) for s in story.scenes]
    threads: list[str] = []
    introduced: set[str] = set()
    start = 0
    for number, (chapter, scenes) in enumerate(story.chapter_scenes(), 1):
        start += len(scenes)
        for person in chapter.introduces if chapter else []:
            introduced.add(person.name)
            if not any(names_person(person.name, text) for text in texts[start:]):
                threads.append(
                    f"{person.name}: brought in by chapter {number}, never named in a later chapter"
                )
    if len(texts) >= 3:
        cut = len(texts) - len(texts) // 3
        for name in story.bible.names:
            early = any(names_person(name, text) for text in texts[:cut])
            if name not in introduced and early and not any(names_person(name, text) for text in texts[cut:]):
                threads.append(f"{name}: named in the story's first two thirds, never in its last third")
    return threads
