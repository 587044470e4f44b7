"""`storyengine batch --ray` on a real local Ray runtime (`ray.init(num_cpus=2)`), scripted provider."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from storyengine.batch.ray_runner import RayExecutor, init_local_runtime, server_limits, task_cpus
from storyengine.batch.runner import BatchResult, run_batch
from storyengine.config import Settings, parse_settings
from storyengine.pipeline.engine import StoryEngine
from storyengine.providers.base import Provider
from storyengine.providers.fake_story import story_script
from storyengine.providers.scripted import ScriptedProvider
from storyengine.schemas import Story
from storyengine.types import CompletionRequest

ray = pytest.importorskip("ray")


@dataclass(frozen=True)
class FakeProviders:
    """Builds the scripted provider inside a Ray worker. Every request is logged (with the
    worker's pid) to `log`; while `kill_marker` exists, the first scene call removes it and
    kills the worker process outright, as an out-of-memory kill or a lost node would."""

    log: str
    kill_marker: str | None = None

    def __call__(self, settings: Settings) -> dict[str, Provider]:
        log, marker = Path(self.log), Path(self.kill_marker) if self.kill_marker else None

        def script(request: CompletionRequest) -> str:
            with log.open("a") as f:
                f.write(json.dumps([os.getpid(), request.component, request.stage]) + "\n")
            if marker is not None and request.component == "scene" and marker.exists():
                marker.unlink()
                os._exit(1)
            return story_script(request)

        return {"embedded": ScriptedProvider(script, name="embedded", structured_mode="grammar")}


@pytest.fixture(scope="module")
def ray_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    home = tmp_path_factory.mktemp("ray-xdg")
    saved = {v: os.environ.get(v) for v in ("XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME")}
    for var in saved:  # the workers inherit these: nothing lands in the real user directories
        os.environ[var] = str(home / var.lower())
    try:
        init_local_runtime(num_cpus=2)
        yield
    finally:
        ray.shutdown()
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def settings_in(tmp_path: Path) -> Settings:
    return parse_settings(
        f"""
providers:
  embedded: {{type: embedded, context_window: 8192}}
retry: {{attempts: 2, backoff_initial: 0, backoff_max: 0}}
cache: {{enabled: false}}
logging: {{dir: "{tmp_path / "logs"}", runlog: "{tmp_path / "data" / "runs.sqlite3"}"}}
""",
        source="ray-test.yaml",
    )


async def run_on_ray(tmp_path: Path, factory: FakeProviders, premises: list[Any]) -> list[BatchResult]:
    settings = settings_in(tmp_path)
    engine = StoryEngine.from_config(settings=settings, providers=factory(settings))
    executor = RayExecutor(engine, concurrency=2, provider_factory=factory, max_retries=2)
    results = []
    async with engine:
        stream = run_batch(engine, premises, out=tmp_path / "out", scenes=2, seed=4, executor=executor)
        async with aclosing(stream):
            async for result in stream:
                results.append(result)
    return results


def logged(log: Path) -> list[tuple[int, str, str]]:
    return [tuple(json.loads(line)) for line in log.read_text().splitlines()]  # type: ignore[misc]


async def test_a_batch_on_ray_writes_the_stories_and_the_manifest(ray_runtime: None, tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    premises = [
        {"id": "kite", "premise": "A kite that only flies at night."},
        {"id": "well", "premise": "A well that answers one question a year."},
        {"id": "clock", "premise": "A clock that runs a minute ahead of fate."},
    ]
    results = await run_on_ray(tmp_path, FakeProviders(str(log)), premises)
    assert sorted((r.id, r.status) for r in results) == [
        ("clock", "done"),
        ("kite", "done"),
        ("well", "done"),
    ]
    out = tmp_path / "out"
    for result in results:
        story = Story.model_validate_json((out / str(result.id) / "story.json").read_text())
        assert story.meta["run_id"] == result.run_id and len(story.scenes) == 2
        assert result.provider_calls > 0 and result.tokens > 0
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(m["id"] for m in manifest) == ["clock", "kite", "well"]
    assert all(m["status"] == "done" and m["provider_calls"] > 0 for m in manifest)
    workers = {pid for pid, _, _ in logged(log)}
    assert workers and os.getpid() not in workers  # the stories ran in Ray's worker processes
    assert sum(m["provider_calls"] for m in manifest) == len(logged(log))


async def test_a_worker_killed_mid_story_is_retried_and_resumes_from_the_checkpoint(
    ray_runtime: None, tmp_path: Path
) -> None:
    log, marker = tmp_path / "calls.log", tmp_path / "kill-once"
    marker.touch()
    premise = {"id": "fragile", "premise": "A glass bridge that must carry a whole town."}
    (result,) = await run_on_ray(tmp_path, FakeProviders(str(log), str(marker)), [premise])
    assert not marker.exists()  # the first try really died at its first scene call
    assert result.status == "done", result.error
    calls = logged(log)
    first_pid = calls[0][0]
    assert len({pid for pid, _, _ in calls}) == 2  # killed, then retried in a new worker
    # the plot was finished and checkpointed before the kill: the retry did not ask for it again
    assert [c for c in calls if c[1] == "plot" and c[0] != first_pid] == []
    assert len([c for c in calls if c[1] == "plot" and c[2] == "freeform"]) == 1
    story = Story.model_validate_json((tmp_path / "out" / "fragile" / "story.json").read_text())
    assert story.meta["run_id"] == result.run_id and len(story.scenes) == 2


def test_server_routes_keep_ray_tasks_within_max_parallel() -> None:
    settings = parse_settings(
        """
providers:
  srv: {type: openai, base_url: "http://127.0.0.1:9/v1", model: m, max_parallel: 4}
narrative:
  providers: {plot: srv, scene: srv, dialogue: srv, evaluation: srv, enhancement: srv, summarize: srv}
"""
    )
    assert server_limits(settings, 8) == (4, 1)  # 4 tasks, one call each at most
    assert server_limits(settings, 2) == (2, 2)  # 2 tasks, two scenes each
    assert server_limits(parse_settings(""), 8) == (8, 2)  # the embedded model: per worker
    assert task_cpus(settings) == 0.25 and task_cpus(parse_settings("")) == 1.0


def test_an_unreachable_ray_address_is_one_clear_error_before_any_story(tmp_path: Path) -> None:
    """Ray itself waits minutes for a cluster that never answers; the batch gives up in time, in
    one line, with no story started, and the process exits (run apart: Ray's state stays there)."""
    import subprocess
    import sys
    import textwrap

    tests = Path(__file__).resolve().parent
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.path[:0] = [{str(tests.parent / "src")!r}, {str(tests)!r}]
        from test_pipeline import engine_with
        from storyengine.providers.fake_story import story_script
        from storyengine.batch.ray_runner import RayExecutor
        from storyengine.batch.runner import run_batch
        from storyengine.errors import ConfigError
        async def main():
            engine, provider = engine_with(story_script)
            executor = RayExecutor(engine, address="127.0.0.1:1", connect_timeout_s=3)
            try:
                stories = run_batch(engine, ["A kite."], out={str(tmp_path / "out")!r}, executor=executor)
                async for _ in stories:
                    print("a story ran")
            except ConfigError as exc:
                print("ConfigError:", exc, "calls:", provider.calls)
        asyncio.run(main())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "ConfigError: no answer from the Ray cluster at 127.0.0.1:1 within 3 s" in done.stdout
    assert "calls: 0" in done.stdout and "a story ran" not in done.stdout
