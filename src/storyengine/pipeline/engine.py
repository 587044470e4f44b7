"""StoryEngine: premise -> plot -> scenes -> dialogue -> evaluation -> enhancement -> Story.

Ordering and concurrency: the plot first; then every scene (stage 1 and its own stage 2)
under a semaphore of `narrative.concurrency.scenes`; dialogue i starts once scenes 1..i are
structured (it is told what happened before, and what it is told must not depend on
timing, so reruns are deterministic); evaluation and enhancement last. Each finished stage
is checkpointed at once; a failure keeps everything finished and says how to resume.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from pydantic import BaseModel

from ..budget import Budget
from ..config import COMPONENTS, Settings, load_settings, secret_values
from ..errors import InputError, RunFailed, StoryEngineError
from ..failures import InvalidOutputLog
from ..prompts.render import warm as warm_templates
from ..providers.base import Provider
from ..routing.base import Generator
from ..routing.instrument import RunRecorder
from ..schemas import Dialogue, Enhancement, Evaluation, PlotStructure, Scene, Story, StoryScene
from .checkpoint import CheckpointStore, RunState, new_run_id
from .story import Components, call_seed, scene_beats, scene_text, story_digest
from .twostage import StepMeta, TwoStage

M = TypeVar("M", bound=BaseModel)
Event = dict[str, Any]
OnEvent = Callable[[Event], None]

MAX_PREMISE_CHARS = 4000
MAX_SCENES = 24


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
        router: Generator,
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
        self.checkpoints = checkpoints or CheckpointStore(settings.runlog_path.parent / "checkpoints")
        self.invalid_log = invalid_log or InvalidOutputLog(
            settings.log_dir / "invalid_json",
            max_files=settings.logging.invalid_json_max_files,
            max_bytes=settings.logging.invalid_json_max_bytes,
            secrets=secret_values(),
        )
        stages = TwoStage(
            router, settings, self._budgets(), self._modes(), self.invalid_log, in_parts=self._in_parts()
        )
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
        from ..routing.router import Router

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

    def _chain(self, component: str) -> list[Provider]:
        return [self.providers[name] for name in self.settings.narrative.providers.chain(component)]

    def _budgets(self) -> dict[str, Budget]:
        budgets = {}
        for component in COMPONENTS:
            chain = self._chain(component)
            window = min(p.context_window for p in chain)
            budgets[component] = Budget(
                window, max(chain, key=lambda p: p.count_tokens("x" * 400)).count_tokens
            )
        return budgets

    def _in_parts(self) -> dict[str, bool]:
        routes = self.settings.narrative.providers
        return {c: self.settings.providers[routes.chain(c)[0]].structure_in_parts for c in COMPONENTS}

    def _modes(self) -> dict[str, str]:
        return {c: self._chain(c)[0].structured_mode for c in COMPONENTS}

    # -- one component at a time --
    async def plot(self, premise: str, beats: int | None = None, seed: int | None = None) -> PlotStructure:
        premise = check_inputs(premise, beats)
        meta = StepMeta("plot")
        draft = await self.components.plot_draft(premise, beats, meta, call_seed(seed, "plot"))
        return await self.components.plot(premise, draft, beats, meta)

    async def scene(self, premise: str, plot: PlotStructure, index: int, seed: int | None = None) -> Scene:
        """The scene that realises beat `index` of `plot`."""
        meta = StepMeta("scene")
        number = (index + 1, len(plot.beats))
        draft = await self.components.scene_draft(
            premise, plot, index, number, meta, call_seed(seed, "scene", index)
        )
        return await self.components.scene(plot, index, draft, meta)

    async def dialogue(self, scene: Scene, previous: str = "", seed: int | None = None) -> Dialogue:
        meta = StepMeta("dialogue")
        draft = await self.components.dialogue_draft(scene, previous, meta, call_seed(seed, "dialogue"))
        return await self.components.dialogue(scene, draft, meta)

    async def evaluate(self, premise: str, plot: PlotStructure, scenes: list[StoryScene]) -> Evaluation:
        meta = StepMeta("evaluation")
        draft = await self.components.evaluation_draft(premise, story_digest(plot, scenes), meta, None)
        return await self.components.evaluation(draft, meta)

    async def enhance(
        self, premise: str, plot: PlotStructure, scenes: list[StoryScene], evaluation: Evaluation
    ) -> Enhancement:
        meta = StepMeta("enhancement")
        digest = story_digest(plot, scenes)
        draft = await self.components.enhancement_draft(premise, digest, evaluation, meta, None)
        return await self.components.enhancement(draft, meta)

    # -- the whole story --
    async def generate(
        self,
        premise: str,
        scenes: int | None = None,
        seed: int | None = None,
        *,
        run_id: str | None = None,
        on_event: OnEvent | None = None,
    ) -> Story:
        premise = check_inputs(premise, scenes)
        header = {
            "run_id": run_id or new_run_id(),
            "premise": premise,
            "scenes": scenes,
            "seed": seed,
            "config": self.settings.source,
            "created_at": time.time(),
        }
        state = self.checkpoints.create(header)
        return await _Run(self, state, on_event).execute()

    async def resume(self, run_id: str, *, on_event: OnEvent | None = None) -> Story:
        state = self.checkpoints.load(run_id)
        return await _Run(self, state, on_event).execute()

    def batch(self, premises: Any, **options: Any) -> Any:
        """An async iterator of `storyengine.batch.BatchResult`s as stories end (see `run_batch`)."""
        from ..batch.runner import run_batch

        return run_batch(self, premises, **options)


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
        self.state.put(name, dumped, meta.as_dict())
        self.emit("step_done", step=component, stage=stage, name=name, value=dumped, **info)
        return value

    async def execute(self) -> Story:
        self.emit("run_started", premise=self.premise)
        # The first render of a template starts Node (~1 s each): do them off the event loop.
        await asyncio.to_thread(warm_templates)
        runlog = self.engine.runlog
        recorder = RunRecorder(self.state.run_id, runlog)
        if runlog is not None:
            runlog.start_run(self.state.run_id, self.premise, dict(self.state.header))
        try:
            with recorder.active():
                story = await self._pipeline()
        except StoryEngineError as exc:
            self.state.set_status("failed", str(exc))
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
        self.state.set_status("done")
        if runlog is not None:
            runlog.finish_run(self.state.run_id, "done", None)
        story.meta["calls"] = [c.model_dump(mode="json") for c in recorder.calls]
        self.emit("run_done")
        return story

    async def _pipeline(self) -> Story:
        wanted = self.state.header.get("scenes")
        seed = self.seed
        draft = await self.step(
            "plot.draft",
            "plot",
            lambda m: self.c.plot_draft(self.premise, wanted, m, call_seed(seed, "plot")),
        )
        plot: PlotStructure = await self.step(
            "plot", "plot", lambda m: self.c.plot(self.premise, draft, wanted, m), PlotStructure
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
        ev_draft = await self.step(
            "evaluation.draft",
            "evaluation",
            lambda m: self.c.evaluation_draft(self.premise, digest, m, call_seed(seed, "ev")),
        )
        evaluation = await self.step(
            "evaluation", "evaluation", lambda m: self.c.evaluation(ev_draft, m), Evaluation
        )
        en_draft = await self.step(
            "enhancement.draft",
            "enhancement",
            lambda m: self.c.enhancement_draft(self.premise, digest, evaluation, m, call_seed(seed, "en")),
        )
        enhancement = await self.step(
            "enhancement", "enhancement", lambda m: self.c.enhancement(en_draft, m), Enhancement
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
                draft = await self.step(
                    f"scene.{i}.draft",
                    "scene",
                    lambda m: self.c.scene_draft(
                        self.premise, plot, beat, (i + 1, n), m, call_seed(self.seed, "scene", i)
                    ),
                    index=i + 1,
                    total=n,
                )
                scene: Scene = await self.step(
                    f"scene.{i}",
                    "scene",
                    lambda m: self.c.scene(plot, beat, draft, m),
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
            draft = await self.step(
                f"dialogue.{i}.draft",
                "dialogue",
                lambda m: self.c.dialogue_draft(scene, previous, m, call_seed(self.seed, "dialogue", i)),
                index=i + 1,
                total=n,
            )
            return await self.step(
                f"dialogue.{i}",
                "dialogue",
                lambda m: self.c.dialogue(scene, draft, m),
                Dialogue,
                index=i + 1,
                total=n,
            )
