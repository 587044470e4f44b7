"""`storyengine revise RUN_ID`: apply a version's suggestions as a new version, and write it out.

The scenes the enhancement's suggestions target are rewritten by the run engine (see
pipeline/revision.py); the new version is written like `generate` writes a story, and the
story's quality by code is printed before and after. `generate --revise` does the same right
after writing the story it generated.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from ..config import Settings
from ..export import write_story
from ..pipeline.checkpoint import resume_command
from ..pipeline.engine import StoryEngine
from ..pipeline.runstore import Version
from ..quality import HIGHER_IS_BETTER
from .generate import Resume, _check_out_dir, _Progress, _report_gaps
from .options import force_option, route_options, run_id_value, seed_option


def revision_summary(story: Any) -> list[str]:
    """What a revision did, in lines for a person: rewritten, kept, not applied, measures."""
    record = story.meta.get("revision") or {}
    lines = []
    revised = ", ".join(map(str, record.get("revised", []))) or "none"
    lines.append(f"Rewritten scene(s): {revised} (from version {record.get('base')})")
    for scene, worse in (record.get("kept_earlier") or {}).items():
        lines.append(f"Scene {scene} kept as it was: its rewrite made the story worse ({'; '.join(worse)})")
    for item in record.get("untargeted", []):
        lines.append(f"Not applied, it names nothing in the story: {item['target']!r}: {item['change']}")
    before, after = record.get("before") or {}, record.get("after") or {}
    if before:
        width = max(len(name) for name in before)
        lines.append(f"{'quality by code'.ljust(width)}  {'before':>8}  {'after':>8}")
        for name, old in before.items():
            new = after.get(name)
            mark = ""
            if old is not None and new is not None and old != new:
                better = (new > old) == (name in HIGHER_IS_BETTER)
                mark = "  better" if better else "  worse"
            lines.append(f"{name.ljust(width)}  {_value(old):>8}  {_value(new):>8}{mark}")
    return lines


def _value(value: Any) -> str:
    return "-" if value is None else f"{value:g}"


async def revise_run(
    engine: StoryEngine,
    run_id: str,
    *,
    base: int | None,
    seed: int | None,
    provider: str | None,
    mode: str,
) -> Version:
    with _Progress(mode) as progress:
        return await engine.revise(run_id, base=base, seed=seed, provider=provider, on_event=progress)


def write_revision(
    version: Version, out_dir: Path, mode: str, *, resume: Resume, force: bool = False
) -> None:
    """Write the revised story, print its paths, and what the revision did (stderr). `out_dir` may
    hold an earlier story of the same run, not another run's (unless `force`)."""
    story = version.the_story()
    paths = write_story(story, _check_out_dir(out_dir, version.run_id, force=force))
    if mode == "json":
        written = {k: str(v) for k, v in paths.items()}
        event = {"event": "revised", "run_id": version.run_id, "version": version.number, **written}
        print(json.dumps({**event, "revision": story.meta.get("revision")}, ensure_ascii=False))
    else:
        for line in revision_summary(story):
            click.echo(line, err=True)
        for path in paths.values():
            click.echo(str(path))
    # The gaps are the steering job's: its checkpoint (the story's meta run id) resumes them.
    _report_gaps(story, resume(str(story.meta.get("run_id") or version.run_id), out_dir), say=mode != "json")


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
    out_dir = _check_out_dir(out, run_id, force=force) if out else None
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
