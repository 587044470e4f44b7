"""`bench overhead`: what the pipeline itself costs, apart from waiting on models.

Part 1 runs a story on the scripted provider with zero latency (`story_script` answers at
once), so all the time is the pipeline's: rendering, budgeting, validation, the wrappers,
the run log, checkpoints. Reported per provider call, in ms. A first run, in which every
template is rendered by poml for the first time, is reported apart. Stage 2 asks for whole
objects here (the `standard` profile), since the scripted model answers whole objects.

Part 2 runs the story on the configured provider (default: the embedded model). Every call
is timed at the provider boundary; the union of those intervals is the time some model was
working ("provider busy"). Wall time minus that is the pipeline's share. The sum of the
attempts' `latency_s` in Story.meta calls is reported too (it also counts the validation
done inside each attempt). Everything is written to a scratch directory; the response cache
is used as configured but in a fresh file, so nothing is served from an earlier run.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ..config import Settings
from ..errors import StoryEngineError
from ..providers.fake_story import story_script
from ..providers.scripted import ScriptedProvider
from ..schemas import Story
from .harness import (
    MeteredProvider,
    all_calls,
    build_engine,
    busy_seconds,
    metered_providers,
    primary_provider,
    scratch_settings,
)
from .table import Report

Progress = Callable[[str], None]
PREMISE = "A retired locksmith is hired to open a door that, by every record, does not exist."


def whole_objects(settings: Settings) -> Settings:
    """`settings` with stage 2 asking for whole objects (`story_script` answers those, not parts)."""
    providers = {
        name: entry.model_copy(update={"profile": "standard"})
        if "profile" in type(entry).model_fields
        else entry
        for name, entry in settings.providers.items()
    }
    return settings.model_copy(update={"providers": providers})


def scripted_providers(settings: Settings) -> dict[str, MeteredProvider]:
    """A zero-latency scripted provider under every configured provider's name."""
    providers = {}
    for name, entry in settings.providers.items():
        scripted = ScriptedProvider(
            story_script, name=name, model="scripted", context_window=entry.context_window
        )
        providers[name] = MeteredProvider(scripted)
    return providers


async def scripted_part(
    report: Report, settings: Settings, workdir: Path, *, scenes: int, runs: int, progress: Progress
) -> None:
    settings = whole_objects(scratch_settings(settings, workdir / "scripted", scene_drafts=1))
    providers = scripted_providers(settings)
    per_call = report.measure("scripted (0 latency): pipeline cost per call", "ms")
    wall = report.measure("scripted (0 latency): story wall time", "ms")
    async with build_engine(settings, providers) as engine:
        for run in range(runs + 1):
            progress(f"scripted run {run}/{runs}" if run else "scripted warm-up (templates cold)")
            before = len(all_calls(providers))
            started = time.perf_counter()
            await engine.generate(PREMISE, scenes=scenes)
            elapsed = time.perf_counter() - started
            calls = len(all_calls(providers)) - before
            if run == 0:
                report.summary["scripted_first_run_ms"] = round(elapsed * 1000, 1)
                report.summary["scripted_calls_per_story"] = calls
                continue
            wall.add(elapsed * 1000)
            per_call.add(elapsed * 1000 / calls)
    report.summary["pipeline_ms_per_call"] = per_call.median


async def provider_part(
    report: Report, settings: Settings, workdir: Path, *, scenes: int, runs: int, progress: Progress
) -> None:
    settings = scratch_settings(settings, workdir / "provider", scene_drafts=1)
    name = primary_provider(settings)
    providers = metered_providers(settings)
    wall = report.measure(f"{name}: story wall time", "s")
    busy = report.measure(f"{name}: provider busy", "s")
    summed = report.measure(f"{name}: sum of attempt latency_s (Story.meta)", "s")
    share = report.measure(f"{name}: pipeline share of wall time", "%", digits=2)
    calls = report.measure(f"{name}: provider calls", "calls", digits=0)
    failures: list[str] = []
    async with build_engine(settings, providers) as engine:  # loads the model (not timed)
        for run in range(1, runs + 1):
            progress(f"{name} run {run}/{runs}: {scenes} scenes (slow on a small CPU)")
            before = time.perf_counter()
            count = len(all_calls(providers))
            story: Story | None = None
            try:
                story = await engine.generate(PREMISE, scenes=scenes)
            except StoryEngineError as exc:  # the model failed the story: time what it did
                failures.append(f"run {run}: {str(exc).split(' — ')[0][:200]}")
            elapsed = time.perf_counter() - before
            busy_s = busy_seconds(all_calls(providers), since=before)
            wall.add(elapsed)
            busy.add(busy_s)
            if story is not None:
                summed.add(sum(c["latency_s"] for c in story.meta["calls"] if c["kind"] == "attempt"))
            share.add(100 * (elapsed - busy_s) / elapsed)
            calls.add(len(all_calls(providers)) - count)
    if failures:
        report.summary["failed_runs"] = failures
        report.notes.append("a failed run is timed up to its failure (its Story.meta is not available)")
    report.summary.update(
        {
            "provider": name,
            "provider_wall_s": wall.median,
            "provider_busy_s": busy.median,
            "overhead_share_pct": share.median,
        }
    )


async def run_overhead_bench(
    report: Report,
    settings: Settings,
    *,
    scenes: int,
    scripted_runs: int,
    runs: int,
    progress: Progress,
) -> Report:
    report.summary["scenes"] = scenes
    with tempfile.TemporaryDirectory(prefix="storyengine-bench-") as tmp:
        await scripted_part(report, settings, Path(tmp), scenes=scenes, runs=scripted_runs, progress=progress)
        if runs > 0:
            await provider_part(report, settings, Path(tmp), scenes=scenes, runs=runs, progress=progress)
    report.notes.append(
        "pipeline cost per call = scripted story wall time / provider calls; the first scripted "
        "run (poml renders each template once) is reported as scripted_first_run_ms"
    )
    return report
