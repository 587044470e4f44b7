"""The typed story data: one Pydantic model per component, and the one source of every JSON schema.

Every string is stripped and must not be blank; every size is bounded. Besides shape, the
validators check meaning that a small model gets wrong while producing shape-valid JSON:
a plot must have an arc (not all tensions equal), purposes must not be copied from beat to
beat or be the beat's own name, dialogue must come from the scene's cast and must not loop,
an evaluation scores every criterion exactly once. Error messages are
written to be shown to the model in a re-ask, so they say what is wrong and what to write
instead.

The rules about text (text/rules.py: no JSON debris, no loops, prose not cut off, characters
with a person's name, dialogue lines that are speech, ...) are not validators here: a model's
answer is reviewed before it is validated (text/review.py), where what code can repair is
repaired and recorded, and what it cannot is re-asked once and otherwise kept as a finding. So
a word never fails a story; shape does (types, required fields, counts, a speaker outside the
cast, an evaluation that does not score every criterion once). An evaluation that gives every
criterion one score, or the same rationale to two criteria, is kept but marked
`reliable=False` with a note.

Integers are strict: `"7"` or `7.0` is not a tension. The schema says integer, constrained
decoding always yields one, and a model that writes a string has not followed the format.
Unknown keys are ignored (they carry nothing the typed object could keep).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .bible import BibleCharacter, StoryBible
from .text.rules import first_similar
from .text.segment import word_key

LENIENT = "skip_sanity_rules"  # kept for callers that still pass it: the text rules no longer raise

NAME_MAX = 80
LABEL_MAX = 200
TEXT_MAX = 2000
PREMISE_MAX = 10_000

EVALUATION_CRITERIA = ("coherence", "character", "pacing", "dialogue", "originality")


def _bounded(limit: int) -> StringConstraints:
    return StringConstraints(strip_whitespace=True, min_length=1, max_length=limit)


Name = Annotated[str, _bounded(NAME_MAX)]
"""A short name of a thing: a beat, a structure type."""
PersonName = Annotated[str, _bounded(NAME_MAX)]
"""A character's name (text/rules.py says what a name is, in any script)."""
Label = Annotated[str, _bounded(LABEL_MAX)]
"""A title or a short phrase: no final punctuation needed."""
Text = Annotated[str, _bounded(TEXT_MAX)]
"""Prose: a sentence or more."""
Speech = Annotated[str, _bounded(TEXT_MAX)]
"""What a character says."""
Premise = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=PREMISE_MAX)]
Rating = Annotated[int, Field(strict=True, ge=1, le=10)]
Criterion = Literal["coherence", "character", "pacing", "dialogue", "originality"]

ONE_SCORE_NOTE = "every criterion got the same score: the model did not tell the criteria apart"
COPIED_NOTE = "the model did not reason about each criterion"
UNTITLED = "Untitled"


def name_key(text: str) -> str:
    """How names and texts are compared: case-insensitive, whitespace collapsed."""
    return " ".join(text.split()).casefold()


def _first_duplicate(names: Iterable[str]) -> tuple[str, int, int] | None:
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        key = name_key(name)
        if key in seen:
            return name, seen[key], index
        seen[key] = index
    return None


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


class PlotBeat(_Model):
    name: Name
    purpose: Text = Field(description="what this beat does for the story")
    tension: Rating = Field(description="1 (calm) to 10 (peak)")
    description: Text | None = None


class PlotStructure(_Model):
    structure_type: Name = Field(description="e.g. three-act, hero's journey")
    beats: list[PlotBeat] = Field(min_length=3, max_length=24)
    title: Label = Field(description="the story's title")
    characters: list[PersonName] = Field(default_factory=list, max_length=12)

    @field_validator("beats")
    @classmethod
    def _beats_make_an_arc(cls, beats: list[PlotBeat]) -> list[PlotBeat]:
        duplicate = _first_duplicate(b.name for b in beats)
        if duplicate:
            name, first, again = duplicate
            raise ValueError(
                f"beat names must be unique: {name!r} is used by beats[{first}] and beats[{again}]; "
                "give every beat its own name"
            )
        tensions = {b.tension for b in beats}
        if len(beats) >= 4 and len(tensions) == 1:
            raise ValueError(
                f"all {len(beats)} beats have tension {beats[0].tension}; a plot needs an arc: "
                "let tension rise toward the climax and fall after it"
            )
        purpose, count = Counter(word_key(b.purpose) for b in beats).most_common(1)[0]
        if count * 2 > len(beats):
            raise ValueError(
                f"{count} of {len(beats)} beats have the same purpose ({purpose!r}); "
                "write a distinct purpose for each beat"
            )
        return beats

    @field_validator("characters")
    @classmethod
    def _characters_unique(cls, characters: list[str]) -> list[str]:
        duplicate = _first_duplicate(characters)
        if duplicate:
            raise ValueError(f"character {duplicate[0]!r} is listed twice; list each character once")
        return characters


class Scene(_Model):
    title: Label
    setting: Text = Field(description="where and when")
    summary: Text = Field(description="what happens")
    characters: list[PersonName] = Field(min_length=1, max_length=8)
    beat: Name | None = Field(default=None, description="name of the plot beat this scene realises")
    mood: Label | None = None

    @field_validator("characters")
    @classmethod
    def _characters_unique(cls, characters: list[str]) -> list[str]:
        duplicate = _first_duplicate(characters)
        if duplicate:
            raise ValueError(f"character {duplicate[0]!r} is listed twice; list each character once")
        return characters


class DialogueLine(_Model):
    speaker: PersonName
    text: Speech
    direction: Label | None = Field(default=None, description="how the line is said or what the speaker does")


def speaker_label(text: str, cast: list[str]) -> str | None:
    """The cast member whose name opens `text` as a script label ("Mara: ..."), if any."""
    return next(
        (n for n in cast if n.strip() and re.match(rf"\s*{re.escape(n.strip())}\s*:", text, re.I)), None
    )


def _cast_from(context: Any) -> list[str]:
    cast = context.get("cast") if isinstance(context, dict) else None
    if not cast:
        return []
    if isinstance(cast, str):
        return [cast]
    return [str(name) for name in cast]


class Dialogue(_Model):
    """Lines of one scene. With `context={"cast": [...]}` every speaker must be one of the cast
    (case-insensitive) and is rewritten to the cast's spelling."""

    lines: list[DialogueLine] = Field(min_length=1, max_length=60)

    @field_validator("lines")
    @classmethod
    def _lines_make_sense(cls, lines: list[DialogueLine], info: ValidationInfo) -> list[DialogueLine]:
        cast = _cast_from(info.context)
        if not cast:
            return lines
        spelling = {name_key(name): name.strip() for name in cast}
        outsiders = sorted({line.speaker for line in lines if name_key(line.speaker) not in spelling})
        if outsiders:
            raise ValueError(
                f"speaker(s) {', '.join(map(repr, outsiders))} are not in this scene's cast; "
                f"every speaker must be one of: {', '.join(spelling.values())}"
            )
        return [line.model_copy(update={"speaker": spelling[name_key(line.speaker)]}) for line in lines]


class CriterionScore(_Model):
    criterion: Criterion
    score: Rating
    rationale: Text

    @field_validator("criterion", mode="before")
    @classmethod
    def _lower_case(cls, value: Any) -> Any:
        return value.strip().casefold() if isinstance(value, str) else value


class Evaluation(_Model):
    scores: list[CriterionScore] = Field(
        min_length=len(EVALUATION_CRITERIA), max_length=len(EVALUATION_CRITERIA)
    )
    overall: Rating
    summary: Text
    # Set by code, never asked of the model: whether the scores can be read as a verdict.
    reliable: bool = True
    notes: list[str] = Field(default_factory=list)

    @field_validator("scores")
    @classmethod
    def _each_criterion_once(cls, scores: list[CriterionScore]) -> list[CriterionScore]:
        counts = Counter(s.criterion for s in scores)
        twice = [c for c, n in counts.items() if n > 1]
        missing = [c for c in EVALUATION_CRITERIA if c not in counts]
        if twice or missing:
            problems = []
            if missing:
                problems.append(f"missing: {', '.join(missing)}")
            if twice:
                problems.append(f"scored more than once: {', '.join(twice)}")
            raise ValueError(
                f"score each criterion exactly once ({', '.join(EVALUATION_CRITERIA)}); {'; '.join(problems)}"
            )
        return scores

    @model_validator(mode="after")
    def _overall_fits_the_scores(self) -> Evaluation:
        low = min(s.score for s in self.scores)
        high = max(s.score for s in self.scores)
        if not low - 1 <= self.overall <= high + 1:
            raise ValueError(
                f"overall {self.overall} contradicts the criterion scores ({low} to {high}); "
                "give an overall score in line with them"
            )
        # Not rejected (a re-ask rarely changes them, and a story must not fail for its review):
        # marked, so that no one reads the scores as a verdict.
        copied = first_similar([s.rationale for s in self.scores])
        marks = [ONE_SCORE_NOTE] if low == high else []
        if copied:
            first, again = (self.scores[i].criterion for i in copied)
            marks.append(f"the rationales for {first} and {again} are the same sentence: {COPIED_NOTE}")
        for mark in marks:
            if mark not in self.notes:
                self.reliable = False
                self.notes.append(mark)
        return self


class Suggestion(_Model):
    target: Label = Field(description="the beat, scene or character to change")
    problem: Text
    change: Text


class Enhancement(_Model):
    suggestions: list[Suggestion] = Field(min_length=1, max_length=10)
    summary: Text


MAX_CHAPTERS = 24  # a long story's chapters: the beats of its plot (PlotStructure's maximum)
MAX_SCENES_PER_CHAPTER = 10


MAX_INTRODUCED = 2  # new people a chapter may bring into the bible


class ChapterPlan(_Model):
    """What a model is asked of a chapter: its scenes' beats, in story order (one scene each)."""

    beats: list[PlotBeat] = Field(min_length=1, max_length=MAX_SCENES_PER_CHAPTER)


class Chapter(ChapterPlan):
    """A chapter of a long story. Its title, goal and tension are the plot beat it realises (the
    story's outline); its characters are the bible's people its plan names; its beats are its scenes."""

    title: Label
    goal: Text = Field(description="what this chapter must do for the story")
    tension: Rating = Field(description="1 (calm) to 10 (peak)")
    characters: list[PersonName] = Field(default_factory=list, max_length=12)
    introduces: list[BibleCharacter] = Field(
        default_factory=list,
        max_length=MAX_INTRODUCED,
        description="people its plan brings into the story who are not in the bible yet (they join it)",
    )


class StoryScene(_Model):
    scene: Scene
    dialogue: Dialogue
    prose: str = Field(default="", description="the scene as prose: its stage-1 draft, cleaned")

    @model_validator(mode="after")
    def _speakers_in_scene(self) -> StoryScene:
        cast = {name_key(c) for c in self.scene.characters}
        outsiders = sorted({ln.speaker for ln in self.dialogue.lines if name_key(ln.speaker) not in cast})
        if outsiders:
            raise ValueError(
                f"speaker(s) {', '.join(map(repr, outsiders))} are not characters of scene "
                f"{self.scene.title!r} ({', '.join(self.scene.characters)})"
            )
        return self


class Story(_Model):
    premise: Premise
    plot: PlotStructure
    bible: StoryBible | None = None  # stories written before the bible have none
    scenes: list[StoryScene] = Field(min_length=1, max_length=MAX_CHAPTERS * MAX_SCENES_PER_CHAPTER)
    # A long story's chapters, in order: chapter i holds the next len(beats) scenes. Empty: no chapters.
    chapters: list[Chapter] = Field(default_factory=list, max_length=MAX_CHAPTERS)
    # The story is finished before these: when one cannot be made valid it is None, and `gaps`
    # says why (part -> reason), so a failed evaluation never costs a finished story.
    evaluation: Evaluation | None = None
    enhancement: Enhancement | None = None
    gaps: dict[str, str] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _chapters_hold_the_scenes(self) -> Story:
        held = sum(len(chapter.beats) for chapter in self.chapters)
        if self.chapters and held != len(self.scenes):
            raise ValueError(f"the chapters hold {held} scenes, but the story has {len(self.scenes)}")
        return self

    def chapter_scenes(self) -> list[tuple[Chapter | None, list[StoryScene]]]:
        """The scenes chapter by chapter; a story without chapters is one group under None."""
        if not self.chapters:
            return [(None, list(self.scenes))]
        groups: list[tuple[Chapter | None, list[StoryScene]]] = []
        start = 0
        for chapter in self.chapters:
            groups.append((chapter, list(self.scenes[start : start + len(chapter.beats)])))
            start += len(chapter.beats)
        return groups

    @model_validator(mode="before")
    @classmethod
    def _untitled_old_files(cls, data: Any) -> Any:
        """story.json files written before a title was required load as "Untitled"."""
        if isinstance(data, dict) and isinstance(data.get("plot"), dict) and not data["plot"].get("title"):
            data = {**data, "plot": {**data["plot"], "title": UNTITLED}}
        return data


__all__ = [
    "EVALUATION_CRITERIA",
    "MAX_CHAPTERS",
    "MAX_SCENES_PER_CHAPTER",
    "Chapter",
    "ChapterPlan",
    "CriterionScore",
    "Dialogue",
    "DialogueLine",
    "Enhancement",
    "Evaluation",
    "Label",
    "Name",
    "PersonName",
    "PlotBeat",
    "PlotStructure",
    "Scene",
    "Speech",
    "Story",
    "StoryScene",
    "Suggestion",
    "Text",
    "name_key",
    "word_key",
]
