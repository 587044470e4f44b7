"""`storyengine revise RUN_ID`: apply a version's suggestions as a new version, and write it out.

The scenes the enhancement's suggestions target are rewritten by the run engine (see
pipeline/revision.py); the new version is written like `generate` writes a story, and the
story's quality by code is printed before and after. `generate --revise` does the same right
after writing the story it generated.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from ..config import Settings
from ..pipeline.checkpoint import resume_command
from ..pipeline.engine import StoryEngine
from ..pipeline.runstore import Version
from .options import force_option, route_options, run_id_value, seed_option
from .output import Progress, check_out_dir, write_revision


async def revise_run(
    engine: StoryEngine,
    run_id: str,
    *,
    base: int | None,
    seed: int | None,
    provider: str | None,
    mode: str,
) -> Version:
    with Progress(mode) as progress:
        return await engine.revise(run_id, base=base, seed=seed, provider=provider, on_event=progress)


@click.command()
@click.argument("run_id", callback=run_id_value)
@click.option(
    "--version", "base", type=int, default=None, help="The version to revise (default: the latest)."
)
@seed_option("Seed for the rewritten scenes (default: a new one)")
@route_options
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output directory (default: ./stories/<run id>/v<new version>).",
)
@force_option
@click.option("--json-progress", is_flag=True, help="Print one JSON event a line (for programs).")
def revise(
    run_id: str,
    base: int | None,
    seed: int | None,
    config_path: Path | None,
    provider: str | None,
    out: Path | None,
    force: bool,
    json_progress: bool,
) -> None:
    """Apply the suggestions of a version of RUN_ID: rewrite the scenes they target, as a new version."""
    out_dir = check_out_dir(out, run_id, force=force) if out else None
    mode = "json" if json_progress else ("rich" if sys.stderr.isatty() else "quiet")

    async def run() -> tuple[Version, Settings]:
        async with StoryEngine.from_config(config_path, provider=provider) as engine:
            version = await revise_run(engine, run_id, base=base, seed=seed, provider=provider, mode=mode)
            return version, engine.settings

    version, settings = asyncio.run(run())
    target = out_dir or Path("stories") / run_id / f"v{version.number}"
    if mode != "json":
        click.echo(f"Revised run {run_id}: version {version.number} ({version.label})", err=True)

    def resume(gapped: str, out: Path | None) -> str:
        return resume_command(gapped, settings, out)

    write_revision(version, target, mode, resume=resume, force=force)


COMMANDS = [revise]
