"""Batch throughput against the local slow server, against the ideal (every slot busy always).

`measure(stories=24, slots=4, latency=0.5)` runs that many 3-scene stories against
`bench.slow_server.SlowServer(latency, slots)` (cache off) through `run_batch`, locally or on a
local Ray runtime, and returns the numbers: wall time (Ray's startup, `ray.init` and warming the
workers, stated separately), provider calls, the ideal `calls × latency / slots`, the ratio,
and the most calls the server ever had at once. `commands/bench.py` can print it as a table
(`storyengine bench batch`); README.md has the measured rows.
"""

from __future__ import annotations

import tempfile
import time
from contextlib import aclosing
from pathlib import Path
from typing import Any

from ..bench.slow_server import SlowServer
from ..config import parse_settings
from ..pipeline.engine import StoryEngine
from ..prompts.render import warm
from .runner import Executor, run_batch


async def measure(
    stories: int = 24, slots: int = 4, latency: float = 0.5, *, use_ray: bool = False, scenes: int = 3
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, SlowServer(latency=latency, slots=slots) as server:
        settings = parse_settings(
            f"""
providers:
  srv: {{type: openai, base_url: "{server.base_url}", model: slow-story, max_parallel: {slots}}}
narrative:
  providers: {{plot: srv, scene: srv, dialogue: srv, evaluation: srv, enhancement: srv, summarize: srv}}
cache: {{enabled: false}}
logging: {{dir: "{tmp}/logs", runlog: "{tmp}/data/runs.sqlite3"}}
""",
            source="bench batch",
        )
        warm()
        engine = StoryEngine.from_config(settings=settings)
        executor: Executor | None = None
        begun = time.perf_counter()
        if use_ray:
            from .ray_runner import RayExecutor

            executor = RayExecutor(engine, concurrency=slots)
            await executor.start()
        started = time.perf_counter()
        calls, done = 0, 0
        async with engine:
            premises = [f"Story {i}: a lantern that lights itself in town {i}." for i in range(stories)]
            stream = run_batch(
                engine,
                premises,
                out=Path(tmp) / "out",
                scenes=scenes,
                seed=1,
                concurrency=2 * slots,
                executor=executor,
            )
            async with aclosing(stream):
                async for result in stream:
                    calls += result.provider_calls
                    done += result.status == "done"
        wall = time.perf_counter() - started
        if executor is not None:
            await executor.stop()
    ideal = calls * latency / slots
    return {
        "mode": "ray" if use_ray else "local",
        "stories": stories,
        "done": done,
        "slots": slots,
        "latency_s": latency,
        "provider_calls": calls,
        "startup_s": round(started - begun, 2),
        "wall_s": round(wall, 2),
        "ideal_s": round(ideal, 2),
        "of_ideal": round(ideal / wall, 3) if wall > 0 else None,
        "max_in_flight": server.max_in_flight,
        "stories_per_min": round(stories / wall * 60, 1) if wall > 0 else None,
    }
