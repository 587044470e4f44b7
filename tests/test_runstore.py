"""The run store: runs and versions on SQLite in the data directory, shared by every process."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from storyengine.config import parse_settings
from storyengine.errors import InputError, ProviderUnavailable, RunFailed
from storyengine.pipeline.engine import StoryEngine
from storyengine.pipeline.runstore import FILENAME, NotFound, RunRecord, RunStore
from storyengine.providers.fake_story import story_script
from storyengine.providers.scripted import ScriptedProvider
from storyengine.schemas import Story
from storyengine.types import CompletionRequest

PREMISE = "A cartographer discovers that her maps redraw themselves overnight."
SETTINGS = """
providers:
  embedded: {type: embedded, context_window: 8192, profile: standard}
retry: {attempts: 1, backoff_initial: 0, backoff_max: 0}
cache: {enabled: false}
"""


def engine_with(script: Any = story_script) -> StoryEngine:
    provider = ScriptedProvider(script, name="embedded", structured_mode="grammar")
    return StoryEngine.from_config(
        settings=parse_settings(SETTINGS, source="test.yaml"), providers={"embedded": provider}
    )


async def some_story() -> Story:
    async with engine_with() as engine:
        return await engine.generate(PREMISE, scenes=1, seed=1)


async def test_generate_records_the_run_and_its_first_version_beside_the_checkpoints() -> None:
    async with engine_with() as engine:
        story = await engine.generate(PREMISE, scenes=2, seed=4, provider="embedded")
    run_id = story.meta["run_id"]
    assert engine.runs.path == engine.checkpoints.directory.parent / FILENAME
    # another process: a store of its own over the same file
    store = RunStore(engine.runs.path)
    run = store.run(run_id)
    assert (run.premise, run.scenes, run.seed, run.provider, run.status, run.error) == (
        PREMISE,
        2,
        4,
        "embedded",
        "done",
        None,
    )
    assert [(v.number, v.label, v.parent, v.seed) for v in run.versions] == [(1, "generated", None, 4)]
    kept = store.version(run_id, 1)
    assert kept.the_story() == story and kept.title == story.plot.title and kept.scenes == 2
    assert [r.id for r in store.runs()] == [run_id]
    mode = sqlite3.connect(engine.runs.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


async def test_a_failed_run_is_recorded_with_its_error_and_its_resume_adds_version_1() -> None:
    healthy = {"on": False}

    def flaky(request: CompletionRequest) -> Any:
        if request.component == "dialogue" and not healthy["on"]:  # a required step
            return ProviderUnavailable("connection refused", provider="embedded")
        return story_script(request)

    async with engine_with(flaky) as engine:
        with pytest.raises(RunFailed) as caught:
            await engine.generate(PREMISE, scenes=1, seed=2)
        run_id = caught.value.run_id
        failed = engine.runs.run(run_id)
        assert failed.status == "failed" and "connection refused" in (failed.error or "")
        assert failed.versions == []
        with pytest.raises(NotFound, match="no story yet"):
            engine.runs.version(run_id)
        healthy["on"] = True
        story = await engine.resume(run_id)
        with pytest.raises(InputError, match="finished; there is nothing to continue"):
            await engine.resume(run_id)  # a finished run is not resumed: nothing new is kept
    run = engine.runs.run(run_id)
    assert run.status == "done" and run.error is None and [v.number for v in run.versions] == [1]
    assert engine.runs.version(run_id).the_story() == story


async def test_versions_are_appended_never_overwritten(tmp_path: Path) -> None:
    story = await some_story()
    store = RunStore(tmp_path / FILENAME)
    store.start_run(RunRecord("r1", PREMISE, 1, 1, None))
    first = store.add_version("r1", story, "generated")
    changed = story.model_copy(update={"premise": "Changed."})
    second = store.add_version("r1", changed, "edited", parent=1, seed=5)
    store.start_run(RunRecord("r1", "another premise", 9, 9, "x"))  # a resume: the run keeps its options
    assert (first.number, second.number) == (1, 2)
    assert store.version("r1", 1).the_story() == story
    assert store.version("r1").the_story().premise == "Changed."
    run = store.run("r1")
    assert (run.premise, run.scenes, run.seed, run.provider) == (PREMISE, 1, 1, None)
    with pytest.raises(NotFound, match="no version 3; it has versions 1 to 2"):
        store.version("r1", 3)
    with pytest.raises(NotFound, match="no run 'r2'"):
        store.run("r2")
    with pytest.raises(NotFound, match="no run 'r2'"):
        store.add_version("r2", story, "orphan")
    assert [v.number for v in store.versions("r1")] == [1, 2]


async def test_concurrent_writers_get_distinct_version_numbers(tmp_path: Path) -> None:
    story = await some_story()
    RunStore(tmp_path / FILENAME).start_run(RunRecord("r", PREMISE))
    numbers: list[int] = []

    def writer() -> None:
        store = RunStore(tmp_path / FILENAME)  # one connection each, as separate processes have
        for _ in range(5):
            numbers.append(store.add_version("r", story, "w").number)
        store.close()

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(numbers) == list(range(1, 21))


async def test_a_cancelled_run_is_recorded_as_stopped_and_resumes() -> None:
    gate = asyncio.Event()
    reached = asyncio.Event()

    async def gated(request: CompletionRequest) -> str:
        if request.component == "dialogue":
            reached.set()
            await gate.wait()
        return story_script(request)

    async with engine_with(gated) as engine:
        task = asyncio.create_task(engine.generate(PREMISE, scenes=1, seed=3, run_id="stopped-run"))
        await reached.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        run = engine.runs.run("stopped-run")
        assert run.status == "failed" and "stopped before it finished" in (run.error or "")
        assert "--resume stopped-run" in (run.error or "")
        gate.set()
        story = await engine.resume("stopped-run")
    assert engine.runs.run("stopped-run").status == "done"
    assert engine.runs.version("stopped-run").the_story() == story
