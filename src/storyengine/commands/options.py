"""Options several commands share, and the checks that make bad input one clear line.

A check here raises InputError from a click callback: the CLI's group turns it into one line and
exit 2, before any engine is built or any file written (click's own usage errors print three).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..errors import InputError
from ..pipeline.checkpoint import check_run_id, unwritable_text
from ..pipeline.inputs import DEFAULT_SCENES_PER_CHAPTER
from ..schemas import MAX_CHAPTERS, MAX_SCENES_PER_CHAPTER
from ..seeds import SEED_MAX

F = TypeVar("F", bound=Callable[..., Any])


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="config.yaml to use (default: $STORYENGINE_CONFIG, else the packaged default).",
)
"""--config, as `config_path` (a Path or None)."""


def route_options(f: F) -> F:
    """--config (as `config_path`, a Path) and --provider: which config, and which provider to route to."""
    f = config_option(f)
    return click.option(
        "--provider", default=None, help="Route every component to this configured provider."
    )(f)


def chapter_options(whose: str = "") -> Callable[[F], F]:
    """--chapters and --scenes-per-chapter (as `chapters`, `per_chapter`): a long story's length;
    `whose` ends their help (a batch's: "for lines that give none")."""

    def add(f: F) -> F:
        f = click.option(
            "--scenes-per-chapter",
            "per_chapter",
            type=int,
            default=None,
            help=f"Scenes in each chapter (1-{MAX_SCENES_PER_CHAPTER}; default "
            f"{DEFAULT_SCENES_PER_CHAPTER}){whose}.",
        )(f)
        return click.option(
            "--chapters",
            type=int,
            default=None,
            help=f"A long story of this many chapters (1-{MAX_CHAPTERS}; the plot is their outline){whose}.",
        )(f)

    return add


def _seed_in_range(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    """A seed is stored as an SQLite integer and handed to servers as a 32-bit one: 0..SEED_MAX."""
    if value is not None and not 0 <= value <= SEED_MAX:
        raise InputError(f"--seed must be between 0 and {SEED_MAX}, not {value}")
    return value


def seed_option(help_text: str) -> Callable[[F], F]:
    """--seed N, checked against the range every seed must be in (SEED_MAX)."""
    return click.option(
        "--seed", type=int, default=None, callback=_seed_in_range, help=f"{help_text} (0 to {SEED_MAX})"
    )


def run_id_value(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A click callback: a run id given on the command line names files, so it must be one."""
    if value is None:
        return None
    return check_run_id(value, f"given as {param.opts[0] if param.opts else param.name}")


def premise_value(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A click callback: a premise that cannot be written as UTF-8 (undecodable bytes in the
    command line arrive as lone surrogates) is refused before a run or a file is made for it."""
    why = unwritable_text(value) if value else None
    if why:
        raise InputError(f"the premise cannot be written: {why}; give it as plain UTF-8 text")
    return value


force_option = click.option(
    "--force",
    is_flag=True,
    help="Write into --out even when it holds another run's story (it is replaced).",
)
"""--force: replace a story of another run in --out (export.check_story_dir)."""
