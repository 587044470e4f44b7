"""The story's scenes put together: each scene with its dialogue and its prose (made by code).

When the run is a revision, each rewritten scene is kept only where it makes no code measure of
the story worse (pipeline/revision.py); the evaluation and the enhancement read what this keeps.
"""

from __future__ import annotations

from typing import Any

from ...schemas import StoryScene
from .base import RunView, Step


class AssembledStep(Step[Any]):  # its value is a list of scenes, not one model
    name = "story"
    by_code = True

    def needs(self, index: int | None, run: RunView) -> list[str]:
        if not run.made("plot"):  # how many scenes there are is not known yet
            return ["plot"]
        count = run.scene_count()
        return [*(f"scene.{i}" for i in range(count)), *(f"dialogue.{i}" for i in range(count))]

    async def make(self, run: Any) -> list[StoryScene]:
        scenes: list[StoryScene] = await run.assemble_scenes()
        return scenes
