"""The enhancement: suggestions, each aimed at a scene or a person of the story (optional)."""

from __future__ import annotations

from typing import ClassVar

from ...schemas import Enhancement
from ...structuring import decoding_schema
from .. import parts
from ..story import evaluation_text, revision_targets, story_digest
from ..twostage import StepMeta, TwoStage
from .base import Inputs, RunView, Step


class EnhancementStep(Step[Enhancement]):
    name = "enhancement"
    model = Enhancement
    optional = True
    contract: ClassVar[dict[str, dict[str, type]]] = {
        "enhancement_freeform": {"premise": str, "story": str, "evaluation": str},
        "enhancement_structuring": {"draft": str, "schema": str},
    }

    def needs(self, index: int | None, run: RunView) -> list[str]:
        return ["story", "evaluation"]

    def gather(self, run: RunView, index: int | None) -> Inputs:
        return Inputs(
            premise=run.premise,
            plot=run.value("plot"),
            bible=run.value("bible"),
            scenes=tuple(run.story_scenes()),
            evaluation=run.value("evaluation"),
        )

    async def draft(self, stages: TwoStage, x: Inputs, meta: StepMeta) -> str:
        assert x.plot is not None and x.evaluation is not None
        context = {
            "premise": x.premise,
            "story": story_digest(x.plot, list(x.scenes)),
            "evaluation": evaluation_text(x.evaluation),
        }
        return await stages.freeform("enhancement", context, meta)

    async def structure(self, stages: TwoStage, x: Inputs, draft: str, meta: StepMeta) -> Enhancement:
        """The suggestions, each aimed at one of the story's scenes or people (`revision_targets`)."""
        targets = revision_targets(list(x.scenes), x.bible) if x.scenes else []
        enums = {"target": targets} if targets else {}
        schema = decoding_schema(Enhancement, counts={"suggestions": (1, 4)}, enums=enums)
        return await stages.structure(
            "enhancement",
            {"draft": draft},
            Enhancement,
            schema,
            meta,
            parts=(draft, parts.enhancement_parts(targets=targets or None)),
        )
