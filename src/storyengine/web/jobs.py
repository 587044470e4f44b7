"""The background jobs of a run: the first generation (or its resume), and steering jobs.

Each is one call of the run engine, which checkpoints every step and keeps the run and its
versions in the run store; a job only relays the engine's events to the run's live log.
Each job ends with exactly one terminal event (`run_done` / `run_failed` / `run_stopped` for the
generation, `steer_done` / `steer_failed` for steering), published after the run is marked idle.
A job stopped by a person (`LiveRun.stopping`, then its task cancelled) ends its calls in flight;
the stages finished before are in the run's checkpoint, so a resume goes on from there.
Errors become messages in those events; a traceback goes to the server log only.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..errors import StoryEngineError
from ..pipeline.engine import StoryEngine
from ..pipeline.runstore import RunStore
from ..pipeline.steering import Steer
from .runs import LiveRun, kept_parts

logger = logging.getLogger("storyengine.web")

TERMINAL = ("run_done", "run_failed")


async def stopped(run: LiveRun, engine: StoryEngine) -> dict[str, Any]:
    """The last event of a generation stopped by a person: what its checkpoint keeps (every stage
    finished before the stop), and that a resume goes on from there."""
    try:
        state = await asyncio.to_thread(engine.checkpoints.load, run.id)
    except StoryEngineError:  # no checkpoint to read: nothing to say of it
        kept: dict[str, Any] = {"steps": [], "drafts": [], "text": "what was finished is kept"}
    else:
        kept = kept_parts(state)
    return {
        "event": "run_stopped",
        "kept": kept["steps"],
        "drafts": kept["drafts"],
        "message": f"stopped: {kept['text']}; resume to continue",
    }


async def generate(run: LiveRun, engine: StoryEngine, store: RunStore, *, resume: bool = False) -> None:
    """The first generation of `run` (or its continuation after a failure); its story is version 1.
    The engine keeps the run's status in the run store; the job tells the run's watchers."""
    held: list[dict[str, Any]] = []

    def on_event(event: dict[str, Any]) -> None:
        # The run's last event waits until the version is announced and the run is idle.
        if event["event"] in TERMINAL:
            held.append(event)
        else:
            run.publish(event)

    try:
        if resume:
            await engine.resume(run.id, on_event=on_event)
            version = await asyncio.to_thread(store.version, run.id)
        else:  # opened by the engine (`open_run`) when the run was asked for
            version = await engine.write_run(run.id, on_event=on_event)
    except asyncio.CancelledError:
        if run.stopping:  # asked to stop (POST .../stop): say what is kept
            run.finish_job(await stopped(run, engine))
        else:
            run.finish_job({"event": "run_failed", "error": "the server stopped before the run finished"})
        raise
    except StoryEngineError as exc:
        run.finish_job({"event": "run_failed", "error": str(exc)})
        return
    except Exception as exc:
        logger.exception("run %s failed unexpectedly", run.id)
        run.finish_job({"event": "run_failed", "error": f"internal error: {type(exc).__name__}: {exc}"})
        return
    run.publish({"event": "version_added", "version": version.summary()})
    done = held[-1] if held else {"event": "run_done"}
    run.finish_job({**done, "version": version.number})


async def steer(run: LiveRun, engine: StoryEngine, operation: Steer, base: int, seed: int) -> None:
    """One steering job (already marked on `run.job`): the engine makes and keeps the new version."""
    label = operation.label
    run.publish({"event": "steer_started", "job": label, "base": base, "seed": seed})

    def on_event(event: dict[str, Any]) -> None:
        if not event["event"].startswith("run_"):  # the job's own start and end are steer_* events
            run.publish(event)

    try:
        version = await engine.steer(run.id, operation, base=base, seed=seed, on_event=on_event)
    except asyncio.CancelledError:
        why = "stopped: the versions so far are unchanged" if run.stopping else "the server stopped"
        run.finish_job({"event": "steer_failed", "job": label, "error": why})
        raise
    except StoryEngineError as exc:
        run.finish_job({"event": "steer_failed", "job": label, "error": str(exc)})
        return
    except Exception as exc:
        logger.exception("steering of run %s failed unexpectedly", run.id)
        error = f"internal error: {type(exc).__name__}: {exc}"
        run.finish_job({"event": "steer_failed", "job": label, "error": error})
        return
    run.publish({"event": "version_added", "version": version.summary()})
    run.finish_job({"event": "steer_done", "job": label, "version": version.number})
