"""`storyengine serve`: the web app (write, watch and steer a story in the browser)."""

from __future__ import annotations

import errno
import ipaddress
import secrets
import socket

import click

from ..config import WEB_TOKEN_ENV, load_settings, web_token
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
@click.option(
    "--token",
    default=None,
    help=f"Access token the API requires (default: ${WEB_TOKEN_ENV}, else a new random one when "
    "binding beyond loopback).",
)
@click.option(
    "--no-auth",
    is_flag=True,
    help="Serve beyond loopback without a token (anyone on the network can use it).",
)
def serve(
    host: str, port: int, config_path: str | None, provider: str | None, token: str | None, no_auth: bool
) -> None:
    """Serve the web app: runs and versions are kept in the data directory, across restarts.

    On loopback (the default) no token is needed. Bound to any other address, every API call
    needs a token: given with --token or $STORYENGINE_WEB_TOKEN, or made up and printed with
    the URL to open."""
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
    token = access_token(host, token, no_auth)
    app = create_app(
        config_engine_factory(config_path, provider),
        token=token,
        max_body_bytes=settings.web.max_request_bytes,
        hosts=[host],
    )
    sock = listening_socket(host, port)  # bound before "serving on" is said
    port = sock.getsockname()[1]  # --port 0: the one the system gave
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    click.echo(f"storyengine: serving on {url} (Ctrl+C stops)", err=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.run(sockets=[sock])
    if not server.started:  # uvicorn said why (the app's startup failed); not a story's exit 3
        raise ConfigError(f"the web app did not start on {url}; see the message above")


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port and listening (as uvicorn binds one); ConfigError (one line,
    exit 2) when it cannot be: the port is taken, the address is not this machine's, ..."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except (OSError, OverflowError) as exc:
        sock.close()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        code = exc.errno if isinstance(exc, OSError) else None
        if code == errno.EADDRINUSE:
            hint = "another server is using that port: stop it, or choose another with --port"
        elif code == errno.EACCES:
            hint = "this user may not use that port (below 1024 needs root): choose another with --port"
        else:
            hint = "give an address of this machine with --host (127.0.0.1 by default)"
        raise ConfigError(f"cannot listen on {host}:{port}: {reason}; {hint}") from None
    sock.set_inheritable(True)
    return sock


def access_token(host: str, given: str | None, no_auth: bool) -> str | None:
    """The token the API will require: None on loopback (unless given) or with --no-auth."""
    if no_auth:
        if not _is_loopback(host):
            click.echo(
                f"storyengine: warning: serving on {host} with --no-auth: anyone who can reach it can "
                "start runs with your providers (and their API keys) and read every story",
                err=True,
            )
        return None
    token = (given or "").strip() or web_token()
    if token is None and not _is_loopback(host):
        token = secrets.token_urlsafe(24)
    return token


COMMANDS = [serve]
