"""`storyengine batch`: many premises, one story each, resumable, locally or on Ray."""

from __future__ import annotations

import asyncio
import json
import sys
from contextlib import aclosing
from pathlib import Path
from typing import Any

import click

from ..batch.premises import load_premises
from ..batch.progress import BatchProgress, Summary
from ..batch.runner import Executor, run_batch
from ..pipeline.engine import StoryEngine
from ..pipeline.inputs import check_inputs
from .options import chapter_options, force_option, seed_option


@click.command()
@click.argument("premises", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output directory."
)
@force_option
@click.option("--scenes", type=int, default=None, help="Scenes per story, for lines that give none.")
@chapter_options(", for lines that give no length of their own")
@seed_option("Seed, for lines that give none")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1024),
    default=None,
    help="Stories at once (default: twice a server's max_parallel; the embedded model: 1).",
)
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), default=None, help="config.yaml to use."
)
@click.option("--provider", default=None, help="Route every component to this configured provider.")
@click.option("--json-progress", is_flag=True, help="Print one JSON event a line (for programs).")
@click.option("--quiet", is_flag=True, help="No progress bar; only the summary.")
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[ADDRESS]",
    help="Run each story as a Ray task: on ADDRESS (ray://HOST:10001 or auto), else a local Ray runtime.",
)
def batch(
    premises: Path,
    out: Path,
    force: bool,
    scenes: int | None,
    chapters: int | None,
    per_chapter: int | None,
    seed: int | None,
    concurrency: int | None,
    config_path: str | None,
    provider: str | None,
    json_progress: bool,
    quiet: bool,
    ray_address: str | None,
) -> None:
    """Write one story per line of PREMISES (JSONL or text) into OUT/<id>/, with OUT/manifest.jsonl.

    Run the same command again to skip finished stories and resume the others. A line's own length
    (`scenes`, or `chapters` and `scenes_per_chapter`) wins over --scenes and --chapters.
    """
    check_inputs("the batch default", scenes, chapters, per_chapter)  # once, before any file or model
    entries = load_premises(premises)  # a missing or empty file fails here, before any model loads
    mode = "json" if json_progress else ("quiet" if quiet or not sys.stderr.isatty() else "rich")
    summary = Summary()
    interrupted = False
    try:
        asyncio.run(
            _run(
                entries,
                out,
                (scenes, chapters, per_chapter),
                seed,
                concurrency,
                config_path,
                provider,
                mode,
                ray_address,
                summary,
                force,
            )
        )
    except KeyboardInterrupt:
        interrupted = True
    if mode == "json":
        print(json.dumps(summary.as_dict(interrupted)), flush=True)
    else:
        from rich.console import Console

        Console(stderr=True).print(summary.table(interrupted))
    if interrupted:
        sys.exit(130)
    if summary.counts["failed"] or summary.counts["rejected"]:
        sys.exit(1)


async def _run(
    entries: list[Any],
    out: Path,
    length: tuple[int | None, int | None, int | None],
    seed: int | None,
    concurrency: int | None,
    config_path: str | None,
    provider: str | None,
    mode: str,
    ray_address: str | None,
    summary: Summary,
    force: bool = False,
) -> None:
    scenes, chapters, per_chapter = length
    async with StoryEngine.from_config(config_path, provider=provider) as engine:
        executor: Executor | None = None
        if ray_address is not None:
            from ..batch.ray_runner import RayExecutor

            executor = RayExecutor(engine, address=ray_address or None, concurrency=concurrency)
        with BatchProgress(mode) as progress:
            results = run_batch(
                engine,
                entries,
                out=out,
                scenes=scenes,
                chapters=chapters,
                scenes_per_chapter=per_chapter,
                seed=seed,
                concurrency=concurrency,
                on_event=progress,
                executor=executor,
                force=force,
            )
            async with aclosing(results):
                async for result in results:
                    summary.add(result)


COMMANDS = [batch]
