"""`storyengine logs`: the model calls in the run log, as a table or one JSON object a line."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..config import load_settings
from ..errors import InputError
from ..routing.instrument import CallRecord
from ..runlog import RunLog

_PIPED_WIDTH = 200
_COLUMNS = ("time (UTC)", "run", "kind", "step", "stage", "try", "provider", "outcome", "s", "tokens")
_OUTCOME_STYLE = {"ok": "green", "retry": "yellow", "fallback": "magenta", "error": "red", "invalid": "red"}


@click.command("logs")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="The config file to read.")
@click.option("--run", "run_id", help="Only the calls of this run.")
@click.option("--component", help="Only the calls of this component (plot, scene, ...).")
@click.option("--failed", is_flag=True, help="Only attempts and calls that did not succeed.")
@click.option(
    "--limit", default=100, show_default=True, type=click.IntRange(min=1), help="The latest N rows."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line instead of a table.")
def logs(
    config_path: str | None,
    run_id: str | None,
    component: str | None,
    failed: bool,
    limit: int,
    as_json: bool,
) -> None:
    """Show the model calls recorded in the run log: every attempt, fallback and final outcome."""
    settings = load_settings(config_path)
    path = settings.runlog_path
    if not path.exists():
        click.echo(f"No run log yet at {path}: nothing has been generated with this config.", err=True)
        return
    runlog = RunLog(path, warn=False)
    try:
        if not runlog.available:
            raise InputError(f"cannot read the run log at {path} ({runlog.problem}); move or delete the file")
        records = runlog.calls(run_id=run_id, component=component, failed=failed, limit=limit)
    finally:
        runlog.close()
    if as_json:
        for record in records:
            click.echo(json.dumps(record.model_dump(mode="json"), ensure_ascii=False))
        return
    if not records:
        click.echo("No calls match.", err=True)
        return
    console = Console()
    if not console.is_terminal:  # piped or redirected: do not squeeze the table to 80 columns
        console = Console(width=_PIPED_WIDTH)
    console.print(_table(records))


def _table(records: list[CallRecord]) -> Table:
    table = Table(show_lines=False)
    for column in _COLUMNS:
        table.add_column(column, no_wrap=True)
    table.add_column("error", overflow="fold")
    for r in records:
        style = _OUTCOME_STYLE.get(r.outcome, "")
        hit = " (cache)" if r.cache_hit else ""
        table.add_row(
            r.created_at.strftime("%m-%d %H:%M:%S"),
            (r.run_id or "-")[:10],
            r.kind,
            r.step or r.component,  # a call made outside a run's steps: its component
            r.stage,
            str(r.attempt),
            r.provider or "-",
            Text(r.outcome + hit, style=style),
            f"{r.latency_s:.2f}",
            f"{r.prompt_tokens}+{r.completion_tokens}",
            Text(r.error or ""),
        )
    return table


COMMANDS = [logs]
