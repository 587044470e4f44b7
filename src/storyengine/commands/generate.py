"""`storyengine generate`: a premise in, story.json / story.md / story.fountain / story.epub out (and,
with --revise, the story revised by its own suggestions in OUT/revised)."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from ..config import load_settings
from ..errors import InputError, StoryEngineError
from ..export import check_story_dir, write_story
from ..pipeline.checkpoint import CheckpointStore, checkpoint_dir, resume_command
from ..pipeline.engine import StoryEngine, check_inputs
from ..pipeline.run import Event
from ..pipeline.runstore import Version
from .options import force_option, premise_value, route_options, run_id_value, seed_option


def _check_out_dir(out: Path, run_id: str | None = None, *, force: bool = False) -> Path:
    """Create `out` and prove it writable now, before any model call; refuse it when it holds the
    story of another run than `run_id` (None: a new run) unless `force` (export.check_story_dir)."""
    out = out.expanduser()
    check_story_dir(out, run_id, force=force)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise InputError(f"cannot write to --out {out}: {exc.strerror or exc}") from None
    return out


class _Progress:
    """Live progress: a status line with rich, or one JSON event a line."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.console = Console(stderr=True)
        self.status: Any = None

    def __enter__(self) -> _Progress:
        if self.mode == "rich":
            self.status = self.console.status("starting")
            self.status.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.__exit__(None, None, None)

    def __call__(self, event: Event) -> None:
        if self.mode == "json":
            print(json.dumps(event, ensure_ascii=False), flush=True)
            return
        if self.mode != "rich" or event["event"] not in ("step_started", "step_done"):
            return
        where = f" {event['index']} of {event['total']}" if "index" in event else ""
        text = (
            f"{event['step']}{where} · {event['stage']} · {event['tokens']} tokens · {event['elapsed']:.0f}s"
        )
        if event["event"] == "step_done":
            self.console.print(f"[green]✓[/] {text}")
        self.status.update(text)


@click.command()
@click.argument("premise", required=False, callback=premise_value)
@click.option("--scenes", type=int, default=None, help="Number of scenes (default: one per plot beat).")
@seed_option("Seed for reproducible stories")
@route_options
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output directory (default: ./stories/<run id>).",
)
@force_option
@click.option(
    "--resume",
    "resume_id",
    default=None,
    callback=run_id_value,
    help="Continue a run that stopped, by its run id.",
)
@click.option(
    "--revise",
    "revise_after",
    is_flag=True,
    help="Then apply the story's suggestions (as `storyengine revise`); the revision goes to OUT/revised.",
)
@click.option("--quiet", is_flag=True, help="Print only the output paths.")
@click.option("--json-progress", is_flag=True, help="Print one JSON event a line (for programs).")
def generate(
    premise: str | None,
    scenes: int | None,
    seed: int | None,
    config_path: Path | None,
    provider: str | None,
    out: Path | None,
    force: bool,
    resume_id: str | None,
    revise_after: bool,
    quiet: bool,
    json_progress: bool,
) -> None:
    """Generate a story from PREMISE: plot, scenes, dialogue, evaluation, enhancement."""
    if resume_id is None:
        premise = check_inputs(premise or "", scenes)
    elif premise or scenes:
        raise InputError(
            "--resume continues a run with its own premise and scenes; give the run id "
            "(and, to change them for the steps not made yet, --seed or --provider)"
        )
    out_dir = _check_out_dir(out, resume_id, force=force) if out else None
    mode = "json" if json_progress else ("quiet" if quiet or not sys.stderr.isatty() else "rich")
    started = time.perf_counter()
    story, run_id, paths, revised, resume = asyncio.run(
        _run(config_path, provider, premise, scenes, seed, resume_id, mode, out_dir, revise_after, force)
    )
    if mode == "json":
        written = {k: str(v) for k, v in paths.items()}
        print(json.dumps({"event": "written", "run_id": run_id, "gaps": story.gaps, **written}))
    else:
        if not quiet:
            click.echo(f"Story written in {time.perf_counter() - started:.0f}s (run {run_id}):", err=True)
        for path in paths.values():
            click.echo(str(path))
    if isinstance(revised, Version):
        from .revise import write_revision

        if mode != "json":
            click.echo(f"Revised as version {revised.number} ({revised.label}):", err=True)
        write_revision(revised, paths["json"].parent / "revised", mode, resume=resume, force=force)
        return
    _report_gaps(story, resume(run_id, out_dir), say=mode != "json")
    if revised is not None:  # asked to revise, and it could not be done: the story is written
        click.echo(f"storyengine: the story is written, not revised: {revised}", err=True)
        sys.exit(EXIT_GAPS)


EXIT_GAPS = 3  # the story was written, but a part after it (evaluation, enhancement, revision) is missing


Resume = Callable[[str, Path | None], str]
"""The command that continues a run (by id, into a folder or the default one), as it can be typed
(`checkpoint.resume_command` with the settings the run was made with: its --config)."""


def _report_gaps(story: Any, resume: str, *, say: bool = True) -> None:
    """Say what is missing from a written story and the command that tries it again (`resume`),
    and exit with EXIT_GAPS when something is missing."""
    if not story.gaps:
        return
    if say:
        for part, why in story.gaps.items():
            click.echo(f"storyengine: the story is written without its {part}: {why}", err=True)
        click.echo(f"Try the missing parts again with: {resume}", err=True)
    sys.exit(EXIT_GAPS)


async def _run(
    config_path: Path | None,
    provider: str | None,
    premise: str | None,
    scenes: int | None,
    seed: int | None,
    resume_id: str | None,
    mode: str,
    out_dir: Path | None,
    revise_after: bool,
    force: bool,
) -> tuple[Any, str, dict[str, Path], Version | StoryEngineError | None, Resume]:
    """The story, written out at once (nothing is lost when a revision after it fails); then its
    revision when asked: the new version, or the error that stopped it; and how to resume."""
    settings = load_settings(config_path)

    def resume(run_id: str, out: Path | None) -> str:
        return resume_command(run_id, settings, out)

    asked = provider
    if resume_id and not provider:  # a run made with --provider continues on it
        header = (await asyncio.to_thread(CheckpointStore(checkpoint_dir(settings)).load, resume_id)).header
        recorded = header.get("provider")
        provider = recorded if recorded in settings.providers else None  # gone: the engine says so
    engine = StoryEngine.from_config(settings=settings, provider=provider)
    async with engine:
        with _Progress(mode) as progress:
            if resume_id:
                await asyncio.to_thread(engine.checkpoints.load, resume_id)  # an unknown id fails here
                if (seed is not None or asked) and mode != "json":
                    changes = [f"seed {seed}"] if seed is not None else []
                    changes += [f"provider {asked}"] if asked else []
                    click.echo(
                        f"Resuming {resume_id} with {' and '.join(changes)} for the steps not made yet; "
                        "finished steps keep what they were made with.",
                        err=True,
                    )
                story = await engine.resume(resume_id, on_event=progress, seed=seed, provider=provider)
            else:
                assert premise is not None
                story = await engine.generate(
                    premise, scenes=scenes, seed=seed, on_event=progress, provider=provider
                )
        run_id = story.meta["run_id"]
        target = out_dir or Path("stories") / run_id
        paths = await asyncio.to_thread(_write_checked, story, target, force)
        if not revise_after:
            return story, run_id, paths, None, resume
        try:
            with _Progress(mode) as progress:
                version = await engine.revise(run_id, seed=seed, provider=provider, on_event=progress)
        except StoryEngineError as exc:
            return story, run_id, paths, exc, resume
        return story, run_id, paths, version, resume


def _write_checked(story: Any, target: Path, force: bool) -> dict[str, Path]:
    """Write `story` into `target` (made if needed), unless it holds another run's story and not
    `force`: asked again now the run id is known (a default folder, or one filled meanwhile)."""
    return write_story(story, _check_out_dir(target, story.meta["run_id"], force=force))


COMMANDS = [generate]
