"""The evaluation: a score and rationale per criterion, and a summary (optional: a gap if missing)."""

from __future__ import annotations

from typing import ClassVar

from ...schemas import EVALUATION_CRITERIA, Evaluation
from ...structuring import decoding_schema
from .. import parts
from ..story import story_digest
from ..twostage import StepMeta, TwoStage
from .base import Inputs, RunView, Step


class EvaluationStep(Step[Evaluation]):
    name = "evaluation"
    model = Evaluation
    optional = True
    contract: ClassVar[dict[str, dict[str, type]]] = {
        "evaluation_freeform": {"premise": str, "story": str},
        "evaluation_structuring": {"draft": str, "criteria": str, "schema": str},
    }

    def needs(self, index: int | None, run: RunView) -> list[str]:
        return ["story"]

    def gather(self, run: RunView, index: int | None) -> Inputs:
        return Inputs(premise=run.premise, plot=run.value("plot"), scenes=tuple(run.story_scenes()))

    async def draft(self, stages: TwoStage, x: Inputs, meta: StepMeta) -> str:
        assert x.plot is not None
        context = {"premise": x.premise, "story": story_digest(x.plot, list(x.scenes))}
        return await stages.freeform("evaluation", context, meta)

    async def structure(self, stages: TwoStage, x: Inputs, draft: str, meta: StepMeta) -> Evaluation:
        criteria = list(EVALUATION_CRITERIA)
        schema = decoding_schema(
            Evaluation, enums={"criterion": criteria}, counts={"scores": (len(criteria), len(criteria))}
        )
        context = {"draft": draft, "criteria": ", ".join(criteria)}
        return await stages.structure(
            "evaluation", context, Evaluation, schema, meta, parts=(draft, parts.evaluation_parts())
        )
