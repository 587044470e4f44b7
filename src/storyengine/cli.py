"""The `storyengine` command: a thin click group. `asyncio.run` lives only at this edge.

Each command group lives in `storyengine.commands.<name>`; this module wires them in and
turns every StoryEngineError into one clear line and a non-zero exit (a traceback only with
--debug).
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from .errors import RunFailed, StoryEngineError

COMMAND_MODULES = (
    "providers",
    "templates",
    "generate",
    "revise",
    "batch",
    "eval",
    "logs",
    "cache",
    "bench",
    "serve",
)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StoryEngineError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"storyengine: error: {exc}", err=True)
            sys.exit(1 if isinstance(exc, RunFailed) else 2)  # a run that stopped; else bad input
        except (click.exceptions.Exit, click.ClickException, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # a bug: still one line, and what to do (the traceback with --debug)
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(
                f"storyengine: internal error: {type(exc).__name__}: {exc} (finished steps are saved; "
                "run again with --debug before the command for the traceback, and report it)",
                err=True,
            )
            sys.exit(1)


@click.group(cls=_Group)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.version_option(package_name="storyengine")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Turn a premise into a story, as typed, schema-valid data."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"storyengine.commands.{_name}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"storyengine.commands.{_name}":
            raise
        continue
    for _command in _module.COMMANDS:
        main.add_command(_command)
