"""`storyengine eval STORY.json`: the quality report of a story, computed by code (quality.py).

Reads only; writes nothing. A file that is not a Story ends in one line and exit code 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from ..errors import InputError
from ..quality import NotAStory, QualityReport, load_story, quality_report
from ..schemas import Story


@click.command("eval")
@click.argument("story_path", metavar="STORY.json", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def eval_command(story_path: Path, as_json: bool) -> None:
    """Print the quality report of STORY.json: repetition, distinct-n, cut-offs, debris, premise
    coverage, cast consistency, prose per scene, tension against the plan, and whether the
    model's own rubric can be trusted."""
    story, sane = read_story(story_path)
    report = quality_report(story)
    if as_json:
        click.echo(json.dumps({"file": str(story_path), "passes_text_rules": sane, **report.model_dump()}))
        return
    _print(story_path, story.plot.title, sane, report)


def _print(path: Path, title: str, sane: bool, report: QualityReport) -> None:
    console = Console()
    if not console.is_terminal:
        console.width = 120
    console.print(f"[bold]{title}[/] · {path}", highlight=False)
    if not sane:
        console.print(
            "note: the text rules find words in this story that code cannot repair (see the rows "
            "below); measured as it is"
        )
    table = Table(show_header=True, header_style="bold")
    table.add_column("measure")
    table.add_column("value", overflow="fold")
    for name, value in report.as_rows():
        table.add_row(name, value)
    console.print(table)
    scenes = Table(title="scenes", show_header=True, header_style="bold", title_justify="left")
    for column in ("#", "title", "prose words", "lines", "planned tension", "tension words /100"):
        scenes.add_column(column)
    for s in report.scenes:
        planned = "-" if s.planned_tension is None else str(s.planned_tension)
        scenes.add_row(
            str(s.index),
            s.title,
            str(s.prose_words),
            str(s.dialogue_lines),
            planned,
            f"{s.tension_words_per_100:g}",
        )
    console.print(scenes)
    verdict = "passes every goal" if not report.failed else f"fails {len(report.failed)} goal(s)"
    rubric = "reliable" if report.rubric_reliable else "NOT reliable"
    console.print(f"verdict: {verdict}; the model's rubric ({report.rubric_overall}/10) is {rubric}")


COMMANDS = [eval_command]


def read_story(story_path: Path) -> tuple[Story, bool]:
    """The story in `story_path` (a story.json) and whether the text rules pass it; InputError saying
    what is wrong with a file that cannot be read or is not a story."""
    try:
        text = story_path.expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InputError(f"cannot read {story_path}: {reason}") from None
    try:
        return load_story(text)
    except NotAStory as exc:
        raise InputError(
            f"{story_path} is not a storyengine story ({exc}); give the story.json that "
            "`storyengine generate` wrote"
        ) from None
