"""`bench cache`: one story generated twice with the same seed, cold cache then warm cache.

Each run builds a fresh engine (a fresh router and in-memory cache tier, as two separate
`storyengine generate` commands would), so the warm run is served from the SQLite file.
Provider calls are counted at the provider boundary, so a warm run that still reaches a
model shows it. The cache lives in a temporary file unless --cache-path is given.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import StoryEngineError
from ..schemas import Story
from .harness import all_calls, build_engine, metered_providers, primary_provider, scratch_settings
from .table import Report

Progress = Callable[[str], None]
PREMISE = "A beekeeper's hives start building honeycomb in the shape of a city map."


def story_content(story: Story) -> dict[str, Any]:
    """The story without its run metadata (what a cache hit must reproduce exactly)."""
    return story.model_dump(mode="json", exclude={"meta"})


async def _one_run(settings: Settings, scenes: int, seed: int) -> tuple[Story | str, float, int]:
    """The story (or, when the model failed it, the error), the seconds, the provider calls."""
    providers = metered_providers(settings)
    async with build_engine(settings, providers) as engine:  # loads models (not timed)
        started = time.perf_counter()
        try:
            story: Story | str = await engine.generate(PREMISE, scenes=scenes, seed=seed)
        except StoryEngineError as exc:
            story = str(exc).split(" — ")[0][:200]
        elapsed = time.perf_counter() - started
    return story, elapsed, len(all_calls(providers))


async def run_cache_bench(
    report: Report,
    settings: Settings,
    *,
    scenes: int,
    seed: int,
    cache_path: Path | None,
    progress: Progress,
) -> Report:
    with tempfile.TemporaryDirectory(prefix="storyengine-bench-") as tmp:
        path = cache_path or Path(tmp) / "cache.sqlite3"
        settings = scratch_settings(settings, Path(tmp), cache=True, cache_path=path, scene_drafts=1)
        results = {}
        for label in ("cold", "warm"):
            progress(f"{label} run: {scenes} scenes, seed {seed}, cache {path}")
            results[label] = await _one_run(settings, scenes, seed)
    (cold, cold_s, cold_calls), (warm, warm_s, warm_calls) = results["cold"], results["warm"]
    for label, seconds, calls in (("cold", cold_s, cold_calls), ("warm", warm_s, warm_calls)):
        report.measure(f"{label} run: wall time", "s").add(seconds)
        report.measure(f"{label} run: provider calls", "calls", digits=0).add(calls)
    failed = {label: story for label, (story, _, _) in results.items() if isinstance(story, str)}
    if failed:
        report.summary["failed"] = failed
        report.notes.append(
            "the model failed the story; what it finished was cached, so the warm run replays that "
            "and asks the model again only for the calls whose answers were never valid"
        )
    hits = None
    if isinstance(warm, Story):
        hits = sum(1 for c in warm.meta["calls"] if c["kind"] == "call" and c["cache_hit"])
    same = (
        story_content(cold) == story_content(warm)
        if isinstance(cold, Story) and isinstance(warm, Story)
        else None
    )
    report.summary.update(
        {
            "provider": primary_provider(settings),
            "scenes": scenes,
            "seed": seed,
            "cold_calls": cold_calls,
            "warm_calls": warm_calls,
            "cold_s": round(cold_s, 3),
            "warm_s": round(warm_s, 3),
            "warm_cache_hits": hits,
            "speedup": round(cold_s / warm_s, 1) if warm_s else None,
            "same_story": same,
            "cache_path": str(cache_path) if cache_path else "(temporary)",
        }
    )
    if cache_path is None:
        report.notes.append("the cache was a temporary file, removed after the bench")
    return report
