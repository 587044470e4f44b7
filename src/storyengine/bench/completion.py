"""`bench completion`: does every premise end in a story? N premises × K seeds, short stories.

Each run is one `generate` with the cache off. A run ends in one of three ways: complete, complete
with a gap (the story is written; which part is missing), or failed (which step). Every failed
run is resumed once, and the bench says whether that single resume finished it and whether the
resume repeated any call the failed run had made (it must not: a resume is a new round).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import RunFailed, StoryEngineError
from .harness import all_calls, build_engine, metered_providers, primary_provider, scratch_settings
from .premises import premises as premise_set
from .table import Report

Progress = Callable[[str], None]


def _key(call: Any) -> str:
    request = call.request
    messages = [[m.role, m.content] for m in request.messages]
    return json.dumps(messages) + json.dumps(request.params(), sort_keys=True, default=str)


async def run_completion_bench(
    report: Report,
    settings: Settings,
    *,
    premises: int,
    seeds: int,
    scenes: int,
    progress: Progress,
    first: int = 1,
) -> Report:
    outcomes: Counter[str] = Counter()
    failures: list[dict[str, Any]] = []
    seconds = report.measure("seconds per story", "s")
    repeats = report.measure("repeated calls on resume", "calls", digits=0)
    with tempfile.TemporaryDirectory(prefix="storyengine-bench-") as tmp:
        settings = scratch_settings(settings, Path(tmp), cache=False)
        providers = metered_providers(settings)
        async with build_engine(settings, providers) as engine:
            for premise in premise_set(premises, first):
                for seed in range(seeds):
                    progress(f"seed {seed}: {premise}")
                    started = time.perf_counter()
                    before = len(all_calls(providers))
                    try:
                        story = await engine.generate(premise, scenes=scenes, seed=seed)
                    except RunFailed as exc:
                        failed_calls = {_key(c) for c in all_calls(providers)[before:]}
                        step = exc.step or "?"
                        mark = len(all_calls(providers))
                        try:
                            resumed = await engine.resume(exc.run_id)
                            fixed, gap = True, sorted(resumed.gaps)
                        except StoryEngineError:
                            fixed, gap = False, []
                        repeated = len(failed_calls & {_key(c) for c in all_calls(providers)[mark:]})
                        outcomes["failed"] += 1
                        outcomes[
                            "failed, finished by one resume"
                            if fixed
                            else "failed, not finished by one resume"
                        ] += 1
                        failures.append(
                            {"premise": premise, "seed": seed, "step": step, "resume_finished": fixed,
                             "resume_gaps": gap, "repeated_calls": repeated, "error": str(exc.cause)[:200]}
                        )  # fmt: skip
                        repeats.add(repeated)
                        progress(
                            f"  failed at {step}; one resume {'finished' if fixed else 'did not finish'} it"
                            f" ({repeated} repeated calls)"
                        )
                        continue
                    seconds.add(time.perf_counter() - started)
                    progress(
                        f"  complete{', missing ' + ', '.join(sorted(story.gaps)) if story.gaps else ''}"
                        f" in {time.perf_counter() - started:.0f} s"
                    )
                    if story.gaps:
                        outcomes["complete with a gap"] += 1
                        for part in story.gaps:
                            outcomes[f"gap: {part}"] += 1
                    else:
                        outcomes["complete"] += 1
    runs = premises * seeds
    written = outcomes["complete"] + outcomes["complete with a gap"]
    report.measure("runs ending in a story file", "%", digits=1).add(100 * written / runs)
    report.summary.update(
        {
            "provider": primary_provider(settings),
            "runs": runs,
            "premise_numbers": [first, first + premises - 1],
            "scenes": scenes,
            "outcomes": dict(outcomes),
            "failures": failures,
        }
    )
    for outcome, count in sorted(outcomes.items()):
        report.notes.append(f"{outcome}: {count} of {runs}")
    return report
