"""StoryEngine: premise -> plot -> scenes -> dialogue -> evaluation -> enhancement -> Story.

The one run engine's public face. Every way of making or changing a story is an operation
here: `generate` (or `open_run` then `write_run`), `resume`, `story_of_run` (a batch's story,
whichever way it was left), steering (`steer`, `edit_beat`, `regenerate_scene`, `revise`, ...),
and one step alone (`step`, and its short forms `plot`, `scene`, ... with the seeds and numbering
of `generate`). Each runs the same pipeline (pipeline/run.py) over a checkpointed state; stories
are kept in the run store. No caller reads a checkpoint: the engine does.
"""

from __future__ import annotations

import asyncio
import secrets
from functools import cached_property
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar

from pydantic import BaseModel

from ..bible import StoryBible
from ..config import COMPONENTS, Settings, load_settings
from ..errors import InputError, RunFailed
from ..providers.base import Provider
from ..routing.router import Router
from ..schemas import Dialogue, Enhancement, Evaluation, PlotStructure, Scene, Story, StoryScene
from ..seeds import fresh_seed
from .checkpoint import CheckpointStore, RunHeader, RunState, checkpoint_dir, new_run_id, resume_command
from .inputs import DEFAULT_SCENES_PER_CHAPTER, check_inputs
from .revision import plan_revision
from .rounds import next_round, total_scenes
from .run import OnEvent, StoryRun
from .runstore import NotFound, RunRecord, RunStore, Version
from .steering import Steer, kept_meta
from .steps import STEPS, Inputs
from .twostage import TwoStage

M = TypeVar("M", bound=BaseModel)


class Made(NamedTuple, Generic[M]):
    """A component's value and the metadata of its steps, named as in a run ("plot.draft", "plot")."""

    value: M
    meta: dict[str, dict[str, Any]]


def scene_inputs(premise: str, plot: PlotStructure, index: int, bible: StoryBible | None) -> Inputs:
    """What scene `index` of a story with one scene per beat is made from; InputError for no such beat."""
    if not 0 <= index < len(plot.beats):
        raise InputError(f"beat {index} does not exist; this plot has beats 0 to {len(plot.beats) - 1}")
    return Inputs(premise=premise, plot=plot, bible=bible, beat=index, number=(index + 1, len(plot.beats)))


class StoryEngine:
    def __init__(
        self,
        settings: Settings,
        router: Router,
        providers: dict[str, Provider],
        *,
        checkpoints: CheckpointStore | None = None,
        runlog: Any = None,
    ) -> None:
        self.settings = settings
        self.router = router
        self.providers = providers
        self.runlog = runlog
        self.instrumentation = router.instrumentation  # every record of a run goes through it
        self.checkpoints = checkpoints or CheckpointStore(checkpoint_dir(settings))
        self.stages = TwoStage(router, settings)

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

    # -- one step at a time (the seeds and numbering of `generate`) --
    async def step(
        self, name: str, x: Inputs, *, seed: int | None = None, index: int | None = None
    ) -> Made[Any]:
        """Step `name` alone ("plot", "scene", ...; `index`: which scene), made from `x` as `generate`
        makes it with `seed` (the same seeds by the step's key), run and checkpointed by `StoryRun`
        as a run of its own; its value and the metadata of its stages ("scene.2.draft", "scene.2")."""
        found = STEPS.get(name)
        if found is None or found.by_code:
            made_by_models = ", ".join(n for n, s in STEPS.items() if not s.by_code)
            raise InputError(f"no step {name!r}; the steps are {made_by_models}")
        indexed = found.per_scene or found.per_chapter
        if indexed != (index is not None):
            what = "a chapter" if found.per_chapter else "a scene"
            raise InputError(f"step {name} {'needs' if indexed else 'takes no'} {what} index")
        key = found.key(index)
        header = RunHeader(
            run_id=new_run_id(), premise=x.premise, seed=seed, config=self.settings.source, step=key
        )
        state = await asyncio.to_thread(self.checkpoints.create, header)
        try:
            value = await StoryRun(self, state, None).two_stages(found, key, x)
        except BaseException as exc:  # its checkpoint says so; the caller gets the error itself
            await asyncio.shield(
                asyncio.to_thread(state.set_status, "failed", f"{type(exc).__name__}: {exc}")
            )
            raise
        await asyncio.to_thread(state.set_status, "done")
        return Made(value, dict(state.meta))

    async def plot(self, premise: str, beats: int | None = None, seed: int | None = None) -> PlotStructure:
        """The plot as `generate(premise, scenes=beats, seed=seed)` makes it."""
        premise = check_inputs(premise, beats)
        return (await self.step("plot", Inputs(premise=premise, beats=beats), seed=seed)).value

    async def bible(self, premise: str, plot: PlotStructure, seed: int | None = None) -> StoryBible:
        """The story bible of `plot`: its people (name, role, description, pronouns), setting, facts."""
        premise = check_inputs(premise, None)
        return (await self.step("bible", Inputs(premise=premise, plot=plot), seed=seed)).value

    async def scene(
        self,
        premise: str,
        plot: PlotStructure,
        index: int,
        seed: int | None = None,
        bible: StoryBible | None = None,
    ) -> Scene:
        """The scene that realises beat `index` of `plot` ("scene index+1 of len(beats)"), its cast
        from `bible` when given."""
        return (
            await self.step("scene", scene_inputs(premise, plot, index, bible), seed=seed, index=index)
        ).value

    async def dialogue(
        self,
        scene: Scene,
        previous: str = "",
        seed: int | None = None,
        index: int = 0,
        bible: StoryBible | None = None,
    ) -> Dialogue:
        """The dialogue of scene `index` (0 for a lone scene), `previous` being the scenes before it."""
        x = Inputs(scene=scene, previous=previous, bible=bible)
        return (await self.step("dialogue", x, seed=seed, index=index)).value

    async def evaluate(
        self, premise: str, plot: PlotStructure, scenes: list[StoryScene], seed: int | None = None
    ) -> Evaluation:
        x = Inputs(premise=premise, plot=plot, scenes=tuple(scenes))
        return (await self.step("evaluation", x, seed=seed)).value

    async def enhance(
        self,
        premise: str,
        plot: PlotStructure,
        scenes: list[StoryScene],
        evaluation: Evaluation,
        seed: int | None = None,
        bible: StoryBible | None = None,
    ) -> Enhancement:
        """The suggestions for the story, each aimed at one of its scenes or people (its bible's)."""
        x = Inputs(premise=premise, plot=plot, bible=bible, scenes=tuple(scenes), evaluation=evaluation)
        return (await self.step("enhancement", x, seed=seed)).value

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
        chapters: int | None = None,
        scenes_per_chapter: int | None = None,
    ) -> Story:
        """Write a story; the run and (once finished) its version 1 are kept in `self.runs`. A long
        story has `chapters` (the plot is its outline) of `scenes_per_chapter` scenes each."""
        record = await self.open_run(
            premise,
            scenes,
            seed,
            run_id=run_id,
            provider=provider,
            chapters=chapters,
            scenes_per_chapter=scenes_per_chapter,
        )
        return (await self.write_run(record.id, on_event=on_event)).the_story()

    async def open_run(
        self,
        premise: str,
        scenes: int | None = None,
        seed: int | None = None,
        *,
        run_id: str | None = None,
        provider: str | None = None,
        chapters: int | None = None,
        scenes_per_chapter: int | None = None,
    ) -> RunRecord:
        """A new run, checked, checkpointed and listed in the run store (status "running") before any
        model call; `write_run` writes it (the web app answers with the run at once this way)."""
        premise = check_inputs(premise, scenes, chapters, scenes_per_chapter)
        if chapters is not None:
            scenes_per_chapter = scenes_per_chapter or DEFAULT_SCENES_PER_CHAPTER
        header = RunHeader(
            run_id=run_id or new_run_id(),
            premise=premise,
            scenes=scenes,
            chapters=chapters,
            scenes_per_chapter=scenes_per_chapter,
            seed=seed,
            provider=provider,
            config=self.settings.source,
        )
        await asyncio.to_thread(self.runs.open)
        if run_id is None:
            while await asyncio.to_thread(self.runs.exists, header.run_id):  # the run store is wider
                header.run_id = new_run_id()
        state = await asyncio.to_thread(self.checkpoints.create, header)
        record = RunRecord(
            state.run_id, premise, total_scenes(header), seed, provider, created_at=state.header.created_at
        )
        await asyncio.to_thread(self.runs.start_run, record)
        return record

    async def write_run(self, run_id: str, *, on_event: OnEvent | None = None) -> Version:
        """Write run `run_id`, opened by `open_run`: the pipeline over its checkpoint; its version 1."""
        state = await asyncio.to_thread(self.checkpoints.load, run_id)
        if state.header.status != "running" or state.steps:
            raise InputError(f"run {run_id} was written before; resume it to continue")
        return await self._execute(state, on_event)

    async def story_of_run(
        self,
        run_id: str,
        premise: str,
        scenes: int | None = None,
        seed: int | None = None,
        *,
        chapters: int | None = None,
        scenes_per_chapter: int | None = None,
    ) -> Story:
        """The story of run `run_id`: the one it finished with, else its resume when it stopped, else a
        new run of `premise` under that id (a batch's story, whichever way it was left). A run kept
        with another chapter count is an InputError (its chapters were planned for that count)."""
        if not await asyncio.to_thread(self.checkpoints.path(run_id).exists):
            return await self.generate(
                premise,
                scenes=scenes,
                seed=seed,
                run_id=run_id,
                chapters=chapters,
                scenes_per_chapter=scenes_per_chapter,
            )
        state = await asyncio.to_thread(self.checkpoints.load, run_id)
        kept = (state.header.chapters, state.header.scenes_per_chapter if state.header.chapters else None)
        if chapters is not None and kept != (chapters, scenes_per_chapter or DEFAULT_SCENES_PER_CHAPTER):
            raise InputError(
                f"run {run_id} was written with {kept[0] or 'no'} chapters of {kept[1] or '-'} scenes, "
                f"not {chapters} of {scenes_per_chapter or DEFAULT_SCENES_PER_CHAPTER}; give it its own "
                "count, or another id for a new story"
            )
        if state.header.status == "done" and await asyncio.to_thread(self._kept, state):
            return (await asyncio.to_thread(self.runs.version, run_id)).the_story()  # not yet written out
        return await self.resume(run_id)

    def _kept(self, state: RunState) -> bool:
        """Whether the run store has the story of run `state` (a steering job: of the run it steers)."""
        if state.header.story_run is not None:
            return True
        try:
            return bool(self.runs.versions(state.run_id))
        except NotFound:  # stopped before the run store listed it
            return False

    @staticmethod
    def provider_of_run(settings: Settings, run_id: str) -> str | None:
        """The provider run `run_id` was made with (`--provider`), when `settings` still defines it
        (gone: None, and `resume` says so); InputError for a run `settings` has no checkpoint of."""
        recorded = CheckpointStore(checkpoint_dir(settings)).load(run_id).header.provider
        return recorded if recorded in settings.providers else None

    async def resume(
        self,
        run_id: str,
        *,
        on_event: OnEvent | None = None,
        seed: int | None = None,
        provider: str | None = None,
    ) -> Story:
        """Continue a stopped run (or steering job) from its checkpoint.

        Finished steps are not made again. The rest is asked as a new round (other derived seeds;
        the draft of a structuring step that failed is drawn again), so a resume never repeats
        the calls that failed. A run that finished is not resumed (InputError). `seed` (and the
        `provider` this engine routes to, recorded) change the steps not made yet."""
        state = await asyncio.to_thread(self.checkpoints.load, run_id)
        recorded = state.header.provider
        if recorded and not provider:
            self._check_routed_to(recorded, run_id)
        if state.header.status == "done":
            if await asyncio.to_thread(self._kept, state):
                raise InputError(
                    f"run {run_id} finished; there is nothing to continue (its story is kept in the run "
                    "store: `storyengine serve` shows every version; steer it there to make another)"
                )
            # Stopped between its last step and keeping its story: every step is in the checkpoint,
            # so the story is put together again, with no model call, and kept.
            return (await self._execute(state, on_event)).the_story()
        if seed is not None:
            state.header.seed = seed
        if provider:
            state.header.provider = provider
        await asyncio.to_thread(next_round, state, self.settings.narrative.providers.chain)
        return (await self._execute(state, on_event)).the_story()

    def _check_routed_to(self, recorded: str, run_id: str) -> None:
        """InputError unless this engine routes every component to `recorded`, the provider the run
        was made with (`--provider`): a resume must not move to other models without being told."""
        source = self.settings.source
        if recorded not in self.settings.providers:
            raise InputError(
                f"run {run_id} was made with provider {recorded!r}, which {source} no longer configures "
                f"(configured: {', '.join(sorted(self.settings.providers))}); add it back, or resume "
                "with --provider NAME to continue on another"
            )
        routes = self.settings.narrative.providers
        if any(routes.chain(c) != [recorded] for c in COMPONENTS):
            raise InputError(
                f"run {run_id} was made with provider {recorded!r}; resume it with --provider "
                f"{recorded} (or name another to continue on it)"
            )

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
        seed = seed if seed is not None else fresh_seed()
        chapters = story.chapters
        header = RunHeader(
            run_id=f"{run_id}.steer-{secrets.token_hex(3)}",
            premise=story.premise,
            scenes=None if chapters else len(story.scenes),
            chapters=len(chapters) if chapters else None,
            scenes_per_chapter=len(chapters[0].beats) if chapters else None,
            seed=seed,
            config=self.settings.source,
            story_run=run_id,
            steered={**operation.as_dict(), "run": run_id, "base": found.number, "seed": seed},
            edited=edited,
        )
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

    async def revise(
        self,
        run_id: str,
        *,
        base: int | None = None,
        seed: int | None = None,
        provider: str | None = None,
        on_event: OnEvent | None = None,
    ) -> Version:
        """Apply the enhancement's suggestions of version `base` (default: the latest) as a new version.

        The scenes the suggestions target are rewritten (pipeline/revision.py); a rewritten scene is
        kept only where it makes no code-computed measure of the story worse. The new version's
        `meta["revision"]` says what was applied, what targeted nothing, which scenes kept their
        earlier version and why, and the story's measures before and after. InputError (nothing
        written) for an unknown run or version, a version without suggestions, suggestions that
        target nothing, or a run whose providers this configuration no longer has (`provider`:
        the one this engine was built to route to instead, as the CLI's --provider)."""
        found = await asyncio.to_thread(self.runs.version, run_id, base)
        operation = self.revision_of(found, provider=provider)
        return await self.steer(run_id, operation, base=found.number, seed=seed, on_event=on_event)

    def revision_of(self, found: Version, *, provider: str | None = None) -> Steer:
        """The steering operation that revises version `found` (see `revise`); InputError otherwise."""
        story = found.the_story()
        label = f"version {found.number} of run {found.run_id}"
        revision = plan_revision(story, label=label)
        if provider is None:
            routes = story.meta.get("routes") or {}
            gone = sorted({p for chain in routes.values() for p in chain} - set(self.settings.providers))
            if gone:
                raise InputError(
                    f"{label} was written with provider(s) {', '.join(gone)}, which {self.settings.source} "
                    "no longer configures; add them back, or revise with --provider NAME"
                )
        earlier = {str(i): story.scenes[i].model_dump(mode="json") for i in revision.changes}
        changes = {"revision": revision.as_dict(), "earlier": earlier}
        return Steer("revise", min(revision.changes), changes)

    async def edit_bible(self, run_id: str, bible: dict[str, Any], **options: Any) -> Version:
        """Replace the story bible and make again the scenes that depend on what changed."""
        return await self.steer(run_id, Steer("edit_bible", 0, {"bible": bible}), **options)

    async def restore(self, run_id: str, number: int) -> Version:
        """Version `number` again as the latest, as a new version (nothing is overwritten)."""
        return await asyncio.to_thread(self.runs.restore, run_id, number)

    async def _execute(self, state: RunState, on_event: OnEvent | None) -> Version:
        """Run the pipeline over `state`, then keep what it made in the run store."""
        header = state.header
        steered = header.steered
        run_id = header.story_run or state.run_id
        if steered is None:
            record = RunRecord(
                run_id,
                header.premise,
                total_scenes(header),
                header.seed,
                header.provider,
                created_at=header.created_at,
            )
            await asyncio.to_thread(self.runs.start_run, record)
        try:
            story = await StoryRun(self, state, on_event).execute()
            if steered is not None:
                return await asyncio.to_thread(
                    self.runs.add_version,
                    run_id,
                    story,
                    steered["label"],
                    parent=steered["base"],
                    seed=steered["seed"],
                )
            return await asyncio.to_thread(self._first_version, run_id, story, header.seed)
        except RunFailed as exc:
            if steered is None:
                await asyncio.to_thread(self.runs.set_status, run_id, "failed", str(exc))
            raise
        except BaseException as exc:  # cancelled (Ctrl+C, a server stopping) or a bug: not "running"
            if steered is None:  # (stopped before its story was kept: a resume keeps it, no model call)
                stopped = isinstance(exc, asyncio.CancelledError | KeyboardInterrupt)
                why = (
                    "stopped before it finished"
                    if stopped
                    else f"internal error: {type(exc).__name__}: {exc}"
                )
                message = f"{why}; continue with: {resume_command(run_id, self.settings)}"
                await asyncio.shield(asyncio.to_thread(self.runs.set_status, run_id, "failed", message))
            raise

    def _first_version(self, run_id: str, story: Story, seed: int | None) -> Version:
        """Version 1 of a run; a resume that filled a story's gaps adds the completed story."""
        versions = self.runs.versions(run_id)
        if not versions:
            found = self.runs.add_version(run_id, story, "generated", seed=seed)
        elif self.runs.version(run_id, versions[-1].number).the_story().gaps and not story.gaps:
            found = self.runs.add_version(run_id, story, "completed", parent=versions[-1].number, seed=seed)
        else:  # nothing new
            found = self.runs.version(run_id, versions[-1].number)
        self.runs.set_status(run_id, "done")
        found.story = story
        return found
