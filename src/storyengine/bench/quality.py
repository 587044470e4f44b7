"""`bench quality`: whole stories over the project's premise set, measured by `quality.quality_report`.

For each premise a story is written through the public `StoryEngine` API (scratch run log,
checkpoints and cache, the cache off so every call reaches the model); its quality report is
computed by code, and every measure of the report becomes a bench measure whose runs are the
stories (median, min, max). A story that fails is counted, not measured. The summary says how
many stories met each goal of the issue (quality.GOALS).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ..config import Settings
from ..errors import StoryEngineError
from ..pipeline.engine import StoryEngine
from ..providers.base import Provider
from ..quality import GOALS, quality_report
from .harness import primary_provider, scratch_settings
from .table import Measure, Report

Progress = Callable[[str], None]

UNITS = {
    "%": "%",
    "distinct": "ratio",
    "words": "words",
    "Spearman": "rho",
    "rubric overall": "/10",
    "rubric reliable": "0/1",
}


def unit_of(name: str) -> str:
    return next((unit for key, unit in UNITS.items() if key in name), "count")


async def run_quality_bench(
    report: Report,
    settings: Settings,
    *,
    premises: list[str],
    scenes: int,
    seed: int,
    max_minutes: float | None,
    progress: Progress,
    providers: dict[str, Provider] | None = None,
) -> Report:
    started = time.perf_counter()
    measures: dict[str, Measure] = {}
    seconds = report.measure("seconds per story", "s")
    met = dict.fromkeys(GOALS, 0)
    failures: list[str] = []
    measured = 0
    with tempfile.TemporaryDirectory(prefix="storyengine-bench-quality-") as tmp:
        scratch = scratch_settings(settings, Path(tmp), cache=False)
        async with StoryEngine.from_config(settings=scratch, providers=providers) as engine:
            for index, premise in enumerate(premises):
                if max_minutes is not None and time.perf_counter() - started > max_minutes * 60:
                    report.notes.append(f"stopped after {index} of {len(premises)} premises (--max-minutes)")
                    break
                progress(f"premise {index + 1}/{len(premises)}: {premise[:60]}")
                begun = time.perf_counter()
                try:
                    story = await engine.generate(premise, scenes=scenes, seed=seed + index)
                except StoryEngineError as exc:
                    failures.append(f"{premise[:50]}: {type(exc).__name__}: {str(exc)[:160]}")
                    continue
                seconds.add(time.perf_counter() - begun)
                quality = quality_report(story)
                measured += 1
                for name, value in quality.measures().items():
                    if value is None:
                        continue
                    if name not in measures:
                        measures[name] = report.measure(name, unit_of(name))
                    measures[name].add(float(value))
                for goal in GOALS:
                    met[goal] += goal not in quality.failed
    report.summary.update(
        {
            "provider": primary_provider(settings),
            "premises": len(premises),
            "scenes": scenes,
            "stories": measured,
            "failed_stories": len(failures),
            "goals_met": {GOALS[g]: {"stories": n, "of": measured} for g, n in met.items()},
        }
    )
    report.tables.append(
        (
            "stories meeting each goal",
            ["goal", "stories"],
            [[GOALS[g], f"{n}/{measured}"] for g, n in met.items()],
        )
    )
    report.notes += [f"failed: {f}" for f in failures[:5]]
    report.notes.append("measures are medians over stories; see `storyengine eval STORY.json` for one story")
    return report
