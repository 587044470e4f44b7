"""The web app off loopback: a token for every API call and the event stream, bounded request
bodies, JSON errors; `storyengine serve` makes and prints the token like Jupyter does."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from fastapi import FastAPI

from storyengine.cli import main
from storyengine.commands.serve import access_token
from storyengine.config import parse_settings
from storyengine.pipeline.engine import StoryEngine
from storyengine.providers.fake_story import story_script
from storyengine.providers.scripted import ScriptedProvider
from storyengine.web.app import create_app
from storyengine.web.guard import Guard

TOKEN = "s3cr3t-t0ken-for-tests"
PREMISE = "A cartographer discovers that her maps redraw themselves overnight."
SETTINGS = """
providers:
  embedded: {type: embedded, context_window: 8192, profile: standard}
retry: {attempts: 2, backoff_initial: 0, backoff_max: 0}
cache: {enabled: false}
"""


class Engines:
    def __init__(self) -> None:
        self.built = 0

    def __call__(self, provider: str | None) -> StoryEngine:
        self.built += 1
        scripted = ScriptedProvider(story_script, name="embedded", structured_mode="grammar")
        settings = parse_settings(SETTINGS, source="test.yaml")
        return StoryEngine.from_config(settings=settings, providers={"embedded": scripted})


async def client_for(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield client


@pytest.fixture
def engines() -> Engines:
    return Engines()


@pytest.fixture
async def guarded(engines: Engines) -> AsyncIterator[httpx.AsyncClient]:
    async for client in client_for(create_app(engines, token=TOKEN, max_body_bytes=2_000)):
        yield client


BEARER = {"Authorization": f"Bearer {TOKEN}"}


async def test_without_the_token_the_api_answers_401_and_starts_nothing(
    guarded: httpx.AsyncClient, engines: Engines
) -> None:
    for method, path in [("GET", "/api/runs"), ("GET", "/api/providers"), ("GET", "/api/runs/x/events")]:
        response = await guarded.request(method, path)
        assert response.status_code == 401, path
        assert "token" in response.json()["error"]
    started = await guarded.post("/api/runs", json={"premise": PREMISE, "scenes": 1})
    assert started.status_code == 401
    wrong = await guarded.post(
        "/api/runs", json={"premise": PREMISE}, headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401
    assert engines.built == 0  # nothing was started, not even an engine
    listed = await guarded.get("/api/runs", headers=BEARER)
    assert listed.status_code == 200 and listed.json() == []


async def test_the_token_works_as_a_header_and_as_a_query(guarded: httpx.AsyncClient) -> None:
    assert (await guarded.get("/api/runs", headers=BEARER)).status_code == 200
    assert (await guarded.get(f"/api/runs?token={TOKEN}")).status_code == 200
    assert (await guarded.get("/api/runs?token=wrong")).status_code == 401


async def test_a_run_and_its_event_stream_with_the_token(guarded: httpx.AsyncClient) -> None:
    started = await guarded.post(
        "/api/runs", json={"premise": PREMISE, "scenes": 1, "seed": 3}, headers=BEARER
    )
    assert started.status_code == 202
    run_id = started.json()["id"]
    assert (await guarded.get(f"/api/runs/{run_id}/events")).status_code == 401
    async with guarded.stream("GET", f"/api/runs/{run_id}/events?after=-1&token={TOKEN}") as events:
        assert events.status_code == 200
        assert events.headers["content-type"].startswith("text/event-stream")
        async for line in events.aiter_lines():
            if line.startswith("data: "):
                assert '"run_started"' in line
                break


async def test_the_page_and_its_files_need_no_token(guarded: httpx.AsyncClient) -> None:
    page = await guarded.get(f"/?token={TOKEN}")
    assert page.status_code == 200 and "app.js" in page.text
    script = await guarded.get("/static/app.js")
    assert script.status_code == 200
    # the page passes the token on: header on fetch, query on the event stream and the downloads
    assert "Authorization = `Bearer ${TOKEN}`" in script.text
    assert 'new EventSource(withToken(`${runPath("/events")}' in script.text
    assert "href: withToken(runPath(" in script.text


async def test_request_bodies_are_bounded(guarded: httpx.AsyncClient, engines: Engines) -> None:
    big = {"premise": "x" * 5_000}
    declared = await guarded.post("/api/runs", json=big, headers=BEARER)
    assert declared.status_code == 413 and "2,000 bytes" in declared.json()["error"]

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 500

    streamed = await guarded.post(
        "/api/runs", content=chunks(), headers={**BEARER, "Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    assert engines.built == 0
    small = await guarded.post("/api/runs", json={"premise": PREMISE, "scenes": 1}, headers=BEARER)
    assert small.status_code == 202


async def test_on_loopback_no_token_is_needed(engines: Engines) -> None:
    async for client in client_for(create_app(engines)):
        assert (await client.get("/api/runs")).status_code == 200


async def test_an_escaping_exception_is_a_json_500() -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("the engine fell over")

    # One layer answers what escapes: web/errors.py's middleware, behind the guard as create_app
    # stacks them (the guard itself only checks the request and adds headers).
    from storyengine.web.errors import UnexpectedErrors

    app = Guard(UnexpectedErrors(broken))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        response = await client.get("/api/runs")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error: RuntimeError: the engine fell over"}


# -- storyengine serve --


def test_access_token_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STORYENGINE_WEB_TOKEN", raising=False)
    assert access_token("127.0.0.1", None, False) is None
    assert access_token("localhost", None, False) is None
    assert access_token("::1", None, False) is None
    made = access_token("0.0.0.0", None, False)
    assert made is not None and len(made) >= 24
    assert access_token("0.0.0.0", None, False) != made  # a new one each time
    assert access_token("0.0.0.0", "mine", False) == "mine"
    assert access_token("127.0.0.1", "mine", False) == "mine"  # asked for: enforced on loopback too
    assert access_token("0.0.0.0", None, True) is None
    monkeypatch.setenv("STORYENGINE_WEB_TOKEN", "from-env-123")
    assert access_token("192.168.1.5", None, False) == "from-env-123"


class Bound:
    """A stand-in for the socket `storyengine serve` binds (the tests bind no port)."""

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)

    def getsockname(self) -> tuple[str, int]:
        return self.address


def serve_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *args: str) -> tuple[Any, dict[str, Any]]:
    """Run `storyengine serve ARGS`, binding and serving replaced: (CLI result, what it would have served)."""
    import uvicorn

    from storyengine.commands import serve

    served: dict[str, Any] = {}

    def fake_run(server: uvicorn.Server, sockets: list[Any]) -> None:
        served["app"], served["sockets"] = server.config.app, sockets
        server.started = True

    monkeypatch.setattr(serve, "listening_socket", Bound)
    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    monkeypatch.delenv("STORYENGINE_WEB_TOKEN", raising=False)
    config = tmp_path / "config.yaml"
    config.write_text("web: {max_request_bytes: 1234}\n")
    result = CliRunner().invoke(main, ["serve", "--config", str(config), *args])
    return result, served


async def test_serve_beyond_loopback_prints_a_url_with_a_new_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    result, served = serve_app(monkeypatch, tmp_path, "--host", "0.0.0.0", "--port", "8765")
    assert result.exit_code == 0, result.output
    match = re.search(r"http://0\.0\.0\.0:8765/\?token=([\w-]+)", result.stderr)
    assert match, result.stderr
    token = match.group(1)
    async for client in client_for(served["app"]):
        assert (await client.get("/api/runs")).status_code == 401
        assert (await client.get(f"/api/runs?token={token}")).status_code == 200
        too_big = await client.post(f"/api/runs?token={token}", content=b"x" * 2000)
        assert too_big.status_code == 413  # web.max_request_bytes from the config


async def test_serve_no_auth_is_explicit_and_warns(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    result, served = serve_app(monkeypatch, tmp_path, "--host", "0.0.0.0", "--no-auth")
    assert result.exit_code == 0, result.output
    assert "warning" in result.stderr and "--no-auth" in result.stderr
    assert "token=" not in result.stderr
    async for client in client_for(served["app"]):
        assert (await client.get("/static/app.js")).status_code == 200
        assert (await client.post("/api/runs", content=b"x" * 2000)).status_code == 413  # still bounded


def test_serve_on_loopback_needs_no_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    result, _ = serve_app(monkeypatch, tmp_path)
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:8000/ " in result.stderr and "token=" not in result.stderr
