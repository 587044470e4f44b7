"""Many stories at once: `storyengine batch` and `run_batch(engine, ...)`.

    async with StoryEngine.from_config() as engine:
        async for result in run_batch(engine, ["A premise.", {"id": "b", "premise": "Another."}], out="out"):
            print(result.id, result.status, result.story and result.story.plot.title)

See runner.py (the local runner and the result type), premises.py (PREMISES files),
outdir.py (DIR's layout, manifest, resume) and ray_runner.py (stories as Ray tasks).
"""

from __future__ import annotations

from .premises import PremiseItem, Rejected, load_premises
from .runner import BatchResult, LocalExecutor, Usage, provider_slots, run_batch

__all__ = [
    "BatchResult",
    "LocalExecutor",
    "PremiseItem",
    "Rejected",
    "Usage",
    "load_premises",
    "provider_slots",
    "run_batch",
]
