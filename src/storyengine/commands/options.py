"""Options several commands share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

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
