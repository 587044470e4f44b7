"""One run of the pipeline over a checkpointed state: ordering, bounded concurrency, checkpoints.

The plot first; then every scene (stage 1 and its own stage 2) under a semaphore of
`narrative.concurrency.scenes`; dialogue i starts once scenes 1..i are structured (it is told
what happened before, and what it is told must not depend on timing, so reruns are
deterministic); evaluation and enhancement last. Each finished stage is checkpointed at once
(off the event loop); a step the state already has is not made again, which is how `--resume`
and steering work.

A resume never repeats a failure identically: each resume of a failed run is a new round whose
seeds are derived from the run's seed and the round (recorded in every step's metadata), and the
draft of a structuring step that failed is drawn again, so the failed step is asked differently.
When its component's chain has several providers, the failed step also starts from the next one
(`header["start_provider"]`, one further on each resume that fails there again, wrapping), the
others after it as fallbacks; its metadata names the provider asked first.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from pydantic import BaseModel, ValidationError

from ..bible import StoryBible, plain_bible
from ..config import COMPONENTS
from ..drafts import reader_prose
from ..errors import InputError, RunFailed, StoryEngineError, StructuringError
from ..prompts.render import warm as warm_templates
from ..quality import mark_evaluation, quality_report, story_measures
from ..routing.instrument import RunRecorder
from ..schemas import Dialogue, Enhancement, Evaluation, PlotStructure, Scene, Story, StoryScene
from .checkpoint import RunState, resume_command
from .revision import Revision, keep_better
from .story import call_seed, revision_targets, scene_beats, scene_text, story_digest
from .twostage import StepMeta

if TYPE_CHECKING:
    from .engine import StoryEngine

M = TypeVar("M", bound=BaseModel)
Event = dict[str, Any]
OnEvent = Callable[[Event], None]


class StoryRun:
    """One run of the pipeline over a checkpointed state."""

    def __init__(self, engine: StoryEngine, state: RunState, on_event: OnEvent | None) -> None:
        self.engine = engine
        self.c = engine.components
        self.state = state
        self.on_event = on_event
        self.premise: str = state.header["premise"]
        self.seed: int | None = state.header.get("seed")
        self.round = int(state.header.get("round", 0))  # how many times a failed run was resumed
        self.gaps: dict[str, str] = {}  # optional parts that could not be made, and why
        self.started = time.perf_counter()
        self.tokens = 0
        self.prose_findings: dict[int, list[dict[str, str]]] = {}  # scene -> what its prose lost
        self.semaphore = asyncio.Semaphore(engine.settings.narrative.concurrency.scenes)
        steered = state.header.get("steered") or {}
        self.revision: Revision | None = None  # a revision: the changes per scene, the earlier scenes
        self.earlier: dict[int, StoryScene] = {}
        if steered.get("operation") == "revise":
            self.revision = Revision.from_dict(steered["changes"]["revision"])
            earlier = steered["changes"]["earlier"].items()
            self.earlier = {int(i): StoryScene.model_validate(value) for i, value in earlier}

    def _checkpointed(self, name: str, value: Any, model: type[M]) -> M:
        """A finished step from the checkpoint, checked by today's rules."""
        try:
            return model.model_validate(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise InputError(
                f"run {self.state.run_id}: its checkpointed step {name} no longer passes this version's "
                f"rules ({'.'.join(map(str, first['loc']))}: {first['msg']}); start a new run for this "
                "premise (steps made after it were built on it, so it is not remade alone)"
            ) from None

    def seed_for(self, *parts: object) -> int | None:
        """The seed of one call: from the run's seed, and from the round after a resume."""
        return call_seed(self.seed, *parts, *(("round", self.round) if self.round else ()))

    def start_of(self, name: str, component: str) -> int:
        """Where step `name` starts its component's chain: 0, or later when it failed before."""
        chain = self.engine.settings.narrative.providers.chain(component)
        start = self.state.header.get("start_provider", {}).get(step_key(name), 0)
        return int(start) % len(chain) if chain else 0

    def emit(self, event: str, **fields: Any) -> None:
        if self.on_event is not None:
            elapsed = round(time.perf_counter() - self.started, 3)
            self.on_event(
                {
                    "event": event,
                    "run_id": self.state.run_id,
                    "tokens": self.tokens,
                    "elapsed": elapsed,
                    **fields,
                }
            )

    async def step(
        self,
        name: str,
        component: str,
        produce: Callable[[StepMeta], Awaitable[Any]],
        model: type[M] | None = None,
        **info: Any,
    ) -> Any:
        """Run one stage unless the checkpoint has it; checkpoint it the moment it finishes."""
        done = self.state.get(name)
        if done is not None:
            return self._checkpointed(name, done, model) if model else done
        stage = "freeform" if name.endswith(".draft") else "structuring"
        self.emit("step_started", step=component, stage=stage, **info)
        meta = StepMeta(component, round=self.round, start=self.start_of(name, component))
        try:
            value = await produce(meta)
        except BaseException as exc:
            if getattr(exc, "failed_step", None) is None:
                exc.failed_step = name  # type: ignore[attr-defined]  # where it happened, first
            raise
        self.tokens += meta.tokens["prompt"] + meta.tokens["completion"]
        dumped = value.model_dump(mode="json") if model else value
        await asyncio.to_thread(self.state.put, name, dumped, meta.as_dict())
        self.emit("step_done", step=component, stage=stage, name=name, value=dumped, **info)
        return value

    async def two_stages(
        self,
        name: str,
        component: str,
        draft: Callable[[StepMeta], Awaitable[str]],
        structure: Callable[[str, StepMeta], Awaitable[M]],
        model: type[M],
        **info: Any,
    ) -> M:
        """Step `name` (and its draft before it); a state that has the value needs no draft."""
        done = self.state.get(name)
        if done is not None:
            return self._checkpointed(name, done, model)
        text = await self.step(f"{name}.draft", component, draft, **info)
        return cast(M, await self.step(name, component, lambda m: structure(text, m), model, **info))

    async def execute(self) -> Story:
        self.emit("run_started", premise=self.premise)
        for name in self.state.header.get("edited", []):  # a steering edit, not made by a model
            value = self.state.get(name)
            self.emit("step_done", step=name.split(".")[0], stage="edited", name=name, value=value)
        # The first render of a template starts Node (~1 s each): do them off the event loop.
        await asyncio.to_thread(warm_templates)
        runlog = self.engine.runlog
        recorder = RunRecorder(self.state.run_id)
        if runlog is not None:
            runlog.start_run(self.state.run_id, self.premise, dict(self.state.header))
        try:
            with recorder.active():
                story = await self._pipeline()
        except StoryEngineError as exc:
            step = getattr(exc, "failed_step", "")
            self.state.header["failed_step"] = step  # a resume draws this step's draft again
            await asyncio.to_thread(self.state.set_status, "failed", str(exc))
            if runlog is not None:
                runlog.finish_run(self.state.run_id, "failed", str(exc))
            component = step.split(".")[0]
            chain = (
                self.engine.settings.narrative.providers.chain(component) if component in COMPONENTS else []
            )
            first = (
                f", starting from provider {chain[next_start(self.state.header, step, len(chain))]}"
                if len(chain) > 1
                else ""
            )
            resume = resume_command(self.state.run_id, self.engine.settings)  # with its --config
            failed = RunFailed(
                f"{exc} — run {self.state.run_id} stopped at step {step or '?'}; every finished step is "
                f"saved. Continue with: {resume} (the failed "
                f"step is asked again with other seeds{first}; a larger model or another --provider in "
                "the config helps when it keeps failing)",
                run_id=self.state.run_id,
                step=getattr(exc, "component", ""),
                cause=exc,
            )
            self.emit("run_failed", error=str(failed))
            raise failed from exc
        except BaseException as exc:  # a bug, Ctrl-C, a cancelled task: the run is not "running"
            why = f"stopped: {type(exc).__name__}: {exc}"
            await asyncio.shield(asyncio.to_thread(self.state.set_status, "failed", why))
            if runlog is not None:
                runlog.finish_run(self.state.run_id, "failed", why)
            raise
        # A story with a gap is kept, and a resume may try its missing parts again (a new round).
        status = "gaps" if story.gaps else "done"
        self.state.header["gaps"] = sorted(story.gaps)
        gaps = "; ".join(f"{part} missing: {why}" for part, why in story.gaps.items()) or None
        await asyncio.to_thread(self.state.set_status, status, gaps)
        if runlog is not None:
            runlog.finish_run(self.state.run_id, status, gaps)
        story.meta["calls"] = [c.model_dump(mode="json") for c in recorder.calls]
        self.emit("run_done")
        return story

    async def _pipeline(self) -> Story:
        wanted = self.state.header.get("scenes")
        seed = self.seed
        plot = await self.two_stages(
            "plot",
            "plot",
            lambda m: self.c.plot_draft(self.premise, wanted, m, self.seed_for("plot")),
            lambda draft, m: self.c.plot(self.premise, draft, wanted, m),
            PlotStructure,
        )
        bible = await self._bible(plot)
        beats = scene_beats(plot, wanted)
        n = len(beats)
        scene_futures: list[asyncio.Future[Scene]] = [
            asyncio.get_running_loop().create_future() for _ in range(n)
        ]
        scene_tasks = [
            asyncio.create_task(self._scene(plot, bible, i, beats[i], n, scene_futures[i])) for i in range(n)
        ]
        dialogue_tasks = [asyncio.create_task(self._dialogue(bible, i, n, scene_futures)) for i in range(n)]
        results = await asyncio.gather(*scene_tasks, *dialogue_tasks, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise next((e for e in errors if isinstance(e, StoryEngineError)), errors[0])
        pairs = zip(results[:n], results[n:], strict=True)
        scenes = [
            StoryScene(scene=cast(Scene, s), dialogue=cast(Dialogue, d), prose=self._prose(i))
            for i, (s, d) in enumerate(pairs)
        ]
        if self.revision is not None:
            scenes = await self._keep_better(plot, bible, scenes)
        digest = story_digest(plot, scenes)
        evaluation, enhancement = await self._after_steps(digest, revision_targets(scenes, bible))
        meta = {
            "run_id": self.state.run_id,
            "seed": seed,
            "config": self.engine.settings.source,
            "routes": {c: self.engine.settings.narrative.providers.chain(c) for c in COMPONENTS},
            "models": {name: p.model for name, p in self.engine.providers.items()},
            "structuring_strict": self.engine.settings.structuring.strict,
            "steps": self._steps(),
        }
        if "steered" in self.state.header:
            meta["steered"] = self.state.header["steered"]
        if self.revision is not None:
            meta["revision"] = self._revision_meta(plot, bible, scenes)
        story = Story(
            premise=self.premise,
            plot=plot,
            bible=bible,
            scenes=scenes,
            evaluation=evaluation,
            enhancement=enhancement,
            gaps=dict(self.gaps),
            meta=meta,
        )
        # A rubric that gives one score to everything, or praises a story the code finds broken,
        # is kept but marked unreliable (quality.py), never shown as a verdict.
        story = mark_evaluation(story)
        # The quality report by code travels with the story (the web page shows it per version).
        story.meta["quality"] = {"rows": [list(row) for row in quality_report(story).as_rows()]}
        return story

    async def _bible(self, plot: PlotStructure) -> StoryBible:
        """The story bible; when the model cannot make it valid, a plain one made by code from the
        plot (a gap, said so), so that the story is still written."""
        try:
            bible: StoryBible = await self.two_stages(
                "bible",
                "bible",
                lambda m: self.c.bible_draft(self.premise, plot, m, self.seed_for("bible")),
                lambda draft, m: self.c.bible(self.premise, plot, draft, m),
                StoryBible,
            )
            return bible
        except StructuringError as exc:
            bible = plain_bible(self.premise, list(plot.characters))
            why = f"the model gave no valid bible, so a plain one was made from the plot ({exc})"
            self.state.header["plain_bible"] = why
            await asyncio.to_thread(self.state.put, "bible", bible.model_dump(mode="json"), {"plain": why})
            return bible

    async def _keep_better(
        self, plot: PlotStructure, bible: StoryBible, scenes: list[StoryScene]
    ) -> list[StoryScene]:
        """A revision's scenes: each rewritten scene only where it makes no code measure worse; the
        others keep their earlier version (put back in the checkpoint, and said why)."""
        refused: dict[str, list[str]] = self.state.header.setdefault("revision_refused", {})
        earlier = [self.earlier.get(i, scene) for i, scene in enumerate(scenes)]
        revised = {i: scenes[i] for i in self.earlier if str(i) not in refused}

        def rebuild(items: list[StoryScene]) -> Story:
            return Story(premise=self.premise, plot=plot, bible=bible, scenes=items)

        kept, newly = await asyncio.to_thread(keep_better, rebuild(earlier), revised, rebuild)
        for i, worse in newly.items():
            refused[str(i)] = worse
            old = self.earlier[i]
            why = {"kept_earlier": f"the rewritten scene made the story worse: {'; '.join(worse)}"}
            await asyncio.to_thread(self.state.put, f"scene.{i}", old.scene.model_dump(mode="json"), why)
            await asyncio.to_thread(self.state.put, f"scene.{i}.draft", old.prose, why)
            await asyncio.to_thread(
                self.state.put, f"dialogue.{i}", old.dialogue.model_dump(mode="json"), why
            )
        return [self.earlier[i] if str(i) in refused else scene for i, scene in enumerate(kept)]

    def _revision_meta(
        self, plot: PlotStructure, bible: StoryBible, scenes: list[StoryScene]
    ) -> dict[str, Any]:
        """What a revision did: applied and untargeted suggestions, the scenes rewritten and kept, and
        the story's code measures before and after."""
        assert self.revision is not None
        refused = self.state.header.get("revision_refused", {})
        earlier = [self.earlier.get(i, scene) for i, scene in enumerate(scenes)]
        return {
            **self.revision.as_dict(),
            "base": self.state.header["steered"]["base"],
            "revised": [i + 1 for i in sorted(self.earlier) if str(i) not in refused],
            "kept_earlier": {str(int(i) + 1): worse for i, worse in refused.items()},
            "before": story_measures(Story(premise=self.premise, plot=plot, bible=bible, scenes=earlier)),
            "after": story_measures(Story(premise=self.premise, plot=plot, bible=bible, scenes=scenes)),
        }

    def _prose(self, i: int) -> str:
        """Scene i as a reader gets it: its stage-1 draft, cleaned (no cut-off end, loops, markup,
        junk or meta talk; what the text rules dropped is kept in `prose_findings`)."""
        prose, found = reader_prose(_without_bible_lines(str(self.state.get(f"scene.{i}.draft") or "")))
        self.prose_findings[i] = [f.as_dict() for f in found]
        return prose

    def _steps(self) -> dict[str, Any]:
        """The steps' metadata, each scene draft's with the findings of its prose."""
        steps = dict(self.state.meta)
        for i, found in self.prose_findings.items():
            key = f"scene.{i}.draft"
            if found and isinstance(steps.get(key), dict):
                steps[key] = {**steps[key], "findings": [*steps[key].get("findings", []), *found]}
        return steps

    async def _after_steps(
        self, digest: str, targets: list[str]
    ) -> tuple[Evaluation | None, Enhancement | None]:
        """The evaluation and the enhancement. The story is finished before them: when one cannot be
        made valid, the story is still kept, that part missing and said why (`Story.gaps`)."""
        if "plain_bible" in self.state.header:
            self.gaps["bible"] = self.state.header["plain_bible"]
        try:
            evaluation: Evaluation | None = await self.two_stages(
                "evaluation",
                "evaluation",
                lambda m: self.c.evaluation_draft(self.premise, digest, m, self.seed_for("ev")),
                self.c.evaluation,
                Evaluation,
            )
        except StoryEngineError as exc:
            self.gaps["evaluation"] = f"the model gave no valid evaluation: {exc}"
            evaluation = None
        if evaluation is None:
            self.gaps["enhancement"] = "not made: the enhancement works from the evaluation, which is missing"
            return None, None
        try:
            enhancement: Enhancement | None = await self.two_stages(
                "enhancement",
                "enhancement",
                lambda m: self.c.enhancement_draft(self.premise, digest, evaluation, m, self.seed_for("en")),
                lambda draft, m: self.c.enhancement(draft, m, targets),
                Enhancement,
            )
        except StoryEngineError as exc:
            self.gaps["enhancement"] = f"the model gave no valid enhancement: {exc}"
            enhancement = None
        return evaluation, enhancement

    async def _scene(
        self, plot: PlotStructure, bible: StoryBible, i: int, beat: int, n: int, done: asyncio.Future[Scene]
    ) -> Scene:
        revision = None
        if self.revision is not None and i in self.revision.changes:
            old = self.earlier[i]
            revision = (old.prose or old.scene.summary, self.revision.changes_text(i))
        try:
            async with self.semaphore:
                scene = await self.two_stages(
                    f"scene.{i}",
                    "scene",
                    lambda m: self.c.scene_draft(
                        self.premise, plot, beat, (i + 1, n), m, self.seed_for("scene", i), bible, revision
                    ),
                    lambda draft, m: self.c.scene(plot, beat, draft, m, bible),
                    Scene,
                    index=i + 1,
                    total=n,
                )
        except BaseException as exc:
            done.set_exception(exc)
            done.exception()  # mark retrieved: the dialogue tasks may never look
            raise
        done.set_result(scene)
        return scene

    async def _dialogue(
        self, bible: StoryBible, i: int, n: int, scenes: list[asyncio.Future[Scene]]
    ) -> Dialogue:
        earlier = [await f for f in scenes[: i + 1]]
        scene = earlier[-1]
        previous = "\n".join(f"{j}. {scene_text(s)}" for j, s in enumerate(earlier[:-1], 1))
        async with self.semaphore:
            return await self.two_stages(
                f"dialogue.{i}",
                "dialogue",
                lambda m: self.c.dialogue_draft(scene, previous, m, self.seed_for("dialogue", i), bible),
                lambda draft, m: self.c.dialogue(scene, draft, m),
                Dialogue,
                index=i + 1,
                total=n,
            )


def step_key(name: str) -> str:
    """The step a name belongs to, its draft included: "scene.0.draft" -> "scene.0"."""
    return name.removesuffix(".draft")


def next_start(header: dict[str, Any], step: str, providers: int) -> int:
    """Where a resume starts failed step `step` in a chain of `providers`: one provider after
    where this attempt started (`header["start_provider"]`), wrapping around."""
    return (int(header.get("start_provider", {}).get(step_key(step), 0)) + 1) % providers


_BIBLE_ECHO = re.compile(r"[^.!?\n]*\((?:she/her|he/him|they/them)\)[^.!?\n]*[.!?]?")


def _without_bible_lines(draft: str) -> str:
    """A draft without the sentences a small model copied from the bible's "Name (she/her): ..."."""
    return _BIBLE_ECHO.sub("", draft)
