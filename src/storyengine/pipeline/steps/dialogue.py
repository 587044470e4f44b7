"""A scene's dialogue: its lines, each a speaker of the scene's cast and what they say."""

from __future__ import annotations

from typing import ClassVar

from ...bible import bible_text, pronoun_slips
from ...schemas import Dialogue
from ...structuring import decoding_schema
from ...text.rules import Context
from .. import parts
from ..story import scene_text
from ..twostage import Continuation, StepMeta, TwoStage
from .base import Inputs, RunView, Step

DIALOGUE_LINES_IN_PARTS = 4
SCENES_BEFORE = 5  # what a dialogue is told of the story so far: the scenes just before it, at most


class DialogueStep(Step[Dialogue]):
    name = "dialogue"
    model = Dialogue
    per_scene = True
    bounded = True
    contract: ClassVar[dict[str, dict[str, type]]] = {
        "dialogue_freeform": {"scene": str, "cast": str, "bible": str, "previous": str},
        "dialogue_structuring": {"draft": str, "cast": str, "schema": str},
    }

    def needs(self, index: int | None, run: RunView) -> list[str]:
        """Its scene and the SCENES_BEFORE before it: a dialogue is told what happened just before
        (bounded, however long the story), and what it is told must not depend on timing (so
        reruns are deterministic)."""
        assert index is not None
        return ["bible", *(f"scene.{j}" for j in range(max(0, index - SCENES_BEFORE), index + 1))]

    def gather(self, run: RunView, index: int | None) -> Inputs:
        assert index is not None
        first = max(0, index - SCENES_BEFORE)
        earlier = [run.value(f"scene.{j}") for j in range(first, index + 1)]
        previous = "\n".join(f"{j}. {scene_text(s)}" for j, s in enumerate(earlier[:-1], first + 1))
        return Inputs(
            premise=run.premise,
            scene=earlier[-1],
            scene_draft=run.draft_of(f"scene.{index}"),
            previous=previous,
            bible=run.bible_at(run.chapter_of(index)),
        )

    async def draft(self, stages: TwoStage, x: Inputs, meta: StepMeta) -> str:
        """The dialogue's draft: from its own prompt (the scene's title, setting and summary, the
        bible, the scenes before), or, where the profile says so, as the next turn of the scene
        draft's conversation, which already holds the premise, plan, bible and the scene's prose
        (only the cast and the ask are new: the model reads the scene once, and sees its prose)."""
        scene, bible = x.scene, x.bible
        assert scene is not None
        cast = ", ".join(scene.characters)
        context = {
            "scene": scene_text(scene),
            "cast": cast,
            "bible": bible_text(bible) if bible else "",
            "previous": x.previous,
        }
        after = None
        if x.scene_draft:
            after = Continuation(
                "scene", x.scene_draft, {"scene": "", "cast": cast, "bible": "", "previous": ""}
            )

        def check(text: str) -> list[str]:  # a line that gives someone the other pronouns
            return pronoun_slips(text, bible) if bible else []

        return await stages.freeform("dialogue", context, meta, check=check, after=after)

    async def structure(self, stages: TwoStage, x: Inputs, draft: str, meta: StepMeta) -> Dialogue:
        assert x.scene is not None
        cast = list(x.scene.characters)
        schema = decoding_schema(Dialogue, enums={"speaker": cast}, counts={"lines": (2, 10)})
        plan = parts.dialogue_parts(cast, lines=DIALOGUE_LINES_IN_PARTS, draft=draft)
        context = {"draft": draft, "cast": ", ".join(cast)}
        return await stages.structure(
            "dialogue",
            context,
            Dialogue,
            schema,
            meta,
            parts=(draft, plan),
            validation_context={"cast": cast},
            review=Context(cast=tuple(cast)),
        )
