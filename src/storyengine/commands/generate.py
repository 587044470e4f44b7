"""`storyengine generate`: a premise in, story.json / story.md / story.fountain / story.epub out (and,
with --revise, the story revised by its own suggestions in OUT/revised)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import click

from ..config import load_settings
from ..errors import InputError, StoryEngineError
from ..export import write_story
from ..pipeline.checkpoint import resume_command
from ..pipeline.engine import StoryEngine
from ..pipeline.inputs import check_inputs
from ..pipeline.runstore import Version
from .options import chapter_options, force_option, premise_value, route_options, run_id_value, seed_option
from .output import EXIT_GAPS, Resume, check_out_dir, report_gaps, write_revision
from .output import Progress as _Progress


class Length(NamedTuple):
    """How long a story is asked to be: `scenes`, or `chapters` of `per_chapter` scenes."""

    scenes: int | None
    chapters: int | None
    per_chapter: int | None


@click.command()
@click.argument("premise", required=False, callback=premise_value)
@click.option("--scenes", type=int, default=None, help="Number of scenes (default: one per plot beat).")
@chapter_options()
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
    chapters: int | None,
    per_chapter: int | None,
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
        premise = check_inputs(premise or "", scenes, chapters, per_chapter)
    elif premise or scenes or chapters is not None or per_chapter is not None:
        raise InputError(
            "--resume continues a run with its own premise, scenes and chapters; give the run id "
            "(and, to change them for the steps not made yet, --seed or --provider)"
        )
    length = Length(scenes, chapters, per_chapter)
    out_dir = check_out_dir(out, resume_id, force=force) if out else None
    mode = "json" if json_progress else ("quiet" if quiet or not sys.stderr.isatty() else "rich")
    started = time.perf_counter()
    watch = _Watch(resume_id)
    try:
        story, run_id, paths, revised, resume = asyncio.run(
            _run(
                config_path,
                provider,
                premise,
                length,
                seed,
                resume_id,
                mode,
                out_dir,
                revise_after,
                force,
                watch,
            )
        )
    except KeyboardInterrupt:
        _interrupted(watch, out_dir, mode)
    if mode == "json":
        written = {k: str(v) for k, v in paths.items()}
        print(json.dumps({"event": "written", "run_id": run_id, "gaps": story.gaps, **written}))
    else:
        if not quiet:
            click.echo(f"Story written in {time.perf_counter() - started:.0f}s (run {run_id}):", err=True)
        for path in paths.values():
            click.echo(str(path))
    if isinstance(revised, Version):
        if mode != "json":
            click.echo(f"Revised as version {revised.number} ({revised.label}):", err=True)
        write_revision(revised, paths["json"].parent / "revised", mode, resume=resume, force=force)
        return
    report_gaps(story, resume(run_id, out_dir), say=mode != "json")
    if revised is not None:  # asked to revise, and it could not be done: the story is written
        click.echo(f"storyengine: the story is written, not revised: {revised}", err=True)
        sys.exit(EXIT_GAPS)


async def _run(
    config_path: Path | None,
    provider: str | None,
    premise: str | None,
    length: Length,
    seed: int | None,
    resume_id: str | None,
    mode: str,
    out_dir: Path | None,
    revise_after: bool,
    force: bool,
    watch: _Watch,
) -> tuple[Any, str, dict[str, Path], Version | StoryEngineError | None, Resume]:
    """The story, written out at once (nothing is lost when a revision after it fails); then its
    revision when asked: the new version, or the error that stopped it; and how to resume. `watch`
    learns the run id and how to resume it as soon as the run starts (for a Ctrl-C)."""
    settings = load_settings(config_path)

    def resume(run_id: str, out: Path | None) -> str:
        return resume_command(run_id, settings, out)

    watch.resume = resume

    asked = provider
    if resume_id and not provider:  # a run made with --provider continues on it
        provider = await asyncio.to_thread(StoryEngine.provider_of_run, settings, resume_id)
    engine = StoryEngine.from_config(settings=settings, provider=provider)
    async with engine:
        with _Progress(mode) as progress:
            watch.progress = progress
            if resume_id:
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
                    premise,
                    scenes=length.scenes,
                    seed=seed,
                    on_event=progress,
                    provider=provider,
                    chapters=length.chapters,
                    scenes_per_chapter=length.per_chapter,
                )
        run_id = story.meta["run_id"]
        target = out_dir or Path("stories") / run_id
        paths = await asyncio.to_thread(_write_checked, story, target, force)
        if not revise_after:
            return story, run_id, paths, None, resume
        watch.written = run_id
        try:
            with _Progress(mode) as progress:
                version = await engine.revise(run_id, seed=seed, provider=provider, on_event=progress)
        except StoryEngineError as exc:
            return story, run_id, paths, exc, resume
        return story, run_id, paths, version, resume


class _Watch:
    """What a Ctrl-C needs to say how to go on: the run (known once its first event is) and the
    command that resumes it."""

    def __init__(self, resume_id: str | None) -> None:
        self.resume_id = resume_id
        self.progress: _Progress | None = None
        self.resume: Resume | None = None
        self.written: str | None = None  # the run whose story is written (a revision follows)

    @property
    def run_id(self) -> str | None:
        return self.resume_id or (self.progress.run_id if self.progress else None)


def _interrupted(watch: _Watch, out_dir: Path | None, mode: str) -> None:
    """Ctrl-C: the run's calls in flight were ended (its task cancelled); every stage it finished is
    in its checkpoint. Say how to go on, and exit 130 (as a shell does for SIGINT)."""
    run_id = watch.run_id
    if watch.written:
        click.echo(
            f"\nstoryengine: stopped during the revision; the story of run {watch.written} is written. "
            f"Revise it again with: storyengine revise {watch.written}",
            err=True,
        )
    elif run_id is None or watch.resume is None:
        click.echo("\nstoryengine: stopped before the run started; nothing was made", err=True)
    else:
        command = watch.resume(run_id, out_dir)
        if mode == "json":
            print(json.dumps({"event": "stopped", "run_id": run_id, "resume": command}), flush=True)
        click.echo(
            f"\nstoryengine: stopped; every finished step of run {run_id} is saved. Continue with: {command}",
            err=True,
        )
    sys.exit(130)


def _write_checked(story: Any, target: Path, force: bool) -> dict[str, Path]:
    """Write `story` into `target` (made if needed), unless it holds another run's story and not
    `force`: asked again now the run id is known (a default folder, or one filled meanwhile)."""
    return write_story(story, check_out_dir(target, story.meta["run_id"], force=force))


COMMANDS = [generate]
