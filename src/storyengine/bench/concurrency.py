"""`bench concurrency`: a story's wall time against the fastest any schedule could be.

By default the story runs against a `SlowServer` on 127.0.0.1 (fixed latency L, k slots),
configured as an OpenAI-compatible provider (structured_output json_schema, max_parallel k)
that every component is routed to, with the response cache off. The lower bound is
`critical_path.lower_bound_steps(story_graph(n), k) * L`; the ratio wall / bound is how much
the pipeline's ordering, semaphores, rendering and HTTP cost on top (target <= 1.1).

With --provider the story runs on that configured provider instead: k is --slots, else its
max_parallel (1 for the embedded model, which serializes calls), and L is the median call
time measured at the provider boundary, so the bound is an estimate.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ..config import EmbeddedProviderSettings, OpenAIProviderSettings, Settings
from .critical_path import greedy_steps, lower_bound_steps, story_graph
from .harness import build_engine, metered_providers, primary_provider, scratch_settings
from .slow_server import MODEL, SlowServer
from .table import Report

Progress = Callable[[str], None]
PREMISE = "A night-ferry pilot learns that one of her regular passengers has been dead for years."
SERVER_PROVIDER = "slow-server"


def with_server(settings: Settings, server: SlowServer) -> Settings:
    """`settings` plus a provider for `server`, with every component routed to it."""
    entry = OpenAIProviderSettings(
        type="openai",
        base_url=server.base_url,
        model=MODEL,
        structured_output="json_schema",
        max_parallel=server.slots,
        context_window=8192,
        timeout=max(30.0, server.latency * 20),
    )
    providers = {**settings.providers, SERVER_PROVIDER: entry}
    return settings.model_copy(update={"providers": providers}).with_route(SERVER_PROVIDER)


def provider_slots(settings: Settings, name: str) -> int:
    entry = settings.providers[name]
    if isinstance(entry, EmbeddedProviderSettings):
        return 1
    return entry.max_parallel


async def run_concurrency_bench(
    report: Report,
    settings: Settings,
    *,
    use_server: bool,
    scenes: int,
    latency: float,
    slots: int | None,
    concurrency: int | None,
    runs: int,
    progress: Progress,
) -> Report:
    with tempfile.TemporaryDirectory(prefix="storyengine-bench-") as tmp:
        if use_server:
            k = slots or 4
            with SlowServer(latency, k) as server:
                routed = with_server(settings, server)
                await _measure(report, routed, Path(tmp), scenes, k, latency, concurrency, runs, progress)
                report.summary["server_max_in_flight"] = server.max_in_flight
                report.summary["server_requests"] = len(server.timings)
        else:
            k = slots or provider_slots(settings, primary_provider(settings))
            await _measure(report, settings, Path(tmp), scenes, k, None, concurrency, runs, progress)
    return report


async def _measure(
    report: Report,
    settings: Settings,
    workdir: Path,
    scenes: int,
    slots: int,
    latency: float | None,
    concurrency: int | None,
    runs: int,
    progress: Progress,
) -> None:
    scene_concurrency = concurrency or slots
    # One draft per scene: the call graph the lower bound is computed for (critical_path.py).
    settings = scratch_settings(
        settings, workdir, cache=False, scene_concurrency=scene_concurrency, scene_drafts=1
    )
    providers = metered_providers(settings)
    graph = story_graph(scenes)
    steps = lower_bound_steps(graph, slots)
    wall = report.measure("wall time", "s")
    ratio = report.measure("wall / lower bound", "x")
    calls_per_run: list[int] = []
    call_seconds: list[float] = []
    cold_s = None
    async with build_engine(settings, providers) as engine:
        for run in range(runs + 1):
            label = "warm-up (templates cold)" if run == 0 else f"run {run}/{runs}"
            progress(f"{label}: {scenes} scenes")
            before = {name: len(p.calls) for name, p in providers.items()}
            started = time.perf_counter()
            await engine.generate(PREMISE, scenes=scenes)
            elapsed = time.perf_counter() - started
            new_calls = [c for name, p in providers.items() for c in p.calls[before[name] :]]
            if run == 0:
                cold_s = elapsed
                continue
            calls_per_run.append(len(new_calls))
            call_seconds.extend(c.seconds for c in new_calls)
            unit = latency if latency is not None else statistics.median(c.seconds for c in new_calls)
            wall.add(elapsed)
            ratio.add(elapsed / (steps * unit))
    unit_s = latency if latency is not None else statistics.median(call_seconds)
    report.summary.update(
        {
            "scenes": scenes,
            "slots": slots,
            "scene_concurrency": scene_concurrency,
            "latency_s": round(unit_s, 4),
            "latency_measured": latency is None,
            "graph_calls": len(graph.needs),
            "calls_per_run": calls_per_run,
            "lower_bound_steps": steps,
            "greedy_schedule_steps": greedy_steps(graph, slots),
            "lower_bound_s": round(steps * unit_s, 3),
            "wall_s": wall.median,
            "ratio": ratio.median,
            "first_run_s": round(cold_s, 3) if cold_s is not None else None,
        }
    )
    report.notes.append(
        "lower bound = steps x latency; steps = max over (depth d, height h) of "
        "(d-1) + ceil(#tasks with depth>=d and height>=h / slots) + (h-1) on the call graph "
        "(plot 2, scenes 2n, dialogues 2n, evaluation 2, enhancement 2); see bench/critical_path.py"
    )
    report.notes.append("the warm-up run (templates rendered by poml for the first time) is not counted")
