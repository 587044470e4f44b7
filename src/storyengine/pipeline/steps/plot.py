"""The plot: the story's beats (name, purpose, tension 1-10), its title and characters."""

from __future__ import annotations

from typing import Any, ClassVar

from ...quality import draft_problems
from ...schemas import PlotStructure
from ...structuring import decoding_schema
from .. import parts
from ..story import BEATS_WANTED, DEFAULT_BEATS, beats_for
from ..twostage import StepMeta, TwoStage
from .base import Inputs, RunView, Step


class PlotStep(Step[PlotStructure]):
    name = "plot"
    model = PlotStructure
    contract: ClassVar[dict[str, dict[str, type]]] = {
        "plot_freeform": {"premise": str, "beats": int},
        "plot_structuring": {"premise": str, "draft": str, "beats": int, "schema": str},
    }

    def gather(self, run: RunView, index: int | None) -> Inputs:
        # A long story's plot is its outline: a beat per chapter.
        return Inputs(premise=run.premise, beats=run.chapter_count() or run.wanted_scenes())

    async def draft(self, stages: TwoStage, x: Inputs, meta: StepMeta) -> str:
        wanted = beats_for(x.beats) or BEATS_WANTED
        context = {"premise": x.premise, "beats": wanted}

        def check(text: str) -> list[str]:  # a draft that names no beats is drawn again
            return draft_problems("plot", text, premise=x.premise, beats=wanted)

        return await stages.freeform("plot", context, meta, check=check)

    async def structure(self, stages: TwoStage, x: Inputs, draft: str, meta: StepMeta) -> PlotStructure:
        wanted = beats_for(x.beats)
        count = (wanted, wanted) if wanted else DEFAULT_BEATS
        schema = decoding_schema(PlotStructure, counts={"beats": count, "characters": (2, 5)})
        plan = parts.plot_parts(wanted or BEATS_WANTED)
        context: dict[str, Any] = {"premise": x.premise, "draft": draft, "beats": wanted or BEATS_WANTED}
        return await stages.structure("plot", context, PlotStructure, schema, meta, parts=(draft, plan))
