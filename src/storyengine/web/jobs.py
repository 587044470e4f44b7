"""The background jobs of a run: the first generation, and steering jobs that add a version.

Each job ends with exactly one terminal event (`run_done` / `run_failed` for the generation,
`steer_done` / `steer_failed` for steering), published after the run is marked idle.
Errors become messages in those events; a traceback goes to the server log only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import StoryEngineError
from ..pipeline.engine import StoryEngine
from ..schemas import Story
from .runs import Run

logger = logging.getLogger("storyengine.web")

TERMINAL = ("run_done", "run_failed")


async def generate(run: Run, engine: StoryEngine, *, resume: bool = False) -> None:
    """The first generation of `run` (or its continuation after a failure); the story becomes version 1."""
    held: list[dict[str, Any]] = []

    def on_event(event: dict[str, Any]) -> None:
        # The run's last event waits until the version is kept and the run is idle.
        if event["event"] in TERMINAL:
            held.append(event)
        else:
            run.publish(event)

    try:
        if resume:
            story = await engine.resume(run.id, on_event=on_event)
        else:
            story = await engine.generate(run.premise, run.scenes, run.seed, run_id=run.id, on_event=on_event)
    except asyncio.CancelledError:
        _fail(run, "the server stopped before the run finished")
        raise
    except StoryEngineError as exc:
        _fail(run, str(exc))
        return
    except Exception as exc:
        logger.exception("run %s failed unexpectedly", run.id)
        _fail(run, f"internal error: {type(exc).__name__}: {exc}")
        return
    run.status = "done"
    version = run.add_version(story, "generated", None)
    done = held[-1] if held else {"event": "run_done"}
    run.finish_job({**done, "version": version.number})


def _fail(run: Run, message: str) -> None:
    run.status = "failed"
    run.error = message
    run.finish_job({"event": "run_failed", "error": message})


async def steer(run: Run, label: str, base: int, work: Callable[[], Awaitable[Story]]) -> None:
    """Run one steering job (already marked on `run.job`); a success appends a version."""
    run.publish({"event": "steer_started", "job": label, "base": base})
    try:
        story = await work()
    except asyncio.CancelledError:
        run.finish_job({"event": "steer_failed", "job": label, "error": "the server stopped"})
        raise
    except StoryEngineError as exc:
        run.finish_job({"event": "steer_failed", "job": label, "error": str(exc)})
        return
    except Exception as exc:
        logger.exception("steering of run %s failed unexpectedly", run.id)
        error = f"internal error: {type(exc).__name__}: {exc}"
        run.finish_job({"event": "steer_failed", "job": label, "error": error})
        return
    version = run.add_version(story, label, base)
    run.finish_job({"event": "steer_done", "job": label, "version": version.number})
