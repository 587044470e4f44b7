"""The run store: runs and versions on SQLite in the data directory, shared by every process."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from storyengine.config import parse_settings
from storyengine.errors import InputError, ProviderUnavailable, RunFailed, StoryEngineError
from storyengine.pipeline import runstore
from storyengine.pipeline.engine import StoryEngine
from storyengine.pipeline.runstore import FILENAME, DamagedStore, NotFound, RunRecord, RunStore
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


# -- a damaged or lost store; runs whose process died --


def filled_store(path: Path, runs: int = 200) -> None:
    """A store of `runs` runs, closed (its write-ahead log folded into the file)."""
    store = RunStore(path)
    for i in range(runs):
        store.start_run(RunRecord(f"r{i}", f"premise {i} " + "x" * 2000))
        store.set_status(f"r{i}", "done")
    store.close()


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_store_names_its_file_and_what_to_do(tmp_path: Path, damage: str) -> None:
    path = tmp_path / FILENAME
    filled_store(path)
    if damage == "truncated":
        with path.open("r+b") as file:
            file.truncate(path.stat().st_size // 2)
    else:
        path.write_bytes(b"\x00not a database\xff" * 500)
    store = RunStore(path)
    with pytest.raises(DamagedStore) as caught:
        store.runs()
    message = str(caught.value)
    assert str(path) in message and "move it" in message and "a new one is made" in message
    assert ("malformed" if damage == "truncated" else "not a database") in message
    assert isinstance(
        caught.value, StoryEngineError
    )  # one line and exit 2 in the CLI, its message on the web
    path.rename(tmp_path / "aside.sqlite3")  # as it says: the next call makes a new one
    assert store.runs() == []


def write_checkpoint(directory: Path, run_id: str, **header: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{run_id}.json"
    data = {"header": {"run_id": run_id, "premise": PREMISE, "created_at": 1000.0, **header}, "steps": {}}
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_a_new_or_empty_store_lists_the_runs_of_its_checkpoints(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    write_checkpoint(checkpoints, "r-done", status="done", scenes=3, seed=4, provider="embedded")
    write_checkpoint(checkpoints, "r-failed", status="failed", error="connection refused", created_at=2000.0)
    old = write_checkpoint(checkpoints, "r-running", status="running", created_at=3000.0)
    os.utime(old, (time.time() - 3600, time.time() - 3600))  # its process wrote nothing for an hour
    write_checkpoint(
        checkpoints, "r-done.steer-abc123", status="done", story_run="r-done"
    )  # a job, not a run
    (checkpoints / "misnamed.json").write_text(json.dumps({"header": {"run_id": "../x", "premise": "p"}}))
    (checkpoints / "broken.json").write_text("{")
    (tmp_path / FILENAME).write_bytes(b"")  # an empty file, as a failed copy leaves it

    store = RunStore.beside(checkpoints)
    runs = {r.id: r for r in store.runs()}
    assert list(runs) == ["r-running", "r-failed", "r-done"]  # newest first
    done = runs["r-done"]
    assert (done.premise, done.scenes, done.seed, done.provider, done.status) == (
        PREMISE,
        3,
        4,
        "embedded",
        "done",
    )
    assert "rebuilt from its checkpoint" in (done.error or "") and done.versions == []
    assert (runs["r-failed"].status, runs["r-failed"].error) == ("failed", "connection refused")
    assert runs["r-running"].status == "running" and runs["r-running"].orphaned  # no one renews it
    store.close()
    assert [r.id for r in RunStore.beside(checkpoints).runs()] == list(runs)  # once: not again on reopening


def test_a_store_with_runs_is_not_refilled(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    store = RunStore.beside(checkpoints)
    store.start_run(RunRecord("kept", PREMISE))
    store.set_status("kept", "done")
    store.close()
    write_checkpoint(checkpoints, "not-listed", status="done")
    assert [r.id for r in RunStore.beside(checkpoints).runs()] == ["kept"]


def test_a_running_run_has_its_process_as_owner_until_it_ends(tmp_path: Path) -> None:
    store = RunStore(tmp_path / FILENAME)
    store.start_run(RunRecord("r", PREMISE))
    run = store.run("r")
    assert (run.owner_pid, run.owner_host, run.orphaned) == (os.getpid(), socket.gethostname(), False)
    assert run.summary()["owner"]["pid"] == os.getpid()
    # another store of the same file in this process (the web app's, an engine's) sees it alive
    assert RunStore(tmp_path / FILENAME).run("r").orphaned is False
    store.set_status("r", "failed", "stopped")
    assert store.run("r").summary()["owner"] is None


def test_this_process_is_not_the_owner_of_a_run_it_does_not_write(tmp_path: Path) -> None:
    """A restarted server can have its dead predecessor's pid (pid 1 in a container)."""
    path = tmp_path / FILENAME
    RunStore(path).start_run(RunRecord("r", PREMISE))
    with sqlite3.connect(path) as db:  # as a run of a killed process with this pid
        db.execute("UPDATE runs SET owner_pid = ? WHERE id = 'r'", (os.getpid(),))
    runstore._HEARTBEAT.remove(RunStore(path), "r")
    assert RunStore(path).run("r").orphaned is True


def test_a_dead_owners_run_is_taken_over_once(tmp_path: Path) -> None:
    path = tmp_path / FILENAME
    RunStore(path).start_run(RunRecord("r", PREMISE))
    with sqlite3.connect(path) as db:  # written by a process on another host that went silent
        db.execute(
            "UPDATE runs SET owner_host = 'elsewhere', heartbeat = ? WHERE id = 'r'", (time.time() - 999,)
        )
    runstore._HEARTBEAT.remove(RunStore(path), "r")
    first, second = RunStore(path), RunStore(path)
    assert first.run("r").orphaned and second.run("r").orphaned
    results: list[bool] = []
    threads = [threading.Thread(target=lambda s=s: results.append(s.take_over("r"))) for s in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, True]  # one of them resumes it
    run = first.run("r")
    assert (run.owner_pid, run.owner_host, run.orphaned) == (os.getpid(), socket.gethostname(), False)
    assert first.take_over("r") is False  # alive now
    first.set_status("r", "done")


def test_the_heartbeat_is_renewed_while_the_run_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runstore._HEARTBEAT, "every", 0.05)
    store = RunStore(tmp_path / FILENAME)
    store.start_run(RunRecord("r", PREMISE))
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE runs SET heartbeat = 1 WHERE id = 'r'")  # as if long ago
    deadline = time.monotonic() + 60
    while (store.run("r").heartbeat or 0) < 2:
        assert time.monotonic() < deadline, "the heartbeat was never renewed"
        time.sleep(0.05)
    assert store.run("r").orphaned is False
    store.set_status("r", "done")


async def test_a_version_number_past_sqlites_integers_is_not_found(tmp_path: Path) -> None:
    story = await some_story()
    store = RunStore(tmp_path / FILENAME)
    store.start_run(RunRecord("r", PREMISE))
    store.add_version("r", story, "generated")
    for number in (2**63, 2**64, -(2**63) - 1):
        with pytest.raises(NotFound, match=f"no version {number}; it has versions 1 to 1"):
            store.version("r", number)
        with pytest.raises(NotFound):
            store.restore("r", number)
    store.set_status("r", "done")


def test_a_row_planted_with_a_bad_run_id_is_not_listed(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "stories.sqlite3")
    store.start_run(RunRecord(id="good-run", premise="A premise.", scenes=1, seed=1))
    with sqlite3.connect(tmp_path / "stories.sqlite3") as db:
        db.execute(
            "INSERT INTO runs (id, premise, status, created_at, updated_at) VALUES (?, 'x', 'done', 0, 0)",
            ("../../escaped-run",),
        )
    assert [r.id for r in store.runs()] == ["good-run"]
    store.close()
