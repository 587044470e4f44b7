"""Steering: a new story made from an old one by making some of its parts again.

Nothing is changed in place: each operation reads one version's story and returns a new
`Story`, which the caller keeps as a new version. Progress is reported with the same event
shape as a full run (`step_started` / `step_done` with `step`, `index`, `total`, `name`,
`value`, `tokens`, `elapsed`), so the page renders both alike.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from ..errors import InputError
from ..pipeline.engine import StoryEngine
from ..pipeline.story import scene_beats, scene_text
from ..routing.instrument import RunRecorder
from ..schemas import Dialogue, PlotStructure, Scene, Story, StoryScene

Publish = Callable[[dict[str, Any]], None]
TWO_STAGES = "freeform+structuring"  # the `stage` of a steering step: one engine call does both


def edited_plot(plot: PlotStructure, index: int, changes: dict[str, Any]) -> PlotStructure:
    """`plot` with beat `index` changed; InputError when the result is not a valid plot."""
    if not 0 <= index < len(plot.beats):
        raise InputError(f"beat {index} does not exist; this plot has beats 0 to {len(plot.beats) - 1}")
    if not changes:
        raise InputError("give at least one of name, purpose, tension, description to change the beat")
    beats = [beat.model_dump(mode="json") for beat in plot.beats]
    beats[index].update(changes)
    try:
        return PlotStructure.model_validate({**plot.model_dump(mode="json"), "beats": beats})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InputError(f"the edited beat {index} makes an invalid plot: {problems}") from None


def check_scene_index(story: Story, index: int) -> None:
    if not 0 <= index < len(story.scenes):
        raise InputError(f"scene {index} does not exist; this story has scenes 0 to {len(story.scenes) - 1}")


class Steering:
    """One steering job on one story: which parts to make again, with which engine and seed."""

    def __init__(self, engine: StoryEngine, story: Story, run_id: str, publish: Publish, seed: int) -> None:
        self.engine = engine
        self.story = story
        self.publish = publish
        self.seed = seed
        self.recorder = RunRecorder(run_id, engine.runlog)
        self.started = time.perf_counter()

    def emit(self, event: str, **fields: Any) -> None:
        calls = [c for c in self.recorder.records if c.kind == "call"]
        tokens = sum(c.prompt_tokens + c.completion_tokens for c in calls)
        elapsed = round(time.perf_counter() - self.started, 3)
        self.publish({"event": event, "tokens": tokens, "elapsed": elapsed, **fields})

    # -- the operations --
    async def from_beat(self, plot: PlotStructure, index: int) -> Story:
        """Use `plot` (beat `index` edited) and make again every scene realising beat `index` or later."""
        self.emit("step_done", step="plot", stage="edited", name="plot", value=plot.model_dump(mode="json"))
        beats = scene_beats(plot, len(self.story.scenes))
        again = {j for j, beat in enumerate(beats) if beat >= index}
        note = {"operation": "edit_beat", "beat": index}
        return await self._remake(plot, again, again, reevaluate=True, note=note)

    async def scene(self, index: int, *, reevaluate: bool = True) -> Story:
        """Make scene `index` again, and its dialogue (the old lines belong to the old scene)."""
        note = {"operation": "regenerate_scene", "scene": index}
        return await self._remake(self.story.plot, {index}, {index}, reevaluate=reevaluate, note=note)

    async def dialogue(self, index: int, *, reevaluate: bool = True) -> Story:
        note = {"operation": "regenerate_dialogue", "scene": index}
        return await self._remake(self.story.plot, set(), {index}, reevaluate=reevaluate, note=note)

    # -- the work --
    async def _remake(
        self,
        plot: PlotStructure,
        scenes: set[int],
        dialogues: set[int],
        *,
        reevaluate: bool,
        note: dict[str, Any],
    ) -> Story:
        with self.recorder.active():
            story = await self._remake_parts(plot, scenes, dialogues, reevaluate)
        meta = {k: v for k, v in self.story.meta.items() if k not in ("calls", "steps")}
        meta["calls"] = [c.model_dump(mode="json") for c in self.recorder.calls]
        meta["steered"] = {**note, "seed": self.seed, "reevaluated": reevaluate}
        return story.model_copy(update={"meta": meta})

    async def _remake_parts(
        self, plot: PlotStructure, scenes: set[int], dialogues: set[int], reevaluate: bool
    ) -> Story:
        old = self.story
        total = len(old.scenes)
        beats = scene_beats(plot, total)
        limit = asyncio.Semaphore(self.engine.settings.narrative.concurrency.scenes)

        async def scene(j: int) -> Scene:
            return await self._step(
                "scene", j, total, limit, lambda: self.engine.scene(old.premise, plot, beats[j], self.seed)
            )

        made = await asyncio.gather(*(scene(j) for j in sorted(scenes)))
        new_scenes = [item.scene for item in old.scenes]
        for j, made_scene in zip(sorted(scenes), made, strict=True):
            new_scenes[j] = made_scene

        async def dialogue(j: int) -> Dialogue:
            previous = "\n".join(f"{k}. {scene_text(s)}" for k, s in enumerate(new_scenes[:j], 1))
            return await self._step(
                "dialogue",
                j,
                total,
                limit,
                lambda: self.engine.dialogue(new_scenes[j], previous, self.seed),
            )

        lines = await asyncio.gather(*(dialogue(j) for j in sorted(dialogues)))
        new_dialogues = [item.dialogue for item in old.scenes]
        for j, made_dialogue in zip(sorted(dialogues), lines, strict=True):
            new_dialogues[j] = made_dialogue
        items = [StoryScene(scene=s, dialogue=d) for s, d in zip(new_scenes, new_dialogues, strict=True)]

        evaluation, enhancement = old.evaluation, old.enhancement
        if reevaluate:
            evaluation = await self._step(
                "evaluation", None, None, None, lambda: self.engine.evaluate(old.premise, plot, items)
            )
            enhancement = await self._step(
                "enhancement",
                None,
                None,
                None,
                lambda: self.engine.enhance(old.premise, plot, items, evaluation),
            )
        return Story(
            premise=old.premise,
            plot=plot,
            scenes=items,
            evaluation=evaluation,
            enhancement=enhancement,
            meta={},
        )

    async def _step(
        self,
        component: str,
        index: int | None,
        total: int | None,
        limit: asyncio.Semaphore | None,
        produce: Callable[[], Awaitable[Any]],
    ) -> Any:
        where: dict[str, Any] = {} if index is None else {"index": index + 1, "total": total}
        name = component if index is None else f"{component}.{index}"
        if limit is not None:
            await limit.acquire()
        try:
            self.emit("step_started", step=component, stage=TWO_STAGES, **where)
            value = await produce()
        finally:
            if limit is not None:
                limit.release()
        self.emit(
            "step_done",
            step=component,
            stage=TWO_STAGES,
            name=name,
            value=value.model_dump(mode="json"),
            **where,
        )
        return value
