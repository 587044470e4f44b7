"""What a step is: one object that knows how it is made.

A step has a name (its templates are `<name>_freeform.poml` and `<name>_structuring.poml`, its
provider route `narrative.providers.<name>`), a schema (`model`), the steps it is made from
(`needs`), how it gathers its inputs from a run (`gather`), how its draft is asked and checked
(`draft`), how the draft becomes its object for the profile of the route that answers
(`structure`: whole, or in parts for a tiny model), and what stands in for it when no model
makes it (`fallback`, or `optional`: the story is kept with that part missing). Its seeds come
from `seeds.py` by its key ("scene.2"), and `StoryRun` checkpoints both of its stages.

A step made by code rather than a model (`by_code`) has a `make` instead of the two stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel

from ...bible import StoryBible
from ...schemas import Chapter, Evaluation, PlotStructure, Scene, StoryScene

if TYPE_CHECKING:
    from ..twostage import StepMeta, TwoStage

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Inputs:
    """Everything a step may be made from; each step reads its own."""

    premise: str = ""
    beats: int | None = None  # the plot: how many beats are asked for (None: the default range)
    plot: PlotStructure | None = None
    bible: StoryBible | None = None
    beat: int = 0  # a scene: the plot beat it realises (in a long story: its chapter's beat)
    number: tuple[int, int] = (1, 1)  # a scene, a chapter: (this one, of total)
    chapter: Chapter | None = None  # a scene of a long story: its chapter; a chapter: the one before
    chapter_number: tuple[int, int] = (0, 0)  # a scene of a long story: (its chapter, of total)
    revision: tuple[str, str] | None = None  # a scene rewritten: (its earlier prose, the changes)
    scene: Scene | None = None  # a dialogue: its scene
    scene_draft: str = ""  # a dialogue: its scene's stage-1 draft (its conversation may go on)
    previous: str = ""  # a dialogue: the scenes before it
    scenes: tuple[StoryScene, ...] = ()  # evaluation, enhancement: the story's scenes
    evaluation: Evaluation | None = None  # the enhancement: the evaluation it works from


class RunView(Protocol):
    """What a step may read of the run it is part of."""

    premise: str

    def value(self, key: str) -> Any:
        """The finished step `key` ("plot", "scene.2") as its model."""

    def made(self, key: str) -> bool:
        """Whether step `key` is finished."""

    def draft_of(self, key: str) -> str:
        """The stage-1 draft step `key` ("scene.2") was made from ("" when it had none)."""

    def wanted_scenes(self) -> int | None:
        """How many scenes the run was asked for (None: one per beat)."""

    def revision_of(self, index: int) -> tuple[str, str] | None:
        """A revised scene's earlier prose and the changes to make; None when it is not rewritten."""

    def scene_count(self) -> int:
        """How many scenes the story has (known once the plot is)."""

    def beat_of(self, index: int) -> int:
        """The plot beat scene `index` realises (in a long story: the beat of its chapter)."""

    def chapter_count(self) -> int | None:
        """A long story's chapters (None: a story without chapters)."""

    def scenes_per_chapter(self) -> int:
        """A long story's scenes in each chapter."""

    def chapter_of(self, index: int) -> int | None:
        """The chapter scene `index` is in (None: a story without chapters)."""

    def bible_at(self, chapter: int | None) -> StoryBible:
        """The bible as it stands after chapter `chapter` (grown by the people chapters 0..`chapter`
        brought in); the story's bible for None or a story without chapters."""

    def outline_beat_of(self, chapter: int) -> int:
        """The plot beat (of the story's outline) chapter `chapter` realises."""

    def story_scenes(self) -> list[StoryScene]:
        """The story's scenes, each with its dialogue and prose (the revision's choice when revising)."""


class Step(Generic[M]):
    """One step of the pipeline (see the module docstring)."""

    name: ClassVar[str]
    model: ClassVar[type[BaseModel]]
    # The context variables (and their types) of its templates, `<name>_freeform` and
    # `<name>_structuring` (prompts/); `storyengine templates check` holds the .poml files to it.
    contract: ClassVar[dict[str, dict[str, type]]] = {}
    per_scene: ClassVar[bool] = False  # one instance per scene ("scene.0", "scene.1", ...)
    per_chapter: ClassVar[bool] = False  # one instance per chapter of a long story ("chapter.0", ...)
    bounded: ClassVar[bool] = False  # runs under the run's scene concurrency limit
    optional: ClassVar[bool] = False  # when no valid object comes, the story is kept without it
    by_code: ClassVar[bool] = False  # made by code from other steps (no model call)

    def key(self, index: int | None = None) -> str:
        return self.name if index is None else f"{self.name}.{index}"

    def needs(self, index: int | None, run: RunView) -> list[str]:
        """The keys of the steps this instance is made from."""
        return []

    def applies(self, run: RunView) -> bool:
        """Whether the run has this step at all."""
        return True

    def gather(self, run: RunView, index: int | None) -> Inputs:
        """This instance's inputs, from the finished steps it needs."""
        return Inputs(premise=run.premise)

    async def draft(self, stages: TwoStage, x: Inputs, meta: StepMeta) -> str:
        raise NotImplementedError(f"step {self.name} has no draft")

    async def structure(self, stages: TwoStage, x: Inputs, draft: str, meta: StepMeta) -> M:
        raise NotImplementedError(f"step {self.name} has no structuring")

    async def make(self, run: Any) -> Any:
        """A step made by code: its value (`by_code`)."""
        raise NotImplementedError(f"step {self.name} is made by a model")

    fallback_made: ClassVar[str] = ""  # what `fallback` makes, as the gap says it ("a plain one ...")

    def fallback(self, x: Inputs, draft: str = "") -> M | None:
        """What stands in when no model makes a valid object (a gap, said so), from the inputs and the
        step's draft when it has one; None: the run fails."""
        return None

    def info(self, index: int | None, run: RunView) -> dict[str, Any]:
        """What the run's events say about this instance (e.g. scene 2 of 5)."""
        if index is None:
            return {}
        return {"index": index + 1, "total": run.scene_count()}
