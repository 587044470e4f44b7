"""StoryEngine: premise -> plot -> scenes -> dialogue -> evaluation -> enhancement -> Story.

Ordering and concurrency: the plot first; then every scene (stage 1 and its own stage 2)
under a semaphore of `narrative.concurrency.scenes`; dialogue i starts once scenes 1..i are
structured (it is told what happened before, and what it is told must not depend on
timing, so reruns are deterministic); evaluation and enhancement last. Each finished stage
is checkpointed at once; a failure keeps everything finished and says how to resume.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from functools import cached_property
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar, cast

from pydantic import BaseModel

from ..config import COMPONENTS, Settings, load_settings, secret_values
from ..errors import InputError, RunFailed, StoryEngineError
from ..failures import InvalidOutputLog
from ..prompts.render import warm as warm_templates
from ..providers.base import Provider
from ..routing.instrument import RunRecorder
from ..routing.router import Router
from ..schemas import Dialogue, Enhancement, Evaluation, PlotStructure, Scene, Story, StoryScene
from .checkpoint import CheckpointStore, RunState, checkpoint_dir, new_run_id
from .runstore import RunRecord, RunStore, Version
from .steering import Steer, kept_meta
from .story import Components, call_seed, scene_beats, scene_text, story_digest
from .twostage import StepMeta, TwoStage

M = TypeVar("M", bound=BaseModel)
Event = dict[str, Any]
OnEvent = Callable[[Event], None]

MAX_PREMISE_CHARS = 4000
MAX_SCENES = 24
SEED_MAX = 2**31 - 1


class Made(NamedTuple, Generic[M]):
    """A component's value and the metadata of its steps, named as in a run ("plot.draft", "plot")."""

    value: M
    meta: dict[str, dict[str, Any]]


def check_inputs(premise: str, scenes: int | None) -> str:
    """Reject unusable input before any model call."""
    premise = (premise or "").strip()
    if not premise:
        raise InputError("the premise is empty; give one or two sentences describing the story")
    if len(premise) > MAX_PREMISE_CHARS:
        raise InputError(
            f"the premise is {len(premise):,} characters; keep it under {MAX_PREMISE_CHARS:,} "
            "(a premise is a paragraph, not a manuscript)"
        )
    if scenes is not None and not 1 <= scenes <= MAX_SCENES:
        raise InputError(f"scenes must be between 1 and {MAX_SCENES}, not {scenes}")
    return premise


class StoryEngine:
    def __init__(
        self,
        settings: Settings,
        router: Router,
        providers: dict[str, Provider],
        *,
        checkpoints: CheckpointStore | None = None,
        invalid_log: InvalidOutputLog | None = None,
        runlog: Any = None,
    ) -> None:
        self.settings = settings
        self.router = router
        self.providers = providers
        self.runlog = runlog
        self.checkpoints = checkpoints or CheckpointStore(checkpoint_dir(settings))
        self.invalid_log = invalid_log or InvalidOutputLog(
            settings.log_dir / "invalid_json",
            max_files=settings.logging.invalid_json_max_files,
            max_bytes=settings.logging.invalid_json_max_bytes,
            secrets=secret_values(),
        )
        stages = TwoStage(router, settings, self.invalid_log)
        self.stages = stages
        self.components = Components(stages)

    # -- construction --
    @classmethod
    def from_config(
        cls,
        path: str | Path | None = None,
        *,
        settings: Settings | None = None,
        provider: str | None = None,
        providers: dict[str, Provider] | None = None,
    ) -> StoryEngine:
        """Build from config.yaml (or given settings); `provider` routes every component to it."""
        settings = settings or load_settings(path)
        if provider:
            settings = settings.with_route(provider)
        router = Router.from_settings(settings, providers=providers)
        return cls(settings, router, router.providers, runlog=router.runlog)

    async def aclose(self) -> None:
        close = getattr(self.router, "aclose", None)
        if close is not None:
            await close()

    async def __aenter__(self) -> StoryEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the run store --
    @cached_property
    def runs(self) -> RunStore:
        """Every run and version in this engine's data directory (beside its checkpoints)."""
        return RunStore.beside(self.checkpoints.directory)

    # -- one component at a time (the seeds and numbering of `generate`) --
    async def _made(
        self,
        name: str,
        draft: Callable[[StepMeta], Awaitable[str]],
        structure: Callable[[str, StepMeta], Awaitable[M]],
    ) -> Made[M]:
        component = name.split(".")[0]
        draft_meta, meta = StepMeta(component), StepMeta(component)
        text = await draft(draft_meta)
        value = await structure(text, meta)
        return Made(value, {f"{name}.draft": draft_meta.as_dict(), name: meta.as_dict()})

    async def plot_with_meta(
        self, premise: str, beats: int | None = None, seed: int | None = None
    ) -> Made[PlotStructure]:
        """The plot as `generate(premise, scenes=beats, seed=seed)` makes it, with its step metadata."""
        premise = check_inputs(premise, beats)
        return await self._made(
            "plot",
            lambda m: self.components.plot_draft(premise, beats, m, call_seed(seed, "plot")),
            lambda draft, m: self.components.plot(premise, draft, beats, m),
        )

    async def plot(self, premise: str, beats: int | None = None, seed: int | None = None) -> PlotStructure:
        return (await self.plot_with_meta(premise, beats, seed)).value

    async def scene_with_meta(
        self, premise: str, plot: PlotStructure, index: int, seed: int | None = None
    ) -> Made[Scene]:
        """Scene `index` of a story with one scene per beat: "scene index+1 of len(beats)"."""
        if not 0 <= index < len(plot.beats):
            raise InputError(f"beat {index} does not exist; this plot has beats 0 to {len(plot.beats) - 1}")
        number = (index + 1, len(plot.beats))
        return await self._made(
            f"scene.{index}",
            lambda m: self.components.scene_draft(
                premise, plot, index, number, m, call_seed(seed, "scene", index)
            ),
            lambda draft, m: self.components.scene(plot, index, draft, m),
        )

    async def scene(self, premise: str, plot: PlotStructure, index: int, seed: int | None = None) -> Scene:
        """The scene that realises beat `index` of `plot`."""
        return (await self.scene_with_meta(premise, plot, index, seed)).value

    async def dialogue_with_meta(
        self, scene: Scene, previous: str = "", seed: int | None = None, index: int = 0
    ) -> Made[Dialogue]:
        """The dialogue of scene `index` (0 for a lone scene), `previous` being the scenes before it."""
        return await self._made(
            f"dialogue.{index}",
            lambda m: self.components.dialogue_draft(scene, previous, m, call_seed(seed, "dialogue", index)),
            lambda draft, m: self.components.dialogue(scene, draft, m),
        )

    async def dialogue(
        self, scene: Scene, previous: str = "", seed: int | None = None, index: int = 0
    ) -> Dialogue:
        return (await self.dialogue_with_meta(scene, previous, seed, index)).value

    async def evaluate_with_meta(
        self, premise: str, plot: PlotStructure, scenes: list[StoryScene], seed: int | None = None
    ) -> Made[Evaluation]:
        digest = story_digest(plot, scenes)
        return await self._made(
            "evaluation",
            lambda m: self.components.evaluation_draft(premise, digest, m, call_seed(seed, "ev")),
            lambda draft, m: self.components.evaluation(draft, m),
        )

    async def evaluate(
        self, premise: str, plot: PlotStructure, scenes: list[StoryScene], seed: int | None = None
    ) -> Evaluation:
        return (await self.evaluate_with_meta(premise, plot, scenes, seed)).value

    async def enhance_with_meta(
        self,
        premise: str,
        plot: PlotStructure,
        scenes: list[StoryScene],
        evaluation: Evaluation,
        seed: int | None = None,
    ) -> Made[Enhancement]:
        digest = story_digest(plot, scenes)
        return await self._made(
            "enhancement",
            lambda m: self.components.enhancement_draft(
                premise, digest, evaluation, m, call_seed(seed, "en")
            ),
            lambda draft, m: self.components.enhancement(draft, m),
        )

    async def enhance(
        self,
        premise: str,
        plot: PlotStructure,
        scenes: list[StoryScene],
        evaluation: Evaluation,
        seed: int | None = None,
    ) -> Enhancement:
        made = await self.enhance_with_meta(premise, plot, scenes, evaluation, seed)
        return made.value

    # -- the whole story --
    async def generate(
        self,
        premise: str,
        scenes: int | None = None,
        seed: int | None = None,
        *,
        run_id: str | None = None,
        on_event: OnEvent | None = None,
        provider: str | None = None,
    ) -> Story:
        """Write a story; the run and (once finished) its version 1 are kept in `self.runs`."""
        premise = check_inputs(premise, scenes)
        header = {
            "run_id": run_id or new_run_id(),
            "premise": premise,
            "scenes": scenes,
            "seed": seed,
            "provider": provider,
            "config": self.settings.source,
            "created_at": time.time(),
        }
        state = await asyncio.to_thread(self.checkpoints.create, header)
        return (await self._execute(state, on_event)).the_story()

    async def resume(self, run_id: str, *, on_event: OnEvent | None = None) -> Story:
        """Continue a stopped run (or steering job) from its checkpoint."""
        state = await asyncio.to_thread(self.checkpoints.load, run_id)
        return (await self._execute(state, on_event)).the_story()

    # -- steering: a new version from an old one, by the same pipeline --
    async def steer(
        self,
        run_id: str,
        operation: Steer,
        *,
        base: int | None = None,
        seed: int | None = None,
        on_event: OnEvent | None = None,
    ) -> Version:
        """Make `operation` on version `base` (default: the latest) of run `run_id`; returns the new version.

        The seed defaults to a fresh random one; it is recorded in the version and its checkpoint.
        NotFound (an InputError) when the run or version does not exist; InputError when the
        operation does not apply to that version. Nothing is written before both are checked.
        """
        found = await asyncio.to_thread(self.runs.version, run_id, base)
        story = found.the_story()
        steps, edited = operation.layout(story)
        seed = seed if seed is not None else random.randint(0, SEED_MAX)
        header = {
            "run_id": f"{run_id}.steer-{secrets.token_hex(3)}",
            "premise": story.premise,
            "scenes": len(story.scenes),
            "seed": seed,
            "config": self.settings.source,
            "created_at": time.time(),
            "story_run": run_id,
            "steered": {**operation.as_dict(), "run": run_id, "base": found.number, "seed": seed},
            "edited": edited,
        }
        meta = {k: v for k, v in kept_meta(story, steps).items() if k.split(".draft")[0] not in edited}
        state = await asyncio.to_thread(self.checkpoints.create, header, steps, meta)
        return await self._execute(state, on_event)

    async def edit_beat(self, run_id: str, index: int, changes: dict[str, Any], **options: Any) -> Version:
        """Change beat `index` (name, purpose, tension, description) and remake the story from it."""
        return await self.steer(run_id, Steer("edit_beat", index, dict(changes)), **options)

    async def regenerate_scene(
        self, run_id: str, index: int, *, reevaluate: bool = True, **options: Any
    ) -> Version:
        """Make scene `index` and its dialogue again (and, by default, the evaluation)."""
        return await self.steer(run_id, Steer("regenerate_scene", index, reevaluate=reevaluate), **options)

    async def regenerate_dialogue(
        self, run_id: str, index: int, *, reevaluate: bool = True, **options: Any
    ) -> Version:
        """Make the dialogue of scene `index` again (and, by default, the evaluation)."""
        op = Steer("regenerate_dialogue", index, reevaluate=reevaluate)
        return await self.steer(run_id, op, **options)

    async def restore(self, run_id: str, number: int) -> Version:
        """Version `number` again as the latest, as a new version (nothing is overwritten)."""
        return await asyncio.to_thread(self.runs.restore, run_id, number)

    async def _execute(self, state: RunState, on_event: OnEvent | None) -> Version:
        """Run the pipeline over `state`, then keep what it made in the run store."""
        header = state.header
        steered = header.get("steered")
        run_id = str(header.get("story_run") or state.run_id)
        if steered is None:
            record = RunRecord(
                run_id,
                header["premise"],
                header.get("scenes"),
                header.get("seed"),
                header.get("provider"),
                created_at=header.get("created_at") or time.time(),
            )
            await asyncio.to_thread(self.runs.start_run, record)
        try:
            story = await _Run(self, state, on_event).execute()
        except RunFailed as exc:
            if steered is None:
                await asyncio.to_thread(self.runs.set_status, run_id, "failed", str(exc))
            raise
        except BaseException as exc:  # cancelled (Ctrl+C, a server stopping) or a bug: not "running"
            if steered is None:
                stopped = isinstance(exc, asyncio.CancelledError | KeyboardInterrupt)
                why = (
                    "stopped before it finished"
                    if stopped
                    else f"internal error: {type(exc).__name__}: {exc}"
                )
                message = f"{why}; continue with: storyengine generate --resume {run_id}"
                await asyncio.to_thread(self.runs.set_status, run_id, "failed", message)
            raise
        if steered is not None:
            return await asyncio.to_thread(
                self.runs.add_version,
                run_id,
                story,
                steered["label"],
                parent=steered["base"],
                seed=steered["seed"],
            )
        return await asyncio.to_thread(self._first_version, run_id, story, header.get("seed"))

    def _first_version(self, run_id: str, story: Story, seed: int | None) -> Version:
        versions = self.runs.versions(run_id)
        if versions:  # a finished run resumed again: it made nothing new
            found = self.runs.version(run_id, versions[-1].number)
        else:
            found = self.runs.add_version(run_id, story, "generated", seed=seed)
        self.runs.set_status(run_id, "done")
        found.story = story
        return found


class _Run:
    """One run of the pipeline over a checkpointed state."""

    def __init__(self, engine: StoryEngine, state: RunState, on_event: OnEvent | None) -> None:
        self.engine = engine
        self.c = engine.components
        self.state = state
        self.on_event = on_event
        self.premise: str = state.header["premise"]
        self.seed: int | None = state.header.get("seed")
        self.started = time.perf_counter()
        self.tokens = 0
        self.semaphore = asyncio.Semaphore(engine.settings.narrative.concurrency.scenes)

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
            return model.model_validate(done) if model else done
        stage = "freeform" if name.endswith(".draft") else "structuring"
        self.emit("step_started", step=component, stage=stage, **info)
        meta = StepMeta(component)
        value = await produce(meta)
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
            return model.model_validate(done)
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
            await asyncio.to_thread(self.state.set_status, "failed", str(exc))
            if runlog is not None:
                runlog.finish_run(self.state.run_id, "failed", str(exc))
            failed = RunFailed(
                f"{exc} — run {self.state.run_id} stopped; every finished step is saved. "
                f"Continue with: storyengine generate --resume {self.state.run_id}",
                run_id=self.state.run_id,
                step=getattr(exc, "component", ""),
                cause=exc,
            )
            self.emit("run_failed", error=str(failed))
            raise failed from exc
        await asyncio.to_thread(self.state.set_status, "done")
        if runlog is not None:
            runlog.finish_run(self.state.run_id, "done", None)
        story.meta["calls"] = [c.model_dump(mode="json") for c in recorder.calls]
        self.emit("run_done")
        return story

    async def _pipeline(self) -> Story:
        wanted = self.state.header.get("scenes")
        seed = self.seed
        plot = await self.two_stages(
            "plot",
            "plot",
            lambda m: self.c.plot_draft(self.premise, wanted, m, call_seed(seed, "plot")),
            lambda draft, m: self.c.plot(self.premise, draft, wanted, m),
            PlotStructure,
        )
        beats = scene_beats(plot, wanted)
        n = len(beats)
        scene_futures: list[asyncio.Future[Scene]] = [
            asyncio.get_running_loop().create_future() for _ in range(n)
        ]
        scene_tasks = [
            asyncio.create_task(self._scene(plot, i, beats[i], n, scene_futures[i])) for i in range(n)
        ]
        dialogue_tasks = [asyncio.create_task(self._dialogue(i, n, scene_futures)) for i in range(n)]
        results = await asyncio.gather(*scene_tasks, *dialogue_tasks, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise next((e for e in errors if isinstance(e, StoryEngineError)), errors[0])
        pairs = zip(results[:n], results[n:], strict=True)
        scenes = [StoryScene(scene=cast(Scene, s), dialogue=cast(Dialogue, d)) for s, d in pairs]
        digest = story_digest(plot, scenes)
        evaluation = await self.two_stages(
            "evaluation",
            "evaluation",
            lambda m: self.c.evaluation_draft(self.premise, digest, m, call_seed(seed, "ev")),
            self.c.evaluation,
            Evaluation,
        )
        enhancement = await self.two_stages(
            "enhancement",
            "enhancement",
            lambda m: self.c.enhancement_draft(self.premise, digest, evaluation, m, call_seed(seed, "en")),
            self.c.enhancement,
            Enhancement,
        )
        meta = {
            "run_id": self.state.run_id,
            "seed": seed,
            "config": self.engine.settings.source,
            "routes": {c: self.engine.settings.narrative.providers.chain(c) for c in COMPONENTS},
            "models": {name: p.model for name, p in self.engine.providers.items()},
            "structuring_strict": self.engine.settings.structuring.strict,
            "steps": self.state.meta,
        }
        if "steered" in self.state.header:
            meta["steered"] = self.state.header["steered"]
        return Story(
            premise=self.premise,
            plot=plot,
            scenes=scenes,
            evaluation=evaluation,
            enhancement=enhancement,
            meta=meta,
        )

    async def _scene(
        self, plot: PlotStructure, i: int, beat: int, n: int, done: asyncio.Future[Scene]
    ) -> Scene:
        try:
            async with self.semaphore:
                scene = await self.two_stages(
                    f"scene.{i}",
                    "scene",
                    lambda m: self.c.scene_draft(
                        self.premise, plot, beat, (i + 1, n), m, call_seed(self.seed, "scene", i)
                    ),
                    lambda draft, m: self.c.scene(plot, beat, draft, m),
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

    async def _dialogue(self, i: int, n: int, scenes: list[asyncio.Future[Scene]]) -> Dialogue:
        earlier = [await f for f in scenes[: i + 1]]
        scene = earlier[-1]
        previous = "\n".join(f"{j}. {scene_text(s)}" for j, s in enumerate(earlier[:-1], 1))
        async with self.semaphore:
            return await self.two_stages(
                f"dialogue.{i}",
                "dialogue",
                lambda m: self.c.dialogue_draft(scene, previous, m, call_seed(self.seed, "dialogue", i)),
                lambda draft, m: self.c.dialogue(scene, draft, m),
                Dialogue,
                index=i + 1,
                total=n,
            )
