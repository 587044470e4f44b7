"""The story bible: the people (name, role, description, pronouns), the setting and the facts."""

from __future__ import annotations

from typing import ClassVar

from ...bible import StoryBible, plain_bible, premise_pronouns
from ...structuring import decoding_schema
from ...text.rules import Context
from .. import parts
from ..story import outline
from ..twostage import StepMeta, TwoStage
from .base import Inputs, RunView, Step


class BibleStep(Step[StoryBible]):
    name = "bible"
    model = StoryBible
    contract: ClassVar[dict[str, dict[str, type]]] = {
        "bible_freeform": {"premise": str, "plot": str, "cast": str, "lead": str, "pronouns": str},
        "bible_structuring": {"draft": str, "cast": str, "lead": str, "pronouns": str, "schema": str},
    }

    def needs(self, index: int | None, run: RunView) -> list[str]:
        return ["plot"]

    def gather(self, run: RunView, index: int | None) -> Inputs:
        return Inputs(premise=run.premise, plot=run.value("plot"))

    async def draft(self, stages: TwoStage, x: Inputs, meta: StepMeta) -> str:
        assert x.plot is not None
        cast = list(x.plot.characters)
        pronouns = premise_pronouns(x.premise) or ""
        context = {
            "premise": x.premise,
            "plot": outline(x.plot),
            "cast": ", ".join(cast),
            # Both or neither: the lead is named only in the sentence about the premise's pronouns.
            "lead": cast[0] if cast and pronouns else "",
            "pronouns": pronouns if cast else "",
        }
        return await stages.freeform("bible", context, meta)

    async def structure(self, stages: TwoStage, x: Inputs, draft: str, meta: StepMeta) -> StoryBible:
        assert x.plot is not None
        cast = list(x.plot.characters)
        pronouns = premise_pronouns(x.premise)
        count = (max(1, len(cast)), max(1, len(cast)) + 2)
        schema = decoding_schema(StoryBible, counts={"characters": count})
        plan = parts.bible_parts(cast, pronouns, premise=x.premise)
        lead = cast[0] if cast and pronouns else ""
        context = {
            "draft": draft,
            "cast": ", ".join(cast),
            "lead": lead,
            "pronouns": pronouns if lead else "",
        }
        return await stages.structure(
            "bible",
            context,
            StoryBible,
            schema,
            meta,
            parts=(draft, plan),
            validation_context={"cast": cast, "pronouns": pronouns},
            # a setting with no words (SmolLM2 wrote ";;;;…＆＆＆" in two of four stories) becomes
            # the premise, as in a plain bible
            review=Context(fallbacks=(("setting", " ".join(x.premise.split())[:240]),)),
        )

    fallback_made = "a plain one was made from the plot"

    def fallback(self, x: Inputs, draft: str = "") -> StoryBible:
        """A plain bible made by code from the plot, so that the story is still written."""
        assert x.plot is not None
        return plain_bible(x.premise, list(x.plot.characters))
