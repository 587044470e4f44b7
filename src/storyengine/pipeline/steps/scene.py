"""A scene: the one that realises a beat of the plot (title, setting, characters, summary)."""

from __future__ import annotations

from typing import Any, ClassVar

from ...bible import bible_text, pronoun_slips
from ...quality import cast_problems, draft_problems, draft_score
from ...schemas import PlotBeat, Scene
from ...structuring import decoding_schema
from ...text.rules import Context
from .. import parts
from ..story import cast_of, outline
from ..twostage import StepMeta, TwoStage
from .base import Inputs, RunView, Step
from .chapter import beat_line, chapter_text, outline_of


class SceneStep(Step[Scene]):
    name = "scene"
    model = Scene
    per_scene = True
    bounded = True
    contract: ClassVar[dict[str, dict[str, type]]] = {
        "scene_freeform": {
            "premise": str,
            "plot": str,
            "beat": str,
            "previous": str,
            "cast": str,
            "bible": str,
            "number": int,
            "total": int,
            "earlier": str,
            "changes": str,
        },
        "scene_structuring": {"draft": str, "beat_name": str, "cast": str, "schema": str},
    }

    def needs(self, index: int | None, run: RunView) -> list[str]:
        assert index is not None
        chapter = run.chapter_of(index) if run.made("plot") else None
        return ["plot", "bible", *([f"chapter.{chapter}"] if chapter is not None else [])]

    def gather(self, run: RunView, index: int | None) -> Inputs:
        assert index is not None
        chapter = run.chapter_of(index)
        return Inputs(
            premise=run.premise,
            plot=run.value("plot"),
            bible=run.bible_at(chapter),  # with the people its chapter and those before brought in
            beat=run.beat_of(index),
            number=(index + 1, run.scene_count()),
            revision=run.revision_of(index),
            chapter=run.value(f"chapter.{chapter}") if chapter is not None else None,
            chapter_number=(chapter + 1, run.chapter_count() or 0) if chapter is not None else (0, 0),
        )

    def info(self, index: int | None, run: RunView) -> dict[str, Any]:
        chapter = run.chapter_of(index) if index is not None else None
        return {**super().info(index, run), **({"chapter": chapter + 1} if chapter is not None else {})}

    async def draft(self, stages: TwoStage, x: Inputs, meta: StepMeta) -> str:
        """Stage 1 of the scene that realises beat `x.beat`; with `x.revision` (the scene's earlier
        prose, the changes to make) when the scene is rewritten."""
        plot, bible = x.plot, x.bible
        assert plot is not None
        beat, planned, previous = plan_of(x)
        earlier, changes = x.revision or ("", "")
        cast = cast_of(plot, bible)
        context = {
            "premise": x.premise,
            "plot": planned,
            "beat": f"{beat.name}: {beat.purpose} (tension {beat.tension}/10)",
            "previous": previous,
            "cast": ", ".join(cast),
            "bible": bible_text(bible) if bible else "",
            "number": x.number[0],
            "total": x.number[1],
            "earlier": earlier,
            "changes": changes,
        }
        beat_text = f"{beat.name}: {beat.purpose}"

        async def check(text: str) -> list[str]:
            """A draft that loops, is one line, ignores its beat and the premise, names people the
            story's cast (its bible) lacks, gives one of them the other pronouns, or (asked of a
            model whose profile checks facts) contradicts the bible's facts, is drawn again."""
            problems = draft_problems("scene", text, premise=x.premise, beat=beat_text)
            problems += cast_problems(cast, text, known=f"{x.premise} {plot.title}")
            problems += pronoun_slips(text, bible) if bible else []
            if bible and bible.facts and not problems:  # only a draft the code passes is worth asking
                problems += await stages.check_facts("scene", bible.facts, text, meta)
            return problems

        def score(text: str, problems: list[str]) -> float:
            return draft_score(text, premise=x.premise, beat=beat_text, problems=problems)

        drafts = self.drafts(stages)
        text = await stages.freeform("scene", context, meta, check=check, drafts=drafts, score=score)
        stages.keep_conversation("scene", text)  # its dialogue may go on with it
        return text

    @staticmethod
    def drafts(stages: TwoStage) -> int:
        """Drafts per scene: `narrative.scene_drafts`, else the scene route's profile default."""
        configured = stages.settings.narrative.scene_drafts
        if configured is not None:
            return configured
        return stages.router.routes("scene")[0].profile.scene_drafts

    async def structure(self, stages: TwoStage, x: Inputs, draft: str, meta: StepMeta) -> Scene:
        plot, bible = x.plot, x.bible
        assert plot is not None
        beat = plan_of(x)[0]
        cast = cast_of(plot, bible)
        enums = {"characters": cast} if cast else {}
        schema = decoding_schema(
            Scene, enums=enums, counts={"characters": (1, min(4, max(1, len(cast) or 4)))}
        )
        notes = f"Plot beat: {beat.name}: {beat.purpose}\n{draft}"
        plan = parts.scene_parts(cast)
        context = {"draft": draft, "beat_name": beat.name, "cast": ", ".join(cast)}
        # A title or setting must not copy the beat's purpose (the prompt's instruction); a title that
        # does is repaired to the beat's name.
        review = Context(cast=tuple(cast), instructions=(beat.purpose,), beat_name=beat.name)
        scene = await stages.structure(
            "scene", context, Scene, schema, meta, parts=(notes, plan), review=review
        )
        return scene if scene.beat else scene.model_copy(update={"beat": beat.name})


OUTLINE_AROUND = 1  # a long story's scene is told the outline's chapters this far either side of its own


def plan_of(x: Inputs) -> tuple[PlotBeat, str, str]:
    """The beat scene `x` realises, the plan it is told (the plot; in a long story the outline's
    chapters around its own, then its chapter's scenes) and what came before it (the beats before;
    in a long story the scenes of its own chapter before it). A long story's scene prompt is the
    same size in chapter 2 of 3 as in chapter 20 of 24: bounded, whatever the story's length."""
    assert x.plot is not None
    if x.chapter is None:
        return x.plot.beats[x.beat], outline(x.plot), outline(x.plot, x.beat)
    number, total = x.chapter_number
    here = chapter_text(x.chapter, number)
    beats = x.plot.beats
    if len(beats) == total:  # a beat per chapter: those around this one
        shown = range(max(0, number - 1 - OUTLINE_AROUND), min(total, number + OUTLINE_AROUND))
    else:  # fewer chapters than a plot's 3 beats: all of it
        shown = range(len(beats))
    around = "\n".join(f"{i + 1}. {beat_line(beats[i])}" for i in shown)
    planned = f"Chapters (around this one):\n{around}\n\nThis is chapter {number} of {total}. {here}"
    before = outline_of(x.chapter.beats[: x.beat])
    previous = f"Earlier in chapter {number}:\n{before}" if before else ""
    return x.chapter.beats[x.beat], planned, previous
