"""What the story commands print and write, shared by `generate` and `revise` (and `generate
--revise`): the output folder check, live progress, the gaps report and its exit code, and the
written revision with its summary."""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from ..errors import InputError
from ..export import check_story_dir, write_story
from ..pipeline.run import Event
from ..pipeline.runstore import Version
from ..quality import HIGHER_IS_BETTER
from .live import LiveDrafts

EXIT_GAPS = 3  # the story was written, but a part after it (evaluation, enhancement, revision) is missing


Resume = Callable[[str, Path | None], str]
"""The command that continues a run (by id, into a folder or the default one), as it can be typed
(`checkpoint.resume_command` with the settings the run was made with: its --config)."""


def check_out_dir(out: Path, run_id: str | None = None, *, force: bool = False) -> Path:
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


class Progress:
    """Live progress: a status line with rich (and each draft as it is written, live.py), or one
    JSON event a line. Remembers the run id its events name (`run_id`), for a Ctrl-C."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.console = Console(stderr=True)
        self.status: Any = None
        self.live: LiveDrafts | None = None
        self.run_id: str | None = None

    def __enter__(self) -> Progress:
        if self.mode == "rich":
            self.status = self.console.status("starting")
            self.status.__enter__()
            self.live = LiveDrafts(self.console.file, pause=self.status.stop, resume=self.status.start)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.close()
        if self.status is not None:
            self.status.__exit__(None, None, None)

    def __call__(self, event: Event) -> None:
        self.run_id = self.run_id or event.get("run_id")
        if self.mode == "json":
            print(json.dumps(event, ensure_ascii=False), flush=True)
            return
        if self.mode != "rich" or (self.live is not None and self.live(event)):
            return
        if event["event"] not in ("step_started", "step_done"):
            return
        where = f" {event['index']} of {event['total']}" if "index" in event else ""
        where += f" (chapter {event['chapter']})" if "chapter" in event else ""
        text = (
            f"{event['step']}{where} · {event['stage']} · {event['tokens']} tokens · {event['elapsed']:.0f}s"
        )
        if event["event"] == "step_done":
            line = f"[green]✓[/] {text}"
            if self.live is not None:
                self.live.note(lambda: self.console.print(line))
            else:
                self.console.print(line)
        self.status.update(text)


def report_gaps(story: Any, resume: str, *, say: bool = True) -> None:
    """Say what is missing from a written story and the command that tries it again (`resume`),
    and exit with EXIT_GAPS when something is missing."""
    if not story.gaps:
        return
    if say:
        for part, why in story.gaps.items():
            click.echo(f"storyengine: the story is written without its {part}: {why}", err=True)
        click.echo(f"Try the missing parts again with: {resume}", err=True)
    sys.exit(EXIT_GAPS)


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


def write_revision(
    version: Version, out_dir: Path, mode: str, *, resume: Resume, force: bool = False
) -> None:
    """Write the revised story, print its paths, and what the revision did (stderr). `out_dir` may
    hold an earlier story of the same run, not another run's (unless `force`)."""
    story = version.the_story()
    paths = write_story(story, check_out_dir(out_dir, version.run_id, force=force))
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
    report_gaps(story, resume(str(story.meta.get("run_id") or version.run_id), out_dir), say=mode != "json")
