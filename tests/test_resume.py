"""A resume never repeats a failure identically, and says what it does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from storyengine.config import parse_settings
from storyengine.errors import InputError, RunFailed
from storyengine.pipeline.engine import StoryEngine
from storyengine.pipeline.story import call_seed
from storyengine.providers.fake_story import story_script
from storyengine.providers.scripted import ScriptedProvider
from storyengine.types import CompletionRequest

PREMISE = "A clockmaker builds a clock that runs backwards."


def engine_for(script: Any, tmp_path: Path, profile: str) -> StoryEngine:
    settings = parse_settings(
        f"""
providers:
  embedded: {{type: embedded, profile: {profile}}}
retry: {{attempts: 2, backoff_initial: 0, backoff_max: 0}}
logging: {{runlog: {tmp_path / "runs.sqlite3"}, dir: {tmp_path / "logs"}}}
cache: {{enabled: false}}
"""
    )
    provider = ScriptedProvider(script, name="embedded", structured_mode="grammar")
    return StoryEngine.from_config(settings=settings, providers={"embedded": provider})


def key(request: CompletionRequest) -> str:
    return json.dumps([[m.role, m.content] for m in request.messages]) + json.dumps(
        request.params(), default=str
    )


@pytest.mark.parametrize("profile", ["standard", "tiny"])
async def test_a_resume_asks_the_failed_step_differently_and_finishes(tmp_path: Path, profile: str) -> None:
    failed: set[str] = set()
    first_run = {"on": True}
    resumed: list[CompletionRequest] = []

    def script(request: CompletionRequest) -> Any:
        if not first_run["on"]:
            resumed.append(request)
        if request.component == "evaluation" and request.stage == "structuring":
            if first_run["on"] or key(request) in failed:  # a repeated call fails as it did before
                failed.add(key(request))
                return '{ "score":10, "rationale":"Aclockmaker }'
        return story_script(request)

    async with engine_for(script, tmp_path, profile) as engine:
        with pytest.raises(RunFailed) as caught:
            await engine.generate(PREMISE, scenes=1, seed=1)
        message = str(caught.value)
        assert "stopped at step evaluation" in message and "--resume" in message
        first_run["on"] = False
        story = await engine.resume(caught.value.run_id)
    assert failed and not {key(r) for r in resumed} & failed
    # Finished steps were not made again: only the evaluation (drawn again) and what follows it.
    assert {r.component for r in resumed} <= {"evaluation", "enhancement"}
    steps = story.meta["steps"]
    assert steps["evaluation.draft"]["round"] == 1 and steps["plot.draft"]["round"] == 0
    assert steps["evaluation.draft"]["seed"] != story.meta["steps"].get("plot.draft", {}).get("seed")


async def test_a_finished_run_is_not_resumed_and_nothing_is_overwritten(tmp_path: Path) -> None:
    async with engine_for(story_script, tmp_path, "standard") as engine:
        story = await engine.generate(PREMISE, scenes=1, seed=3)
        run_id = story.meta["run_id"]
        checkpoint = engine.checkpoints.path(run_id)
        before = checkpoint.read_bytes()
        with pytest.raises(InputError, match="finished"):
            await engine.resume(run_id)
        assert checkpoint.read_bytes() == before
        with pytest.raises(InputError, match="no run"):
            await engine.resume("20990101-000000-abcdef")


async def test_a_resume_with_another_seed_changes_only_the_steps_not_made_yet(tmp_path: Path) -> None:
    broken = {"on": True}

    def script(request: CompletionRequest) -> Any:
        if request.component == "dialogue" and broken["on"]:
            return "not json"
        return story_script(request)

    async with engine_for(script, tmp_path, "standard") as engine:
        with pytest.raises(RunFailed) as caught:
            await engine.generate(PREMISE, scenes=1, seed=1)
        broken["on"] = False
        story = await engine.resume(caught.value.run_id, seed=9)
    steps = story.meta["steps"]
    assert story.meta["seed"] == 9
    assert steps["plot.draft"]["seed"] == call_seed(1, "plot")  # made before: kept
    assert steps["dialogue.0.draft"]["seed"] == call_seed(9, "dialogue", 0, "round", 1)
    assert steps["dialogue.0.draft"]["round"] == 1 and steps["scene.0.draft"]["round"] == 0


async def test_an_exception_outside_the_error_tree_still_marks_the_run_failed(tmp_path: Path) -> None:
    from storyengine.runlog import RunLog

    def script(request: CompletionRequest) -> Any:
        if request.component == "scene":
            return RuntimeError("a bug deep inside a provider")
        return story_script(request)

    async with engine_for(script, tmp_path, "standard") as engine:
        with pytest.raises(RuntimeError):
            await engine.generate(PREMISE, scenes=1, seed=1, run_id="run-with-a-bug")
        state = engine.checkpoints.load("run-with-a-bug")
    assert state.header["status"] == "failed" and "RuntimeError" in state.header["error"]
    (run,) = [r for r in RunLog(tmp_path / "runs.sqlite3").runs() if r.id == "run-with-a-bug"]
    assert run.status == "failed" and "a bug deep inside" in (run.error or "")
