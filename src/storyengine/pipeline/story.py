"""The component calls of a story: what each one sends and which schema it fills."""

from __future__ import annotations

import hashlib
from typing import Any

from ..bible import StoryBible, bible_text, premise_pronouns, pronoun_slips
from ..quality import cast_problems, draft_problems, draft_score
from ..schemas import (
    EVALUATION_CRITERIA,
    Dialogue,
    Enhancement,
    Evaluation,
    PlotStructure,
    Scene,
    StoryScene,
)
from ..structuring import decoding_schema
from ..text.rules import Context
from . import parts
from .twostage import StepMeta, TwoStage

DEFAULT_BEATS = (3, 8)  # accepted when the caller does not fix the number of scenes
BEATS_WANTED = 5
MIN_BEATS = 3  # PlotStructure's own minimum
DIALOGUE_LINES_IN_PARTS = 4


def beats_for(scenes: int | None) -> int | None:
    """How many beats to ask for: one per scene, but never fewer than a plot needs."""
    return None if scenes is None else max(MIN_BEATS, scenes)


def scene_beats(plot: PlotStructure, scenes: int | None) -> list[int]:
    """Which beat each scene realises: every beat, or `scenes` of them spread evenly."""
    total = len(plot.beats)
    if scenes is None or scenes >= total:
        return list(range(total))
    if scenes == 1:
        return [total // 2]
    return [round(i * (total - 1) / (scenes - 1)) for i in range(scenes)]


def call_seed(run_seed: int | None, *parts: object) -> int | None:
    """A distinct, reproducible seed per call, derived from the run's seed."""
    if run_seed is None:
        return None
    digest = hashlib.sha256(repr((run_seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def cast_of(plot: PlotStructure, bible: StoryBible | None) -> list[str]:
    """The story's cast: the bible's people when there is a bible, else the plot's characters."""
    return bible.names if bible is not None else list(plot.characters)


def outline(plot: PlotStructure, upto: int | None = None) -> str:
    beats = plot.beats if upto is None else plot.beats[:upto]
    return "\n".join(f"{i}. {b.name}: {b.purpose} (tension {b.tension}/10)" for i, b in enumerate(beats, 1))


def scene_text(scene: Scene) -> str:
    return f"{scene.title}. Setting: {scene.setting}. {scene.summary}"


def story_digest(plot: PlotStructure, scenes: list[StoryScene]) -> str:
    parts = [f"Plot ({plot.structure_type}):", outline(plot), "", "Scenes:"]
    for i, item in enumerate(scenes, 1):
        lines = " / ".join(f"{ln.speaker}: {ln.text}" for ln in item.dialogue.lines[:4])
        parts.append(f"{i}. {scene_text(item.scene)} Dialogue: {lines}")
    return "\n".join(parts)


def revision_targets(scenes: list[StoryScene], bible: StoryBible | None) -> list[str]:
    """What a suggestion may target so that a revision can apply it: each scene ("Scene 2: Its
    Title") and each person of the story (the bible's, else the scenes' casts)."""
    targets = [f"Scene {i}: {item.scene.title}"[:80] for i, item in enumerate(scenes, 1)]
    people = bible.names if bible is not None else [c for item in scenes for c in item.scene.characters]
    return targets + list(dict.fromkeys(people))


def evaluation_text(evaluation: Evaluation) -> str:
    scores = "; ".join(f"{s.criterion} {s.score}/10: {s.rationale}" for s in evaluation.scores)
    return f"Overall {evaluation.overall}/10. {evaluation.summary} {scores}"


class Components:
    """One method per component; each runs a freeform stage (or reuses a draft) and a structuring stage."""

    def __init__(self, stages: TwoStage) -> None:
        self.stages = stages

    async def plot_draft(self, premise: str, beats: int | None, meta: StepMeta, seed: int | None) -> str:
        wanted = beats_for(beats) or BEATS_WANTED
        context = {"premise": premise, "beats": wanted}

        def check(text: str) -> list[str]:  # a draft that names no beats is drawn again
            return draft_problems("plot", text, premise=premise, beats=wanted)

        return await self.stages.freeform("plot", context, meta, seed=seed, check=check)

    async def plot(self, premise: str, draft: str, beats: int | None, meta: StepMeta) -> PlotStructure:
        wanted = beats_for(beats)
        count = (wanted, wanted) if wanted else DEFAULT_BEATS
        schema = decoding_schema(PlotStructure, counts={"beats": count, "characters": (2, 5)})
        plan = parts.plot_parts(wanted or BEATS_WANTED)
        context: dict[str, Any] = {"premise": premise, "draft": draft, "beats": wanted or BEATS_WANTED}
        return await self.stages.structure("plot", context, PlotStructure, schema, meta, parts=(draft, plan))

    async def bible_draft(self, premise: str, plot: PlotStructure, meta: StepMeta, seed: int | None) -> str:
        cast = list(plot.characters)
        pronouns = premise_pronouns(premise) or ""
        context = {
            "premise": premise,
            "plot": outline(plot),
            "cast": ", ".join(cast),
            # Both or neither: the lead is named only in the sentence about the premise's pronouns.
            "lead": cast[0] if cast and pronouns else "",
            "pronouns": pronouns if cast else "",
        }
        return await self.stages.freeform("bible", context, meta, seed=seed)

    async def bible(self, premise: str, plot: PlotStructure, draft: str, meta: StepMeta) -> StoryBible:
        cast = list(plot.characters)
        pronouns = premise_pronouns(premise)
        count = (max(1, len(cast)), max(1, len(cast)) + 2)
        schema = decoding_schema(StoryBible, counts={"characters": count})
        plan = parts.bible_parts(cast, pronouns)
        lead = cast[0] if cast and pronouns else ""
        context = {
            "draft": draft,
            "cast": ", ".join(cast),
            "lead": lead,
            "pronouns": pronouns if lead else "",
        }
        return await self.stages.structure(
            "bible",
            context,
            StoryBible,
            schema,
            meta,
            parts=(draft, plan),
            validation_context={"cast": cast, "pronouns": pronouns},
            # a setting with no words (SmolLM2 wrote ";;;;…＆＆＆" in two of four stories) becomes
            # the premise, as in a plain bible
            review=Context(fallbacks=(("setting", " ".join(premise.split())[:240]),)),
        )

    async def scene_draft(
        self,
        premise: str,
        plot: PlotStructure,
        index: int,
        number: tuple[int, int],
        meta: StepMeta,
        seed: int | None,
        bible: StoryBible | None = None,
        revision: tuple[str, str] | None = None,
    ) -> str:
        """Stage 1 of the scene that realises beat `index`; `number` is (this scene, of total).
        `revision` is (the scene's earlier prose, the changes to make) when the scene is rewritten."""
        beat = plot.beats[index]
        earlier, changes = revision or ("", "")
        context = {
            "premise": premise,
            "plot": outline(plot),
            "beat": f"{beat.name}: {beat.purpose} (tension {beat.tension}/10)",
            "previous": outline(plot, index),
            "cast": ", ".join(cast_of(plot, bible)),
            "bible": bible_text(bible) if bible else "",
            "number": number[0],
            "total": number[1],
            "earlier": earlier,
            "changes": changes,
        }
        cast = cast_of(plot, bible)
        beat_text = f"{beat.name}: {beat.purpose}"

        async def check(text: str) -> list[str]:
            """A draft that loops, is one line, ignores its beat and the premise, names people the
            story's cast (its bible) lacks, gives one of them the other pronouns, or (asked of a
            model whose profile checks facts) contradicts the bible's facts, is drawn again."""
            problems = draft_problems("scene", text, premise=premise, beat=beat_text)
            problems += cast_problems(cast, text, known=f"{premise} {plot.title}")
            problems += pronoun_slips(text, bible) if bible else []
            if bible and bible.facts and not problems:  # only a draft the code passes is worth asking
                problems += await self.stages.check_facts("scene", bible.facts, text, meta)
            return problems

        def score(text: str, problems: list[str]) -> float:
            return draft_score(text, premise=premise, beat=beat_text, problems=problems)

        return await self.stages.freeform(
            "scene", context, meta, seed=seed, check=check, drafts=self.scene_drafts(), score=score
        )

    def scene_drafts(self) -> int:
        """Drafts per scene: `narrative.scene_drafts`, else the scene route's profile default."""
        configured = self.stages.settings.narrative.scene_drafts
        if configured is not None:
            return configured
        return self.stages.router.routes("scene")[0].profile.scene_drafts

    async def scene(
        self, plot: PlotStructure, index: int, draft: str, meta: StepMeta, bible: StoryBible | None = None
    ) -> Scene:
        beat = plot.beats[index]
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
        scene = await self.stages.structure(
            "scene", context, Scene, schema, meta, parts=(notes, plan), review=review
        )
        return scene if scene.beat else scene.model_copy(update={"beat": beat.name})

    async def dialogue_draft(
        self, scene: Scene, previous: str, meta: StepMeta, seed: int | None, bible: StoryBible | None = None
    ) -> str:
        context = {
            "scene": scene_text(scene),
            "cast": ", ".join(scene.characters),
            "bible": bible_text(bible) if bible else "",
            "previous": previous,
        }

        def check(text: str) -> list[str]:  # a line that gives someone the other pronouns
            return pronoun_slips(text, bible) if bible else []

        return await self.stages.freeform("dialogue", context, meta, seed=seed, check=check)

    async def dialogue(self, scene: Scene, draft: str, meta: StepMeta) -> Dialogue:
        cast = list(scene.characters)
        schema = decoding_schema(Dialogue, enums={"speaker": cast}, counts={"lines": (2, 10)})
        plan = parts.dialogue_parts(cast, lines=DIALOGUE_LINES_IN_PARTS, draft=draft)
        context = {"draft": draft, "cast": ", ".join(cast)}
        return await self.stages.structure(
            "dialogue",
            context,
            Dialogue,
            schema,
            meta,
            parts=(draft, plan),
            validation_context={"cast": cast},
            review=Context(cast=tuple(cast)),
        )

    async def evaluation_draft(self, premise: str, story: str, meta: StepMeta, seed: int | None) -> str:
        return await self.stages.freeform("evaluation", {"premise": premise, "story": story}, meta, seed=seed)

    async def evaluation(self, draft: str, meta: StepMeta) -> Evaluation:
        criteria = list(EVALUATION_CRITERIA)
        schema = decoding_schema(
            Evaluation, enums={"criterion": criteria}, counts={"scores": (len(criteria), len(criteria))}
        )
        context = {"draft": draft, "criteria": ", ".join(criteria)}
        return await self.stages.structure(
            "evaluation", context, Evaluation, schema, meta, parts=(draft, parts.evaluation_parts())
        )

    async def enhancement_draft(
        self, premise: str, story: str, evaluation: Evaluation, meta: StepMeta, seed: int | None
    ) -> str:
        context = {"premise": premise, "story": story, "evaluation": evaluation_text(evaluation)}
        return await self.stages.freeform("enhancement", context, meta, seed=seed)

    async def enhancement(self, draft: str, meta: StepMeta, targets: list[str] | None = None) -> Enhancement:
        """The suggestions, each aimed at one of `targets` (`revision_targets`) when given."""
        enums = {"target": targets} if targets else {}
        schema = decoding_schema(Enhancement, counts={"suggestions": (1, 4)}, enums=enums)
        return await self.stages.structure(
            "enhancement",
            {"draft": draft},
            Enhancement,
            schema,
            meta,
            parts=(draft, parts.enhancement_parts(targets=targets)),
        )
