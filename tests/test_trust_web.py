"""The web app trusts no other site and no odd input: DNS rebinding and cross-site requests are
refused, every POST is JSON, every answer carries security headers; a run whose process died can
be resumed from the page; one job per run, however fast the requests come; out-of-range numbers
and lone surrogates are 422s; a damaged run store is named; `serve` binds before it says so."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from storyengine.cli import main
from storyengine.config import parse_settings
from storyengine.errors import ProviderUnavailable, RunFailed
from storyengine.providers.fake_story import story_script
from storyengine.types import CompletionRequest
from storyengine.web.app import create_app
from test_revision import BETTER, script
from test_web_api import PREMISE, SETTINGS, Engines, events_of, finished_run

BIG = 2**63  # one past SQLite's largest INTEGER
HOST = socket.gethostname()  # as the run store records it


async def serving(app: Any, base_url: str = "http://127.0.0.1") -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url) as http:
        yield http
    await app.state.store.cancel_all()
    await app.state.engines.aclose()


@pytest.fixture
def engines() -> Engines:
    return Engines()


@pytest.fixture
async def client(engines: Engines) -> AsyncIterator[httpx.AsyncClient]:
    async for http in serving(create_app(engine_factory=engines)):
        yield http


# -- 6: DNS rebinding, cross-site requests, JSON only --


async def test_a_name_rebound_to_loopback_reads_nothing_and_starts_nothing(
    client: httpx.AsyncClient, engines: Engines
) -> None:
    rebound = {"Host": "attacker.example:8000"}
    for path in ["/", "/api/runs", "/api/providers", "/static/app.js"]:
        refused = await client.get(path, headers=rebound)
        assert refused.status_code == 403, path
        assert "attacker.example" in refused.json()["error"] and "localhost" in refused.json()["error"]
    started = await client.post("/api/runs", json={"premise": PREMISE, "scenes": 1}, headers=rebound)
    assert started.status_code == 403
    for host in ["127.0.0.1:8000", "localhost:8000", "LOCALHOST", "[::1]:8000", "127.0.0.1"]:
        assert (await client.get("/api/runs", headers={"Host": host})).status_code == 200, host
    assert (await client.get("/api/runs")).json() == [] and engines.providers == []


async def test_the_host_the_server_was_started_on_is_allowed_and_no_other(engines: Engines) -> None:
    async for http in serving(create_app(engine_factory=engines, hosts=["192.168.7.5"])):
        assert (await http.get("/api/runs", headers={"Host": "192.168.7.5:8000"})).status_code == 200
        assert (await http.get("/api/runs", headers={"Host": "192.168.7.6:8000"})).status_code == 403
        assert (await http.get("/api/runs", headers={"Host": "localhost:8000"})).status_code == 200
    # bound to every interface: any address of the machine, and its own name; never another name
    async for http in serving(create_app(engine_factory=engines, hosts=["0.0.0.0"], token="t")):
        bearer = {"Authorization": "Bearer t"}
        for host in ["10.1.2.3:8000", f"{socket.gethostname()}:8000", "[fe80::1]:8000"]:
            assert (await http.get("/api/runs", headers={**bearer, "Host": host})).status_code == 200, host
        assert (await http.get("/api/runs", headers={**bearer, "Host": "evil.example"})).status_code == 403


async def test_another_origin_cannot_change_anything(client: httpx.AsyncClient, engines: Engines) -> None:
    body = {"premise": PREMISE, "scenes": 1}
    for headers in [
        {"Origin": "http://attacker.example"},
        {"Origin": "http://127.0.0.1:3000"},  # another port on this machine is another origin
        {"Origin": "null"},  # a sandboxed frame, a file:// page
        {"Sec-Fetch-Site": "cross-site"},
    ]:
        refused = await client.post("/api/runs", json=body, headers=headers)
        assert refused.status_code == 403, headers
        assert "another" in refused.json()["error"]
    assert (await client.get("/api/runs")).json() == [] and engines.providers == []
    # the page's own origin (and a client that sends none) may
    own = await client.post("/api/runs", json=body, headers={"Origin": "http://127.0.0.1"})
    assert own.status_code == 202, own.text
    await events_of(client, own.json()["id"])


async def test_every_post_must_be_json_also_without_a_body(
    client: httpx.AsyncClient, engines: Engines
) -> None:
    as_text = await client.post(
        "/api/runs", content=json.dumps({"premise": PREMISE}), headers={"Content-Type": "text/plain"}
    )
    as_form = await client.post("/api/runs", data={"premise": PREMISE})
    for refused in (as_text, as_form):
        assert refused.status_code == 415
        assert "Content-Type: application/json" in refused.json()["error"]
    assert (await client.get("/api/runs")).json() == [] and engines.providers == []

    run = await finished_run(client)
    base = f"/api/runs/{run['id']}"
    bodiless = [
        "/versions/1/restore",
        "/resume",
        "/revise",
        "/scenes/0/regenerate",
        "/scenes/0/dialogue/regenerate",
    ]
    for path in bodiless:
        for headers in [
            {},
            {"Content-Type": "text/plain"},
            {"Content-Type": "application/x-www-form-urlencoded"},
        ]:
            refused = await client.post(base + path, headers=headers)
            assert refused.status_code == 415, (path, headers)
    assert [v["number"] for v in (await client.get(f"{base}/versions")).json()] == [1]  # nothing was made
    restored = await client.post(f"{base}/versions/1/restore", headers={"Content-Type": "application/json"})
    assert restored.status_code == 201 and restored.json()["number"] == 2  # JSON without a body: fine


def test_the_page_sends_every_post_as_json() -> None:
    """The page's one API helper marks every request but a GET as JSON (restore and resume have no body)."""
    from storyengine.web.app import STATIC

    code = (STATIC / "app.js").read_text()
    helper = code[code.index("async function api(") : code.index("function showError")]
    assert 'method !== "GET"' in helper and '"Content-Type"] = "application/json"' in helper
    assert code.count("fetch(") == 1  # every call goes through it


# -- 11: security headers --


async def test_every_answer_carries_security_headers(client: httpx.AsyncClient) -> None:
    answers = {
        "page": await client.get("/"),
        "script": await client.get("/static/app.js"),
        "api": await client.get("/api/runs"),
        "404": await client.get("/api/runs/nope"),
        "refused host": await client.get("/api/runs", headers={"Host": "evil.example"}),
        "refused type": await client.post("/api/runs", content=b"x"),
        "docs": await client.get("/docs"),
    }
    for name, answer in answers.items():
        assert answer.headers["x-content-type-options"] == "nosniff", name
        assert answer.headers["x-frame-options"] == "DENY", name
        policy = answer.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy, name
    page_policy = answers["page"].headers["content-security-policy"]
    assert "script-src 'self';" in page_policy and "unsafe-inline" not in page_policy
    assert "default-src 'none'" in page_policy and "connect-src 'self'" in page_policy
    assert "cdn.jsdelivr.net" in answers["docs"].headers["content-security-policy"]  # Swagger UI's own


def test_the_page_needs_nothing_its_policy_refuses() -> None:
    """No inline script, style attribute or handler in the page; no style set as an attribute by script."""
    from storyengine.web.app import STATIC

    html = (STATIC / "index.html").read_text()
    assert "<script>" not in html and " style=" not in html and " onclick=" not in html
    assert html.count("<script") == 1 and '<script src="/static/app.js">' in html
    code = (STATIC / "app.js").read_text()
    assert "el.style.cssText = String(value)" in code  # the score bars' widths, set through the CSSOM


# -- 7: a run whose process died --


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def empty_file(path: Path) -> None:
    """`path` as an empty file, without the write-ahead log SQLite keeps beside it."""
    for name in (path.name, path.name + "-wal", path.name + "-shm"):
        (path.parent / name).unlink(missing_ok=True)
    path.write_bytes(b"")


def dead_pid() -> int:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


def kill_nine(
    store_path: Path, run_id: str, pid: int, host: str = HOST, heartbeat: float | None = None
) -> None:
    """What `kill -9` of the process writing `run_id` leaves behind: the run `running`, owned by it."""
    with sqlite3.connect(store_path) as db:
        db.execute(
            "UPDATE runs SET status = 'running', error = NULL, owner_pid = ?, owner_host = ?, heartbeat = ? "
            "WHERE id = ?",
            (pid, host, time.time() if heartbeat is None else heartbeat, run_id),
        )


async def stopped_run(engines: Engines, *, killed: bool = True) -> str:
    """A run that stopped at its dialogue; `killed`: as a killed process leaves it (still `running`)."""

    def down(request: CompletionRequest) -> Any:
        if request.component == "dialogue":
            return ProviderUnavailable("connection refused", provider="embedded")
        return story_script(request)

    async with Engines(down)(None) as engine:
        with pytest.raises(RunFailed) as caught:
            await engine.generate(PREMISE, scenes=2, seed=3)
        path = engine.runs.path
        engine.runs.close()
    run_id = caught.value.run_id
    if killed:
        kill_nine(path, run_id, dead_pid())
    return run_id


async def test_a_run_whose_process_died_is_offered_for_resume_and_resumes(
    client: httpx.AsyncClient, engines: Engines
) -> None:
    run_id = await stopped_run(engines)
    run = (await client.get(f"/api/runs/{run_id}")).json()
    assert run["status"] == "running" and run["orphaned"] is True and not run["busy"]
    assert run["owner"]["host"] == HOST
    replay = await events_of(client, run_id)  # what it finished, and why it stopped
    assert replay[-1]["event"] == "run_failed" and "stopped" in replay[-1]["error"]
    resumed = await client.post(f"/api/runs/{run_id}/resume", json={})
    assert resumed.status_code == 202, resumed.text
    events = await events_of(client, run_id, after=resumed.json()["after"])
    assert events[-1]["event"] == "run_done" and events[-1]["version"] == 1
    assert {r.component for r in engines.requests} == {"dialogue", "evaluation", "enhancement"}
    done = (await client.get(f"/api/runs/{run_id}")).json()
    assert done["status"] == "done" and done["orphaned"] is False and done["owner"] is None


async def test_a_run_whose_process_is_alive_is_not_taken_from_it(
    client: httpx.AsyncClient, engines: Engines
) -> None:
    run_id = await stopped_run(engines)
    path = client._transport.app.state.store.store.path  # type: ignore[attr-defined]
    alive = sleeper()
    try:
        kill_nine(path, run_id, alive.pid)
        run = (await client.get(f"/api/runs/{run_id}")).json()
        assert run["orphaned"] is False and run["owner"]["pid"] == alive.pid
        refused = await client.post(f"/api/runs/{run_id}/resume", json={})
        assert refused.status_code == 409 and f"process {alive.pid}" in refused.json()["error"]
        # on another host only the heartbeat tells: fresh, it is alive; an hour old, it is not
        kill_nine(path, run_id, alive.pid, host="another-host")
        assert (await client.get(f"/api/runs/{run_id}")).json()["orphaned"] is False
        kill_nine(path, run_id, alive.pid, host="another-host", heartbeat=time.time() - 3600)
        assert (await client.get(f"/api/runs/{run_id}")).json()["orphaned"] is True
        resumed = await client.post(f"/api/runs/{run_id}/resume", json={})
        assert resumed.status_code == 202, resumed.text
    finally:
        alive.kill()
        alive.wait()
    events = await events_of(client, run_id, after=resumed.json()["after"])
    assert events[-1]["event"] == "run_done"


# -- 8: one job per run --


async def test_two_simultaneous_steering_requests_start_one_job(client: httpx.AsyncClient) -> None:
    run = await finished_run(client)
    base = f"/api/runs/{run['id']}"
    for trial in range(5):
        answers = await asyncio.gather(
            client.post(f"{base}/scenes/0/regenerate", json={}),
            client.post(f"{base}/scenes/1/dialogue/regenerate", json={}),
        )
        assert sorted(a.status_code for a in answers) == [202, 409], [a.text for a in answers]
        assert "busy" in next(a for a in answers if a.status_code == 409).json()["error"]
        job = next(a for a in answers if a.status_code == 202).json()
        events = await events_of(client, run["id"], after=job["after"])
        assert [e["event"] for e in events].count("steer_done") == 1 and events[-1]["version"] == trial + 2
    versions = (await client.get(f"{base}/versions")).json()
    assert [(v["number"], v["parent"]) for v in versions] == [
        (1, None),
        (2, 1),
        (3, 2),
        (4, 3),
        (5, 4),
        (6, 5),
    ]


async def test_two_simultaneous_revisions_start_one_job() -> None:
    engines = Engines(script(["Scene 2"], BETTER))
    engines.settings = parse_settings(
        SETTINGS.replace("8192}", "8192, profile: standard}"), source="test.yaml"
    )
    async for client in serving(create_app(engine_factory=engines)):
        run = await finished_run(client)
        base = f"/api/runs/{run['id']}"
        answers = await asyncio.gather(*(client.post(f"{base}/revise", json={}) for _ in range(3)))
        assert sorted(a.status_code for a in answers) == [202, 409, 409], [a.text for a in answers]
        job = next(a for a in answers if a.status_code == 202).json()
        events = await events_of(client, run["id"], after=job["after"])
        assert events[-1]["event"] == "steer_done"
        versions = (await client.get(f"{base}/versions")).json()
        assert [(v["number"], v["parent"]) for v in versions] == [(1, None), (2, 1)]
        assert (await client.get(base)).json()["busy"] is False


async def test_a_refused_steering_request_leaves_the_run_idle(client: httpx.AsyncClient) -> None:
    run = await finished_run(client)
    base = f"/api/runs/{run['id']}"
    refused = await client.post(f"{base}/scenes/9/regenerate", json={})
    assert refused.status_code == 422
    assert (await client.get(base)).json()["busy"] is False
    events = await events_of(client, run["id"], after=(await client.get(base)).json()["events"] - 1)
    assert events == []  # the stream ends at once: no job is running
    assert (await client.post(f"{base}/scenes/0/regenerate", json={})).status_code == 202


# -- 9: input the client can fix is a 422, not a 500 --


async def test_numbers_past_the_store_and_lone_surrogates_are_422s(client: httpx.AsyncClient) -> None:
    run = await finished_run(client)
    base = f"/api/runs/{run['id']}"
    cases: list[tuple[str, str, Any]] = [
        ("GET", f"{base}/versions/{BIG}", None),
        ("GET", f"{base}/versions/{2**64}/export/json", None),
        ("GET", f"{base}/compare?a=1&b={BIG}", None),
        ("GET", f"{base}/compare?a={BIG}&b=1", None),
        ("POST", f"{base}/versions/{BIG}/restore", {}),
        ("POST", f"{base}/scenes/0/regenerate", {"base": BIG}),
        ("POST", f"{base}/scenes/0/dialogue/regenerate", {"base": 2**70}),
        ("POST", f"{base}/beats/0", {"name": "Later", "base": BIG}),
        ("POST", f"{base}/revise", {"base": BIG}),
        ("POST", f"{base}/bible", {"bible": {}, "base": BIG, "dry_run": True}),
    ]
    for method, path, body in cases:
        answer = await client.request(method, path, json=body)
        assert answer.status_code == 422, (path, body, answer.text)
        assert "less than or equal to 9223372036854775807" in answer.json()["error"], path
    raw = [
        ("/api/runs", b'{"premise": "A keeper \\ud800 finds a letter."}'),
        ("/api/runs", b'{"premise": "A keeper finds a letter.", "provider": "\\udfff"}'),
        (f"{base}/beats/0", b'{"name": "Dawn \\ud83d"}'),
        (f"{base}/bible", b'{"bible": {"setting": "\\ud800"}, "dry_run": true}'),
    ]
    for path, body in raw:
        answer = await client.post(path, content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == 422, (path, answer.text)
        assert "lone surrogate" in answer.json()["error"], path
    assert len((await client.get("/api/runs")).json()) == 1  # nothing was started
    assert len((await client.get(f"{base}/versions")).json()) == 1  # nothing was made


# -- 10: a damaged run store --


async def test_a_damaged_run_store_is_named_with_what_to_do(client: httpx.AsyncClient) -> None:
    store = client._transport.app.state.store.store  # type: ignore[attr-defined]
    store.path.parent.mkdir(parents=True, exist_ok=True)
    store.path.write_bytes(b"these are not the pages of a database " * 200)
    answer = await client.get("/api/runs")
    assert answer.status_code == 500
    error = answer.json()["error"]
    assert str(store.path) in error and "damaged" in error and "move it" in error
    assert "Traceback" not in answer.text
    # moved aside, as it says: a new one is made, and the server goes on without a restart
    store.path.rename(store.path.with_name("moved.sqlite3"))
    assert (await client.get("/api/runs")).json() == []
    started = await client.post("/api/runs", json={"premise": PREMISE, "scenes": 1})
    assert started.status_code == 202
    await events_of(client, started.json()["id"])


async def test_an_empty_run_store_lists_the_runs_of_the_checkpoints(
    client: httpx.AsyncClient, engines: Engines
) -> None:
    run = await finished_run(client)
    failed = await stopped_run(engines, killed=False)
    app = client._transport.app  # type: ignore[attr-defined]
    path: Path = app.state.store.store.path
    built = list(app.state.engines._engines.values())
    await app.state.store.cancel_all()
    await app.state.engines.aclose()
    for store in [app.state.store.store, *(engine.runs for engine in built)]:
        store.close()  # the last connection folds the write-ahead log into the file
    empty_file(path)  # no runs, although their checkpoints are on disk

    async for restarted in serving(create_app(engine_factory=Engines())):
        listed = {r["id"]: r for r in (await restarted.get("/api/runs")).json()}
        assert set(listed) == {run["id"], failed}
        assert listed[run["id"]]["premise"] == PREMISE and listed[run["id"]]["status"] == "done"
        assert listed[failed]["status"] == "failed" and "connection refused" in listed[failed]["error"]
        resumed = await restarted.post(f"/api/runs/{failed}/resume", json={})
        assert resumed.status_code == 202, resumed.text
        events = await events_of(restarted, failed, after=resumed.json()["after"])
        assert events[-1]["event"] == "run_done"


# -- 11: `storyengine serve` binds, then says so --


@pytest.fixture
def taken_port() -> Iterator[int]:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    yield holder.getsockname()[1]
    holder.close()


def test_serve_on_a_taken_port_exits_2_with_one_line(taken_port: int, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("web: {max_request_bytes: 1234}\n")
    result = CliRunner().invoke(main, ["serve", "--config", str(config), "--port", str(taken_port)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{taken_port}" in lines[0]
    assert "choose another with --port" in lines[0]
    assert "serving on" not in result.stderr and "Traceback" not in result.output


def test_serve_says_serving_on_the_port_it_has_bound(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import uvicorn

    seen: dict[str, Any] = {}

    def run(server: uvicorn.Server, sockets: list[socket.socket]) -> None:
        (sock,) = sockets
        seen["port"] = sock.getsockname()[1]
        probe = socket.create_connection(("127.0.0.1", seen["port"]), timeout=5)  # it listens already
        probe.close()
        sock.close()
        server.started = True

    monkeypatch.setattr(uvicorn.Server, "run", run)
    config = tmp_path / "config.yaml"
    config.write_text("web: {max_request_bytes: 1234}\n")
    result = CliRunner().invoke(main, ["serve", "--config", str(config), "--port", "0"])
    assert result.exit_code == 0, result.output
    assert seen["port"] != 0 and f"serving on http://127.0.0.1:{seen['port']}/ " in result.stderr


def test_a_server_that_does_not_start_is_not_a_story_exit_3(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import uvicorn

    def run(server: uvicorn.Server, sockets: list[socket.socket]) -> None:
        for sock in sockets:
            sock.close()  # the app's startup failed: uvicorn returns without having started

    monkeypatch.setattr(uvicorn.Server, "run", run)
    config = tmp_path / "config.yaml"
    config.write_text("web: {max_request_bytes: 1234}\n")
    result = CliRunner().invoke(main, ["serve", "--config", str(config), "--port", "0"])
    assert result.exit_code == 2 and "did not start" in result.stderr


def test_a_pid_is_alive_until_its_process_ends() -> None:  # what `orphaned` relies on
    from storyengine.pipeline.runstore import _pid_alive

    assert _pid_alive(os.getpid()) and not _pid_alive(dead_pid())
