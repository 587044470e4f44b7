"""A chapter of a long story: the scenes that carry one beat of the story's outline (its plot).

A long story (`--chapters N`) is planned in levels: the plot is its outline (a beat per chapter),
the bible its people, each chapter its scenes' beats (`--scenes-per-chapter M`), planned from its
outline beat, the bible and the chapter before it; each scene realises one of its chapter's beats.
What a chapter is told about the past is bounded: the outline (at most MAX_CHAPTERS lines) and the
one chapter before it, never the whole story so far.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import Field, create_model

from ...bible import BibleCharacter, StoryBible, bible_text
from ...drafts import listed_items, names_in
from ...quality import draft_problems
from ...schemas import MAX_INTRODUCED, NAME_MAX, TEXT_MAX, Chapter, ChapterPlan, PlotBeat, word_key
from ...structuring import decoding_schema
from ...text.language import detect, is_english
from ...text.people_rules import acts_as_person, person_name_problem
from ...text.rules import Context
from ...text.segment import words
from .. import parts
from ..story import outline
from ..twostage import StepMeta, TwoStage
from .base import Inputs, RunView, Step


class ChapterStep(Step[Chapter]):
    name = "chapter"
    model = Chapter
    per_chapter = True
    contract: ClassVar[dict[str, dict[str, type]]] = {
        "chapter_freeform": {
            "premise": str,
            "outline": str,
            "bible": str,
            "previous": str,
            "chapter": str,
            "number": int,
            "total": int,
            "scenes": int,
        },
        "chapter_structuring": {"chapter": str, "draft": str, "scenes": int, "schema": str},
    }

    def applies(self, run: RunView) -> bool:
        return run.chapter_count() is not None

    def needs(self, index: int | None, run: RunView) -> list[str]:
        """The outline, the bible and the chapter before it (a chapter goes on from where it ended)."""
        assert index is not None
        return ["plot", "bible", *([f"chapter.{index - 1}"] if index else [])]

    def gather(self, run: RunView, index: int | None) -> Inputs:
        assert index is not None
        total = run.chapter_count()
        assert total is not None
        return Inputs(
            premise=run.premise,
            plot=run.value("plot"),
            bible=run.bible_at(index - 1),  # with the people the chapters before brought in
            beat=run.outline_beat_of(index),
            beats=run.scenes_per_chapter(),
            number=(index + 1, total),
            chapter=run.value(f"chapter.{index - 1}") if index else None,
        )

    def info(self, index: int | None, run: RunView) -> dict[str, Any]:
        assert index is not None
        return {"index": index + 1, "total": run.chapter_count()}

    async def draft(self, stages: TwoStage, x: Inputs, meta: StepMeta) -> str:
        assert x.plot is not None and x.beats is not None
        context = {
            "premise": x.premise,
            "outline": outline(x.plot),
            "bible": bible_text(x.bible) if x.bible else "",
            "previous": chapter_text(x.chapter, x.number[0] - 1) if x.chapter else "",
            "chapter": beat_line(x.plot.beats[x.beat]),
            "number": x.number[0],
            "total": x.number[1],
            "scenes": x.beats,
        }

        def check(text: str) -> list[str]:  # a draft that names too few scenes is drawn again
            return draft_problems("chapter", text, premise=x.premise, beats=x.beats)

        return await stages.freeform("chapter", context, meta, check=check)

    async def structure(self, stages: TwoStage, x: Inputs, draft: str, meta: StepMeta) -> Chapter:
        assert x.plot is not None and x.beats is not None
        scenes = x.beats
        beat = x.plot.beats[x.beat]
        # Exactly `scenes` beats: the run's scenes were counted before the chapter was planned.
        plan_model = create_model(
            "ChapterPlan",
            __base__=ChapterPlan,
            beats=(list[PlotBeat], Field(min_length=scenes, max_length=scenes)),
        )
        schema = decoding_schema(plan_model, counts={"beats": (scenes, scenes)})
        context = {"chapter": beat_line(beat), "draft": draft, "scenes": scenes}
        plan = await stages.structure(
            "chapter",
            context,
            plan_model,
            schema,
            meta,
            parts=(draft, parts.chapter_parts(scenes, beat.tension)),
            # a scene the chapter before already has is re-asked once, else kept and recorded
            review=Context(earlier=tuple(b.purpose for b in x.chapter.beats) if x.chapter else ()),
        )
        return planned_chapter(x, draft, plan.beats)

    fallback_made = "a plain one was made from its draft's list and its outline beat"

    def fallback(self, x: Inputs, draft: str = "") -> Chapter:
        """A plain chapter made by code, so that a long story is never lost to one chapter's words
        (measured: SmolLM2 gave chapter 8 of 12 one purpose twice on all six attempts): the scenes
        its draft lists, then, for any it lacks, its outline beat again."""
        assert x.plot is not None and x.beats is not None
        beat = x.plot.beats[x.beat]
        beats = listed_beats(draft, beat.tension)[: x.beats]
        while len(beats) < x.beats:
            beats.append(PlotBeat(name=f"{beat.name} {len(beats) + 1}"[:NAME_MAX], purpose=beat.purpose,
                                  tension=beat.tension))  # fmt: skip
        return planned_chapter(x, draft, beats)


def planned_chapter(x: Inputs, draft: str, beats: list[PlotBeat]) -> Chapter:
    """Chapter `x.beat` of the outline with its scenes' `beats`: the bible's people its plan names,
    and the people it brings in on purpose."""
    assert x.plot is not None
    beat = x.plot.beats[x.beat]
    planned = f"{draft} " + " ".join(f"{b.name} {b.purpose}" for b in beats)
    known = " ".join(
        [x.premise, x.plot.title or "", *(b.name for b in x.plot.beats), *(b.name for b in beats)]
    )
    return Chapter(
        title=beat.name,
        goal=beat.purpose,
        tension=beat.tension,
        characters=people_named(x.bible, planned),
        beats=beats,
        introduces=introduced(x.bible, beats, x.number[0], known),
    )


GROWN_CAST_MAX = 8  # the people a bible may hold once chapters have brought some in


def introduced(
    bible: StoryBible | None, beats: list[PlotBeat], number: int, known: str
) -> list[BibleCharacter]:
    """The people a chapter's plan brings into the story on purpose: names that at least two of its
    scenes' purposes give, that the bible lacks (and the premise, the title and the beats' names do
    not hold), none of whose words the plan also writes in lower case (a noun capitalised by chance:
    SmolLM2's plans brought in "Love", "Respect" and "React Native" when one mention was enough)
    and that the plan treats as a person at least once (a role before it, a thing it owns, or it
    doing something: `acts_as_person`; the rules before it still let "Hero's Journey" and
    "Courage" in), in the order they come, each described by the first purpose that names them;
    none once the bible holds GROWN_CAST_MAX people. English only: a capitalised word is a name
    only there, so a chapter in another language introduces no one (its cast is the bible's)."""
    text = " ".join(b.purpose for b in beats)
    if bible is None or len(bible.characters) >= GROWN_CAST_MAX or not is_english(detect(text)):
        return []
    lower = set(re.findall(r"(?<![\w'’-])[a-z][a-z'’-]*", text))  # the words it writes in lower case
    taken = {w.casefold() for w in words(known)} | {w.casefold() for n in bible.names for w in words(n)}
    found: list[str] = []
    for word in sorted(names_in(text, frozenset(taken)), key=text.find):
        # the whole name its word is part of ("Osric Vale"); one with a known word is a known person
        run = re.search(rf"(?:[A-Z][\w'’-]+ )*{re.escape(word)}(?: [A-Z][\w'’-]+)*", text)
        name = run.group(0) if run else word
        if any(w.casefold() in taken or w.casefold() in lower for w in name.split()):
            continue
        named_twice = sum(name in b.purpose for b in beats) >= 2
        if person_name_problem(name) is None and named_twice and acts_as_person(name, text):
            found += [name] if name not in found else []
    found = found[: min(MAX_INTRODUCED, GROWN_CAST_MAX - len(bible.characters))]
    return [
        BibleCharacter(
            name=name,
            role=f"brought into the story by chapter {number}",
            description=next(b.purpose for b in beats if name in b.purpose),
            pronouns="they/them",
        )
        for name in found
    ]


def listed_beats(draft: str, tension: int) -> list[PlotBeat]:
    """The scenes a chapter's draft lists ("1. Name: what happens"), as beats at `tension`; a line
    without a name is named by its first words; a purpose said twice is kept once."""
    beats: list[PlotBeat] = []
    seen: set[str] = set()
    for listed in listed_items(draft):
        item = listed.strip(" *_")
        name, _, purpose = item.replace("：", ":").partition(":")
        if not purpose.strip():
            name, purpose = " ".join(item.split()[:4]), item
        name, purpose = name.strip(" *_"), purpose.strip(" *_")
        key = word_key(purpose)
        if not name or not key or key in seen:
            continue
        seen.add(key)
        beats.append(PlotBeat(name=name[:NAME_MAX], purpose=purpose[:TEXT_MAX], tension=tension))
    return beats


def beat_line(beat: PlotBeat) -> str:
    return f"{beat.name}: {beat.purpose} (tension {beat.tension}/10)"


def chapter_text(chapter: Chapter, number: int) -> str:
    """A chapter as the steps after it are told it: its title and goal, then its scenes' beats."""
    return f"Chapter {number}: {chapter.title}: {chapter.goal}\n{outline_of(chapter.beats)}"


def outline_of(beats: list[PlotBeat]) -> str:
    return "\n".join(f"{i}. {beat_line(b)}" for i, b in enumerate(beats, 1))


def people_named(bible: StoryBible | None, text: str) -> list[str]:
    """The bible's people a chapter's plan names (by any word of their name), in the bible's order."""
    if bible is None:
        return []
    said = {w.casefold() for w in words(text)}
    return [name for name in bible.names if any(w.casefold() in said for w in words(name) if len(w) > 2)]
