"""One run of the pipeline over a checkpointed state: the graph of steps, bounded concurrency, checkpoints.

`StoryRun` schedules the steps of `steps/` by what each `needs`: an instance starts the moment
the steps it is made from are finished (the plot first; every scene once the plot and the bible
are; dialogue i once scenes 1..i are; the assembled story; the evaluation; the enhancement).
Steps marked `bounded` (scenes, dialogues) run under a semaphore of
`narrative.concurrency.scenes`. Each finished stage is checkpointed at once (off the event loop);
a step the state already has is not made again, which is how `--resume` and steering work. An
`optional` step that fails leaves a gap (and so do the steps made from it); a step with a
`fallback` (the bible) is replaced by it; any other failure stops the run once every step that
could still run has finished (nothing made is lost).

A resume never repeats a failure identically: each resume of a failed run is a new round whose
seeds are derived from the run's seed and the round (recorded in every step's metadata), and the
draft of a structuring step that failed is drawn again, so the failed step is asked differently.
When its component's chain has several providers, the failed step also starts from the next one
(`header.start_provider`, one further on each resume that fails there again, wrapping), the
others after it as fallbacks; its metadata names the provider asked first.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from .. import streaming
from ..bible import StoryBible
from ..config import COMPONENTS, Settings
from ..drafts import reader_prose
from ..errors import InputError, RunFailed, StoryEngineError, StructuringError
from ..prompts.render import warm as warm_templates
from ..providers.base import Provider
from ..providers.profiles import PROFILES
from ..quality import mark_evaluation, quality_report, story_measures
from ..routing.instrument import Instrumentation, current_step
from ..schemas import PlotStructure, Story, StoryScene
from ..seeds import StepSeeds
from ..streaming import Listener
from .checkpoint import RunHeader, RunState, resume_command
from .inputs import DEFAULT_SCENES_PER_CHAPTER
from .revision import Revision, keep_better
from .steps import STEPS, Inputs, Step
from .story import scene_beats
from .twostage import StepMeta, TwoStage

M = TypeVar("M", bound=BaseModel)
Event = dict[str, Any]
OnEvent = Callable[[Event], None]


class Engine(Protocol):
    """What a run uses of the engine that runs it (pipeline/engine.py's StoryEngine)."""

    settings: Settings
    stages: TwoStage
    providers: dict[str, Provider]
    instrumentation: Instrumentation


class StoryRun:
    """One run of the pipeline over a checkpointed state."""

    def __init__(self, engine: Engine, state: RunState, on_event: OnEvent | None) -> None:
        self.engine = engine
        self.stages = engine.stages
        self.state = state
        self.on_event = on_event
        self.premise: str = state.header.premise
        self.seed: int | None = state.header.seed
        self.round = state.header.round  # how many times a failed run was resumed
        self.gaps: dict[str, str] = {}  # optional parts that could not be made, and why
        self.values: dict[str, Any] = {}  # finished steps, as their models
        self.beats: list[int] | None = None  # the beat each scene realises, once the plot is known
        self.outline: list[int] = []  # a long story: the plot beat each chapter realises
        self.started = time.perf_counter()
        self.tokens = 0
        self.prose_findings: dict[int, list[dict[str, str]]] = {}  # scene -> what its prose lost
        self.semaphore = asyncio.Semaphore(engine.settings.narrative.concurrency.scenes)
        steered = state.header.steered or {}
        self.revision: Revision | None = None  # a revision: the changes per scene, the earlier scenes
        self.earlier: dict[int, StoryScene] = {}
        if steered.get("operation") == "revise":
            self.revision = Revision.from_dict(steered["changes"]["revision"])
            earlier = steered["changes"]["earlier"].items()
            self.earlier = {int(i): StoryScene.model_validate(value) for i, value in earlier}

    # -- what a step may read of the run (steps.RunView) --
    def value(self, key: str) -> Any:
        return self.values[key]

    def made(self, key: str) -> bool:
        return key in self.values

    def draft_of(self, key: str) -> str:
        return str(self.state.get(f"{key}.draft") or "")

    def wanted_scenes(self) -> int | None:
        return self.state.header.scenes

    def scene_count(self) -> int:
        assert self.beats is not None, "the plot is not made yet"
        return len(self.beats)

    def beat_of(self, index: int) -> int:
        assert self.beats is not None, "the plot is not made yet"
        return self.beats[index]

    def chapter_count(self) -> int | None:
        return self.state.header.chapters

    def scenes_per_chapter(self) -> int:
        return self.state.header.scenes_per_chapter or DEFAULT_SCENES_PER_CHAPTER

    def chapter_of(self, index: int) -> int | None:
        return None if self.chapter_count() is None else index // self.scenes_per_chapter()

    def bible_at(self, chapter: int | None) -> StoryBible:
        bible: StoryBible = self.values["bible"]
        made = range(0 if chapter is None else chapter + 1)
        return bible.grown([person for c in made for person in self.values[f"chapter.{c}"].introduces])

    def outline_beat_of(self, chapter: int) -> int:
        return self.outline[chapter]

    def revision_of(self, index: int) -> tuple[str, str] | None:
        if self.revision is None or index not in self.revision.changes:
            return None
        old = self.earlier[index]
        return old.prose or old.scene.summary, self.revision.changes_text(index)

    def story_scenes(self) -> list[StoryScene]:
        scenes: list[StoryScene] = self.values["story"]
        return scenes

    # -- checkpoints, seeds, events --
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

    def seeds_of(self, key: str) -> StepSeeds:
        """The seeds of step `key` (seeds.py): from the run's seed, the step and the round."""
        return StepSeeds(self.seed, step_key(key), self.round)

    def start_of(self, name: str, component: str) -> int:
        """Where step `name` starts its component's chain: 0, or later when it failed before."""
        chain = self.engine.settings.narrative.providers.chain(component)
        start = self.state.header.start_provider.get(step_key(name), 0)
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

    def _listener(self, name: str, component: str, stage: str, info: dict[str, Any]) -> Listener | None:
        """What the run's events hear of a stage: a draft's text as it is written (`draft_delta`,
        `draft_restarted` when a new attempt begins); an object structured in parts (a small
        model's), each part that passes its checks (`part_done`, `parts_started` when the object
        is begun, again on a retry). None without an event listener."""
        if self.on_event is None:
            return None
        where = {"step": component, "name": name, **info}
        if stage == "freeform":
            return Listener(
                on_delta=lambda text: self.emit("draft_delta", text=text, **where),
                on_attempt=lambda: self.emit("draft_restarted", **where),
            )
        return Listener(
            on_parts_started=lambda: self.emit("parts_started", **where),
            on_part=lambda what, of, value: self.emit("part_done", part=what, of=of, value=value, **where),
        )

    # -- one stage, one step --
    async def stage(
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
        meta = StepMeta(component, seeds=self.seeds_of(name), start=self.start_of(name, component))
        step = current_step.set(step_key(name))  # the run log names the step of every call
        try:
            with streaming.listening(self._listener(name, component, stage, info)):
                value = await produce(meta)
        except BaseException as exc:
            if getattr(exc, "failed_step", None) is None:
                exc.failed_step = name  # type: ignore[attr-defined]  # where it happened, first
            raise
        finally:
            current_step.reset(step)
        self.tokens += meta.tokens["prompt"] + meta.tokens["completion"]
        dumped = value.model_dump(mode="json") if model else value
        await asyncio.to_thread(self.state.put, name, dumped, meta.as_dict())
        self.emit("step_done", step=component, stage=stage, name=name, value=dumped, **info)
        return value

    async def two_stages(self, step: Step[Any], key: str, x: Inputs, **info: Any) -> Any:
        """Step `key` (and its draft before it); a state that has the value needs no draft."""
        done = self.state.get(key)
        if done is not None:
            return self._checkpointed(key, done, step.model)
        stages = self.stages
        text = await self.stage(f"{key}.draft", step.name, lambda m: step.draft(stages, x, m), **info)
        return await self.stage(
            key, step.name, lambda m: step.structure(stages, x, text, m), step.model, **info
        )

    async def make(self, step: Step[Any], index: int | None) -> Any:
        """One instance of `step`, by code or by its two stages (bounded ones under the semaphore);
        when no model makes it valid, its fallback (a gap, said so) where it has one."""
        key = step.key(index)
        if step.by_code:
            return await step.make(self)
        x = step.gather(self, index)
        bound = self.semaphore if step.bounded else contextlib.nullcontext()
        try:
            async with bound:
                return await self.two_stages(step, key, x, **step.info(index, self))
        except StructuringError as exc:
            value = step.fallback(x, str(self.state.get(f"{key}.draft") or ""))
            if value is None:
                raise
            why = f"the model gave no valid {step.name}, so {step.fallback_made} ({exc})"
            self.state.header.plain[key] = why  # a gap on every resume too
            self.gaps[key] = why
            await asyncio.to_thread(self.state.put, key, value.model_dump(mode="json"), {"plain": why})
            return value

    # -- the run --
    async def execute(self) -> Story:
        self.emit("run_started", premise=self.premise)
        for name in self.state.header.edited:  # a steering edit, not made by a model
            value = self.state.get(name)
            self.emit("step_done", step=name.split(".")[0], stage="edited", name=name, value=value)
        # The first render of a template starts Node (~1 s each): do them off the event loop.
        await asyncio.to_thread(warm_templates)
        recorder = self.engine.instrumentation.recorder(self.state.run_id)  # the only recorder
        recorder.start(self.premise, self.state.header.model_dump(mode="json"))
        try:
            with recorder.active():
                story = await self._pipeline()
        except StoryEngineError as exc:
            step = getattr(exc, "failed_step", "")
            self.state.header.failed_step = step  # a resume draws this step's draft again
            await asyncio.to_thread(self.state.set_status, "failed", str(exc))
            recorder.finish("failed", str(exc))
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
            recorder.finish("failed", why)
            raise
        # A story with a gap is kept, and a resume may try its missing parts again (a new round).
        status = "gaps" if story.gaps else "done"
        self.state.header.gaps = sorted(story.gaps)
        gaps = "; ".join(f"{part} missing: {why}" for part, why in story.gaps.items()) or None
        await asyncio.to_thread(self.state.set_status, status, gaps)
        recorder.finish(status, gaps)
        story.meta["calls"] = [c.model_dump(mode="json") for c in recorder.calls]
        self.emit("run_done")
        return story

    def _instances(self) -> list[tuple[Step[Any], int | None]]:
        """Every step instance the run has so far (those of each scene once the plot is known)."""
        found: list[tuple[Step[Any], int | None]] = []
        for step in STEPS.values():
            if not step.applies(self):
                continue
            if step.per_scene:
                found += [(step, i) for i in range(len(self.beats or []))]
            elif step.per_chapter:
                found += [(step, c) for c in range(len(self.outline))]
            else:
                found.append((step, None))
        return found

    def _finished(self, step: Step[Any], key: str, value: Any) -> None:
        self.values[key] = value
        if step.name != "plot":
            return
        chapters = self.chapter_count()
        if chapters is None:
            self.beats = scene_beats(value, self.wanted_scenes())
        else:  # the plot is the outline: a beat per chapter; a scene per beat of its chapter
            self.outline = scene_beats(value, chapters)
            self.beats = [b for _ in range(chapters) for b in range(self.scenes_per_chapter())]

    async def _graph(self) -> None:
        """Make every step instance once the steps it needs are finished (see the module docstring)."""
        self.gaps.update(self.state.header.plain)  # made by code before a resume: still gaps
        running: dict[str, tuple[Step[Any], asyncio.Task[Any]]] = {}
        failed: dict[str, BaseException] = {}
        missing: set[str] = set()
        try:
            while True:
                if self._start_ready(running, failed, missing):
                    continue  # look again: more may be ready now
                if not running:
                    break
                tasks = {task for _, task in running.values()}
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for key, (step, task) in list(running.items()):
                    if not task.done():
                        continue
                    del running[key]
                    exc = task.exception()
                    if exc is None:
                        self._finished(step, key, task.result())
                    elif step.optional and isinstance(exc, StoryEngineError):
                        missing.add(key)
                        self.gaps[key] = f"the model gave no valid {step.name}: {exc}"
                    else:
                        failed[key] = exc
        finally:
            for _, task in running.values():  # cancelled from outside: no step is left running
                task.cancel()
            await asyncio.gather(*(task for _, task in running.values()), return_exceptions=True)
        if failed:
            errors = list(failed.values())
            raise next((e for e in errors if isinstance(e, StoryEngineError)), errors[0])

    def _start_ready(
        self,
        running: dict[str, tuple[Step[Any], asyncio.Task[Any]]],
        failed: dict[str, BaseException],
        missing: set[str],
    ) -> bool:
        """Start every instance whose needs are finished; True when one was settled without a task (taken
        from the checkpoint, or left out because a step it needs is missing): others may be ready now."""
        loaded = False
        for step, index in self._instances():
            key = step.key(index)
            if key in self.values or key in running or key in failed or key in missing:
                continue
            needs = step.needs(index, self)
            gone = next((n for n in needs if n in missing), None)
            if gone is not None:
                missing.add(key)
                self.gaps[key] = f"not made: the {key} works from the {gone}, which is missing"
                loaded = True
                continue
            if not all(n in self.values for n in needs):
                continue
            done = None if step.by_code else self.state.get(key)
            if done is not None:  # checkpointed (a resume, a steering job): not made again
                self._finished(step, key, self._checkpointed(key, done, step.model))
                loaded = True
                continue
            running[key] = (step, asyncio.create_task(self.make(step, index)))
        return loaded

    async def _pipeline(self) -> Story:
        await self._graph()
        plot: PlotStructure = self.values["plot"]
        bible = self.bible_at(len(self.outline) - 1 if self.outline else None)  # grown by its chapters
        scenes = self.story_scenes()
        meta = {
            "run_id": self.state.run_id,
            "seed": self.seed,
            "config": self.engine.settings.source,
            "routes": {c: self.engine.settings.narrative.providers.chain(c) for c in COMPONENTS},
            "models": {name: p.model for name, p in self.engine.providers.items()},
            "structuring_strict": self.engine.settings.structuring.strict,
            "steps": self._steps(),
        }
        if self.state.header.steered is not None:
            meta["steered"] = self.state.header.steered
        if self.revision is not None:
            meta["revision"] = self._revision_meta(plot, bible, scenes)
        story = Story(
            premise=self.premise,
            plot=plot,
            bible=bible,
            scenes=scenes,
            chapters=[self.values[f"chapter.{c}"] for c in range(len(self.outline))],
            evaluation=self.values.get("evaluation"),
            enhancement=self.values.get("enhancement"),
            gaps=dict(self.gaps),
            meta=meta,
        )
        # A rubric that gives one score to everything, or praises a story the code finds broken,
        # is kept but marked unreliable (quality.py), never shown as a verdict.
        story = mark_evaluation(story)
        # The quality report by code travels with the story (the web page shows it per version).
        story.meta["quality"] = {"rows": [list(row) for row in quality_report(story).as_rows()]}
        return story

    async def assemble_scenes(self) -> list[StoryScene]:
        """Each scene with its dialogue and its prose; a revision's rewritten scenes only where they
        make the story no worse (`_keep_better`)."""
        assert self.beats is not None
        scenes = [
            StoryScene(
                scene=self.values[f"scene.{i}"], dialogue=self.values[f"dialogue.{i}"], prose=self._prose(i)
            )
            for i in range(len(self.beats))
        ]
        if self.revision is not None:
            scenes = await self._keep_better(self.values["plot"], self.values["bible"], scenes)
        return scenes

    async def _keep_better(
        self, plot: PlotStructure, bible: StoryBible, scenes: list[StoryScene]
    ) -> list[StoryScene]:
        """A revision's scenes: each rewritten scene only where it makes no code measure worse; the
        others keep their earlier version (put back in the checkpoint, and said why)."""
        refused = self.state.header.revision_refused
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
        refused = self.state.header.revision_refused
        earlier = [self.earlier.get(i, scene) for i, scene in enumerate(scenes)]
        return {
            **self.revision.as_dict(),
            "base": (self.state.header.steered or {})["base"],
            "revised": [i + 1 for i in sorted(self.earlier) if str(i) not in refused],
            "kept_earlier": {str(int(i) + 1): worse for i, worse in refused.items()},
            "before": story_measures(Story(premise=self.premise, plot=plot, bible=bible, scenes=earlier)),
            "after": story_measures(Story(premise=self.premise, plot=plot, bible=bible, scenes=scenes)),
        }

    def _prose(self, i: int) -> str:
        """Scene i as a reader gets it: its stage-1 draft, cleaned (no cut-off end, loops, markup,
        junk or meta talk; what the text rules dropped is kept in `prose_findings`); without the
        sentences copied from the bible where the writing model's profile says it copies them."""
        draft = str(self.state.get(f"scene.{i}.draft") or "")
        profile = PROFILES.get(str((self.state.meta.get(f"scene.{i}.draft") or {}).get("profile")))
        if profile is not None and profile.drops_bible_echo:
            draft = _without_bible_lines(draft)
        prose, found = reader_prose(draft)
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


def step_key(name: str) -> str:
    """The step a name belongs to, its draft included: "scene.0.draft" -> "scene.0"."""
    return name.removesuffix(".draft")


def next_start(header: RunHeader, step: str, providers: int) -> int:
    """Where a resume starts failed step `step` in a chain of `providers`: one provider after
    where this attempt started (`header.start_provider`), wrapping around."""
    return (header.start_provider.get(step_key(step), 0) + 1) % providers


_BIBLE_ECHO = re.compile(r"[^.!?\n]*\((?:she/her|he/him|they/them)\)[^.!?\n]*[.!?]?")


def _without_bible_lines(draft: str) -> str:
    """A draft without the sentences a small model copied from the bible's "Name (she/her): ..."."""
    return _BIBLE_ECHO.sub("", draft)
