"""`bench quality`: whole stories over the project's premise set, measured by `quality.quality_report`.

For each premise a story is written through the public `StoryEngine` API (scratch run log,
checkpoints and cache, the cache off so every call reaches the model); its quality report is
computed by code, and every measure of the report becomes a bench measure whose runs are the
stories (median, min, max). A story that fails is counted, not measured. The summary says how
many stories met each goal of the issue (quality.GOALS).

With `revise`, each story is then revised by its own suggestions (`StoryEngine.revise`), and
the bench counts how the revisions went: applied (scenes rewritten and kept), kept earlier
(every rewrite refused because it lowered a measure), not revisable (no suggestions, or none
naming anything in the story) or failed; and, per revision, how many of the story's code
measures it raised and lowered (`quality.better_measures` / `worse_measures`: lowered must be 0).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ..config import Settings
from ..errors import InputError, StoryEngineError
from ..pipeline.engine import StoryEngine
from ..providers.base import Provider
from ..quality import GOALS, better_measures, quality_report, story_measures, worse_measures
from ..schemas import Story
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
    revise: bool = False,
) -> Report:
    started = time.perf_counter()
    measures: dict[str, Measure] = {}
    seconds = report.measure("seconds per story", "s")
    met = dict.fromkeys(GOALS, 0)
    failures: list[str] = []
    measured = 0
    revisions: dict[str, int] = {"applied": 0, "kept earlier": 0, "not revisable": 0, "failed": 0}
    raised = report.measure("measures a revision raised", "count", digits=0) if revise else None
    lowered = report.measure("measures a revision lowered", "count", digits=0) if revise else None
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
                if revise and raised is not None and lowered is not None:
                    outcome = await _revised(engine, story, raised, lowered, progress)
                    revisions[outcome] += 1
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
    if revise:
        report.summary["revisions"] = revisions
        report.tables.append(
            ("revisions", ["outcome", "stories"], [[k, str(v)] for k, v in revisions.items()])
        )
    report.notes += [f"failed: {f}" for f in failures[:5]]
    report.notes.append("measures are medians over stories; see `storyengine eval STORY.json` for one story")
    return report


async def _revised(
    engine: StoryEngine, story: Story, raised: Measure, lowered: Measure, progress: Progress
) -> str:
    """Revise `story` by its own suggestions; count the measures it raised and lowered."""
    try:
        version = await engine.revise(story.meta["run_id"], seed=1)
    except InputError as exc:
        progress(f"  not revisable: {str(exc)[:120]}")
        return "not revisable"
    except StoryEngineError as exc:
        progress(f"  revision failed: {str(exc)[:120]}")
        return "failed"
    revised = version.the_story()
    before, after = story_measures(story), story_measures(revised)
    better, worse = better_measures(before, after), worse_measures(before, after)
    raised.add(len(better))
    lowered.add(len(worse))
    record = revised.meta.get("revision") or {}
    progress(f"  revised scenes {record.get('revised')}; raised: {better}; lowered: {worse}")
    return "applied" if record.get("revised") else "kept earlier"
