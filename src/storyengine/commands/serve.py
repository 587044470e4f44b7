"""`storyengine serve`: the web app (write, watch and steer a story in the browser)."""

from __future__ import annotations

import ipaddress

import click

from ..config import load_settings
from ..errors import ConfigError


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to bind.")
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), default=None, help="config.yaml to use."
)
@click.option(
    "--provider", default=None, help="Route every component to this configured provider by default."
)
def serve(host: str, port: int, config_path: str | None, provider: str | None) -> None:
    """Serve the web app: runs and versions are kept in the data directory, across restarts."""
    try:
        import uvicorn

        from ..web.app import config_engine_factory, create_app
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"the web app needs {exc.name}, which is not installed; install it with: "
            "pip install 'storyengine[web]'"
        ) from None
    settings = load_settings(config_path)  # a broken config fails here, before binding
    if provider:
        settings.with_route(provider)
    if not _is_loopback(host):
        click.echo(
            f"storyengine: warning: serving on {host}: anyone who can reach it can start runs "
            "with your providers (and their API keys)",
            err=True,
        )
    app = create_app(config_engine_factory(config_path, provider))
    click.echo(f"storyengine: serving on http://{host}:{port}/ (Ctrl+C stops)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


COMMANDS = [serve]
