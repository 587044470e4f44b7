"""The web API on the scripted provider: start, watch, steer, version, export, and every bad input."""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from ebooklib import epub

from storyengine.cli import main
from storyengine.config import parse_settings
from storyengine.errors import (
    AllProvidersFailed,
    AuthenticationError,
    BadResponse,
    ConfigError,
    InputError,
    ModelLoadError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    RunFailed,
    StructuringError,
    TemplateError,
)
from storyengine.pipeline.engine import StoryEngine
from storyengine.pipeline.runstore import NotFound
from storyengine.providers.fake_story import story_script
from storyengine.providers.scripted import Script, ScriptedProvider
from storyengine.schemas import Story
from storyengine.types import CompletionRequest
from storyengine.web.app import create_app
from storyengine.web.errors import status_of

PREMISE = "A cartographer discovers that her maps redraw themselves overnight."
OTHER = "Two rival bakers are snowed in together on the night of the village contest."
SETTINGS = """
providers:
  embedded: {type: embedded, context_window: 8192}
retry: {attempts: 2, backoff_initial: 0, backoff_max: 0}
cache: {enabled: false}
"""


def numbered_script() -> Script:
    """story_script, but every structured scene, dialogue, evaluation and enhancement says which take it is,
    so a part made again is visibly new."""
    takes: Counter[str] = Counter()

    def script(request: CompletionRequest) -> str:
        text = story_script(request)
        if request.stage != "structuring" or request.component not in (
            "scene",
            "dialogue",
            "evaluation",
            "enhancement",
        ):
            return text
        takes[request.component] += 1
        take = f"take {takes[request.component]}"
        data = json.loads(text)
        if isinstance(data, dict):  # a whole object, or (structuring in parts) one piece of it
            for key in ("title", "summary"):
                if isinstance(data.get(key), str):
                    data[key] = f"{data[key]} ({take})"
            if data.get("lines"):
                data["lines"][0]["text"] = f"{data['lines'][0]['text']} ({take})"
        return json.dumps(data)

    return script


class Engines:
    """An engine factory on the scripted provider that keeps what it built, for assertions."""

    def __init__(self, script: Script | None = None, latency: float = 0.0) -> None:
        self.script = script or numbered_script()
        self.latency = latency
        self.providers: list[ScriptedProvider] = []
        self.settings = parse_settings(SETTINGS, source="test.yaml")  # the app reads names and paths here

    def __call__(self, provider: str | None) -> StoryEngine:
        scripted = ScriptedProvider(
            self.script, name="embedded", structured_mode="grammar", latency=self.latency
        )
        self.providers.append(scripted)
        return StoryEngine.from_config(settings=self.settings, providers={"embedded": scripted})

    @property
    def requests(self) -> list[CompletionRequest]:
        return [r for p in self.providers for r in p.requests]


def parse_sse(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.split("\n\n"):
        data = [line[len("data: ") :] for line in block.splitlines() if line.startswith("data: ")]
        if data:
            events.append(json.loads("\n".join(data)))
    return events


@pytest.fixture
def engines() -> Engines:
    return Engines()


@pytest.fixture
async def client(engines: Engines) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(engine_factory=engines)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        yield http
    await app.state.store.cancel_all()
    await app.state.engines.aclose()


async def events_of(client: httpx.AsyncClient, run_id: str, after: int = -1) -> list[dict[str, Any]]:
    """The run's events from `after` on; returns when the stream ends (the run is idle)."""
    response = await client.get(f"/api/runs/{run_id}/events", params={"after": after})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    return parse_sse(response.text)


async def finished_run(client: httpx.AsyncClient, premise: str = PREMISE, **options: Any) -> dict[str, Any]:
    response = await client.post("/api/runs", json={"premise": premise, "scenes": 3, "seed": 7, **options})
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]
    await events_of(client, run_id)
    return (await client.get(f"/api/runs/{run_id}")).json()


async def steer_and_wait(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = await client.post(path, json=body)
    assert response.status_code == 202, response.text
    job = response.json()
    return await events_of(client, job["run"], after=job["after"])


def step_names(events: list[dict[str, Any]]) -> list[str]:
    return [e["name"] for e in events if e["event"] == "step_done"]


# -- start, watch, finish --


async def test_run_returns_at_once_and_is_watched_to_the_end(
    client: httpx.AsyncClient, engines: Engines
) -> None:
    gate = asyncio.Event()
    script = numbered_script()

    async def gated(request: CompletionRequest) -> str:
        if request.component == "evaluation":
            await gate.wait()
        return script(request)

    engines.script = gated
    response = await client.post("/api/runs", json={"premise": PREMISE, "scenes": 3, "seed": 7})
    assert response.status_code == 202
    started = response.json()
    run_id = started["id"]
    assert started["status"] == "running" and started["busy"] and started["versions"] == []

    watcher = asyncio.create_task(events_of(client, run_id))
    for _ in range(12_000):  # until the run is blocked on the evaluation (a cold start renders slowly)
        if any(r.component == "evaluation" for r in engines.requests):
            break
        await asyncio.sleep(0.01)
    mid = (await client.get(f"/api/runs/{run_id}")).json()
    assert mid["status"] == "running" and mid["story"] is None and mid["events"] > 5
    assert not watcher.done()
    gate.set()
    events = await watcher

    assert [e["seq"] for e in events] == list(range(len(events)))
    assert events[0]["event"] == "run_started" and events[0]["premise"] == PREMISE
    assert events[-1]["event"] == "run_done" and events[-1]["version"] == 1
    assert all(e["run_id"] == run_id for e in events)
    names = step_names(events)
    for name in ("plot", "scene.0", "scene.2", "dialogue.1", "evaluation", "enhancement"):
        assert name in names
    scene_events = [e for e in events if e["event"] == "step_started" and e["step"] == "scene"]
    assert {(e["index"], e["total"]) for e in scene_events} == {(1, 3), (2, 3), (3, 3)}
    tokens = [e["tokens"] for e in events if "tokens" in e]
    assert tokens == sorted(tokens) and tokens[-1] > 0

    run = (await client.get(f"/api/runs/{run_id}")).json()
    assert run["status"] == "done" and not run["busy"] and run["version"] == 1
    story = Story.model_validate(run["story"])
    assert len(story.plot.beats) == 3 and len(story.scenes) == 3
    plot_value = next(e["value"] for e in events if e["event"] == "step_done" and e["name"] == "plot")
    assert plot_value == run["story"]["plot"]
    calls = [c for c in story.meta["calls"] if c["kind"] == "call"]
    assert calls and {c["provider"] for c in calls} == {"embedded"}
    assert {"attempt", "cache_hit", "latency_s", "outcome"} <= set(calls[0])


async def test_late_subscriber_gets_every_event_so_far(client: httpx.AsyncClient) -> None:
    run = await finished_run(client)
    first = await events_of(client, run["id"])
    again = await events_of(client, run["id"])
    assert first == again and first[-1]["event"] == "run_done"
    tail = await events_of(client, run["id"], after=5)
    assert tail == first[6:]
    resumed = await client.get(f"/api/runs/{run['id']}/events", headers={"Last-Event-ID": "9"})
    assert parse_sse(resumed.text) == first[10:]
    assert "id: 10\n" in resumed.text


async def test_two_concurrent_runs_do_not_mix_their_events() -> None:
    engines = Engines(latency=0.005)
    app = create_app(engine_factory=engines)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
        first = (await http.post("/api/runs", json={"premise": PREMISE, "scenes": 3, "seed": 1})).json()
        second = (await http.post("/api/runs", json={"premise": OTHER, "scenes": 4, "seed": 2})).json()
        assert first["id"] != second["id"]
        streams = await asyncio.gather(events_of(http, first["id"]), events_of(http, second["id"]))
        for run, premise, scenes, events in zip(
            (first, second), (PREMISE, OTHER), (3, 4), streams, strict=True
        ):
            assert {e["run_id"] for e in events} == {run["id"]}
            assert [e["seq"] for e in events] == list(range(len(events)))
            assert [e["premise"] for e in events if e["event"] == "run_started"] == [premise]
            assert [e["event"] for e in events].count("run_done") == 1
            scene_names = [n for n in step_names(events) if n.startswith("scene.") and "draft" not in n]
            assert sorted(scene_names) == [f"scene.{i}" for i in range(scenes)]
            story = (await http.get(f"/api/runs/{run['id']}")).json()["story"]
            assert story["premise"] == premise and len(story["scenes"]) == scenes
    # both runs really overlapped: the second run's plot was asked for before the first run ended
    order = [r.messages[-1].content for p in engines.providers for r in p.requests]
    assert any(OTHER in text for text in order) and any(PREMISE in text for text in order)
    await app.state.engines.aclose()


# -- steering and versions --


async def test_edit_beat_regenerates_from_that_beat_on(client: httpx.AsyncClient, engines: Engines) -> None:
    run = await finished_run(client)
    v1 = Story.model_validate(run["story"])
    before = len(engines.requests)
    edit = {"name": "The Harbour Betrayal", "purpose": "Mara learns the maps were forged.", "tension": 9}
    events = await steer_and_wait(client, f"/api/runs/{run['id']}/beats/1", edit)

    assert events[0]["event"] == "steer_started" and events[0]["base"] == 1
    assert events[-1]["event"] == "steer_done" and events[-1]["version"] == 2
    names = step_names(events)
    made = sorted(n for n in names if n.startswith(("scene", "dialogue")) and not n.endswith(".draft"))
    assert made == ["dialogue.1", "dialogue.2", "scene.1", "scene.2"]
    # steering runs the engine's pipeline: each remade part has its own freeform draft, as in generate
    assert sorted(n for n in names if n.endswith(".draft")) == sorted(
        [f"{n}.draft" for n in made] + ["enhancement.draft", "evaluation.draft"]
    )
    assert {"plot", "evaluation", "enhancement"} <= set(names)
    new_requests = engines.requests[before:]
    scene_prompts = [
        r.messages[-1].content for r in new_requests if r.component == "scene" and r.stage == "freeform"
    ]
    assert scene_prompts and all("The Harbour Betrayal" in p for p in scene_prompts)

    v2 = Story.model_validate((await client.get(f"/api/runs/{run['id']}/versions/2")).json()["story"])
    assert v2.plot.beats[1].name == "The Harbour Betrayal" and v2.plot.beats[1].tension == 9
    assert v2.scenes[0] == v1.scenes[0]
    assert all(v2.scenes[j].scene.title != v1.scenes[j].scene.title for j in (1, 2))
    assert v2.evaluation.summary != v1.evaluation.summary
    assert v2.meta["steered"]["operation"] == "edit_beat"
    # version 1 is kept as it was
    kept = (await client.get(f"/api/runs/{run['id']}/versions/1")).json()["story"]
    assert Story.model_validate(kept) == v1
    compare = (await client.get(f"/api/runs/{run['id']}/compare", params={"a": 1, "b": 2})).json()
    assert compare["changed"]["beats"] == [1]
    assert compare["changed"]["scenes"] == [1, 2] and compare["changed"]["evaluation"]
    assert any(block["op"] != "equal" for block in compare["diff"])


async def test_regenerate_scene_dialogue_restore_and_versions(client: httpx.AsyncClient) -> None:
    run = await finished_run(client)
    base = f"/api/runs/{run['id']}"
    v1 = Story.model_validate(run["story"])

    await steer_and_wait(client, f"{base}/scenes/2/regenerate", {})
    await steer_and_wait(client, f"{base}/scenes/0/dialogue/regenerate", {"base": 1, "reevaluate": False})
    versions = (await client.get(f"{base}/versions")).json()
    assert [(v["number"], v["parent"]) for v in versions] == [(1, None), (2, 1), (3, 1)]
    assert versions[1]["label"] == "regenerated scene 3"
    assert versions[2]["label"] == "regenerated dialogue of scene 1"

    v2 = Story.model_validate((await client.get(f"{base}/versions/2")).json()["story"])
    v3 = Story.model_validate((await client.get(f"{base}/versions/3")).json()["story"])
    assert v2.scenes[:2] == v1.scenes[:2] and v2.scenes[2].scene != v1.scenes[2].scene
    assert v2.scenes[2].dialogue != v1.scenes[2].dialogue and v2.evaluation != v1.evaluation
    assert v3.scenes[0].scene == v1.scenes[0].scene and v3.scenes[0].dialogue != v1.scenes[0].dialogue
    assert v3.scenes[1:] == v1.scenes[1:] and v3.evaluation == v1.evaluation
    assert {c["component"] for c in v3.meta["calls"]} == {"dialogue"}

    changed = (await client.get(f"{base}/compare", params={"a": 1, "b": 2})).json()["changed"]
    assert changed == {"beats": [], "scenes": [2], "dialogue": [2], "evaluation": True, "enhancement": True}

    restored = await client.post(f"{base}/versions/1/restore", json={})
    assert restored.status_code == 201 and restored.json()["number"] == 4
    latest = (await client.get(base)).json()
    assert latest["version"] == 4 and Story.model_validate(latest["story"]) == v1
    assert len(latest["versions"]) == 4 and latest["versions"][3]["label"] == "restored version 1"


async def test_exports_of_any_version(client: httpx.AsyncClient, tmp_path: Path) -> None:
    run = await finished_run(client)
    base = f"/api/runs/{run['id']}"
    await steer_and_wait(client, f"{base}/scenes/1/regenerate", {})
    for number in (1, 2):
        story = Story.model_validate((await client.get(f"{base}/versions/{number}")).json()["story"])
        as_json = await client.get(f"{base}/versions/{number}/export/json")
        assert as_json.status_code == 200 and as_json.headers["content-type"] == "application/json"
        assert f"v{number}.json" in as_json.headers["content-disposition"]
        assert Story.model_validate_json(as_json.text) == story
        markdown = (await client.get(f"{base}/versions/{number}/export/markdown")).text
        assert "## Scene 2: " + story.scenes[1].scene.title in markdown
        fountain = await client.get(f"{base}/versions/{number}/export/fountain")
        assert fountain.headers["content-disposition"].endswith('.fountain"')
        assert "." + story.scenes[1].scene.setting.upper() in fountain.text
        book = await client.get(f"{base}/versions/{number}/export/epub")
        assert book.status_code == 200 and book.headers["content-type"] == "application/epub+zip"
        assert (
            book.headers["content-disposition"] == f'attachment; filename="story-{run["id"]}-v{number}.epub"'
        )
        (tmp_path / f"v{number}.epub").write_bytes(book.content)
        read = epub.read_epub(str(tmp_path / f"v{number}.epub"), {"ignore_ncx": True})
        assert read.get_metadata("DC", "title")[0][0] == story.plot.title
        scene_two = " ".join(
            "".join(ET.fromstring(read.get_item_with_id(read.spine[2][0]).content).itertext()).split()
        )
        assert (
            story.scenes[1].scene.title in scene_two and story.scenes[1].dialogue.lines[0].text in scene_two
        )


async def test_failed_run_reports_why_and_resumes_from_its_checkpoint(
    client: httpx.AsyncClient, engines: Engines
) -> None:
    healthy = {"on": False}
    script = numbered_script()

    def flaky(request: CompletionRequest) -> Any:  # a required step fails (not the evaluation: a gap)
        if request.component == "dialogue" and not healthy["on"]:
            return ProviderUnavailable("connection refused", provider="embedded")
        return script(request)

    engines.script = flaky
    response = await client.post("/api/runs", json={"premise": PREMISE, "scenes": 3})
    run_id = response.json()["id"]
    events = await events_of(client, run_id)
    assert events[-1]["event"] == "run_failed" and "--resume" in events[-1]["error"]
    run = (await client.get(f"/api/runs/{run_id}")).json()
    assert run["status"] == "failed" and "connection refused" in run["error"] and run["versions"] == []
    missing = await client.get(f"/api/runs/{run_id}/versions/1/export/json")
    assert missing.status_code == 404 and "no story yet" in missing.json()["error"]

    healthy["on"] = True
    before = len(engines.requests)
    resumed = await client.post(f"/api/runs/{run_id}/resume", json={})
    assert resumed.status_code == 202
    events = await events_of(client, run_id, after=resumed.json()["after"])
    assert events[-1]["event"] == "run_done" and events[-1]["version"] == 1
    again = {r.component for r in engines.requests[before:]}
    assert again == {"dialogue", "evaluation", "enhancement"}  # plot, bible, scenes: from the checkpoint
    run = (await client.get(f"/api/runs/{run_id}")).json()
    assert run["status"] == "done" and run["error"] is None and len(run["story"]["scenes"]) == 3
    twice = await client.post(f"/api/runs/{run_id}/resume", json={})
    assert twice.status_code == 409 and "only a failed run" in twice.json()["error"]


# -- bad input: always a 4xx with a JSON message --

BAD_STARTS: list[tuple[str, Any, int, str]] = [
    ("empty premise", {"premise": ""}, 422, "premise is empty"),
    ("blank premise", {"premise": "   \n "}, 422, "premise is empty"),
    ("huge premise", {"premise": "x" * 5000}, 422, "premise is 5,000 characters"),
    ("no premise", {"scenes": 3}, 422, "premise"),
    ("zero scenes", {"premise": PREMISE, "scenes": 0}, 422, "scenes"),
    ("too many scenes", {"premise": PREMISE, "scenes": 25}, 422, "scenes"),
    ("scenes as text", {"premise": PREMISE, "scenes": "many"}, 422, "scenes"),
    ("negative seed", {"premise": PREMISE, "seed": -1}, 422, "seed"),
    ("unknown provider", {"premise": PREMISE, "provider": "nope"}, 422, "unknown provider 'nope'"),
    ("unknown field", {"premise": PREMISE, "colour": "red"}, 422, "colour"),
    ("not an object", [1, 2], 422, "invalid request"),
]


@pytest.mark.parametrize(
    ("body", "status", "says"), [c[1:] for c in BAD_STARTS], ids=[c[0] for c in BAD_STARTS]
)
async def test_bad_start_is_a_4xx_with_a_message(
    client: httpx.AsyncClient, engines: Engines, body: Any, status: int, says: str
) -> None:
    response = await client.post("/api/runs", json=body)
    assert response.status_code == status
    assert says in response.json()["error"]
    assert (await client.get("/api/runs")).json() == []
    assert engines.requests == []  # no model call was made


async def test_a_long_story_is_asked_for_by_chapters_and_bad_chapter_input_is_a_422(
    client: httpx.AsyncClient, engines: Engines
) -> None:
    run = await finished_run(client, scenes=None, chapters=2, scenes_per_chapter=2)
    story = Story.model_validate(run["story"])
    assert len(story.chapters) == 2 and len(story.scenes) == 4
    asked = len(engines.requests)
    for body in ({"scenes": 3, "chapters": 2}, {"chapters": 0}, {"scenes_per_chapter": 3}):
        response = await client.post("/api/runs", json={"premise": PREMISE, **body})
        assert response.status_code == 422, (body, response.text)
    assert len(engines.requests) == asked  # no model call for bad input


async def test_malformed_json_is_a_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/runs", content=b'{"premise": "unclosed', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]


UNKNOWN_RUN = [
    ("GET", "/api/runs/nope"),
    ("GET", "/api/runs/nope/events"),
    ("GET", "/api/runs/nope/versions"),
    ("GET", "/api/runs/nope/versions/1"),
    ("GET", "/api/runs/nope/versions/1/export/json"),
    ("GET", "/api/runs/nope/compare?a=1&b=1"),
    ("POST", "/api/runs/nope/versions/1/restore"),
    ("POST", "/api/runs/nope/scenes/0/regenerate"),
    ("POST", "/api/runs/nope/scenes/0/dialogue/regenerate"),
    ("POST", "/api/runs/nope/resume"),
]


@pytest.mark.parametrize(("method", "path"), UNKNOWN_RUN)
async def test_unknown_run_is_a_404(client: httpx.AsyncClient, method: str, path: str) -> None:
    response = await client.request(method, path, json={} if method == "POST" else None)
    assert response.status_code == 404
    assert "no run 'nope'" in response.json()["error"]


async def test_bad_steering_and_version_requests(client: httpx.AsyncClient) -> None:
    run = await finished_run(client)
    base = f"/api/runs/{run['id']}"
    cases: list[tuple[str, str, Any, int, str]] = [
        ("GET", f"{base}/versions/9", None, 404, "no version 9"),
        ("GET", f"{base}/versions/0/export/markdown", None, 404, "no version 0"),
        ("GET", f"{base}/versions/1/export/pdf", None, 422, "fmt"),
        ("GET", f"{base}/versions/one", None, 422, "number"),
        ("GET", f"{base}/compare?a=1", None, 422, "b"),
        ("GET", f"{base}/compare?a=1&b=5", None, 404, "no version 5"),
        ("GET", f"{base}/events?after=-7", None, 422, "after"),
        ("POST", f"{base}/versions/3/restore", {}, 404, "no version 3"),
        ("POST", f"{base}/beats/7", {"name": "Later"}, 422, "beat 7 does not exist"),
        ("POST", f"{base}/beats/0", {}, 422, "at least one of"),
        ("POST", f"{base}/beats/0", {"tension": 11}, 422, "tension"),
        ("POST", f"{base}/beats/0", {"name": "  "}, 422, "name"),
        ("POST", f"{base}/beats/0", {"name": "X", "base": 4}, 404, "no version 4"),
        ("POST", f"{base}/scenes/3/regenerate", {}, 422, "scene 3 does not exist"),
        ("POST", f"{base}/scenes/-1/dialogue/regenerate", {}, 422, "scene -1 does not exist"),
        ("POST", f"{base}/scenes/0/regenerate", {"seed": "x"}, 422, "seed"),
    ]
    for method, path, body, status, says in cases:
        response = await client.request(method, path, json=body)
        assert response.status_code == status, (path, body, response.text)
        assert says in response.json()["error"], (path, response.json())
        assert "Traceback" not in response.text
    assert len((await client.get(f"{base}/versions")).json()) == 1  # nothing was made


async def test_steering_a_busy_run_is_a_409(client: httpx.AsyncClient, engines: Engines) -> None:
    gate = asyncio.Event()
    script = numbered_script()

    async def gated(request: CompletionRequest) -> str:
        await gate.wait()
        return script(request)

    engines.script = gated
    run_id = (await client.post("/api/runs", json={"premise": PREMISE, "scenes": 3})).json()["id"]
    busy = await client.post(f"/api/runs/{run_id}/scenes/0/regenerate", json={})
    assert busy.status_code == 409 and "busy (generate)" in busy.json()["error"]
    gate.set()
    await events_of(client, run_id)
    again = await client.post(f"/api/runs/{run_id}/scenes/0/regenerate", json={})
    assert again.status_code == 202


# -- the page, the schema, the command --


async def test_openapi_schema_lists_the_api(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    paths = set(schema["paths"])
    assert {
        "/api/runs",
        "/api/runs/{run_id}",
        "/api/runs/{run_id}/events",
        "/api/runs/{run_id}/versions",
        "/api/runs/{run_id}/versions/{number}/export/{fmt}",
        "/api/runs/{run_id}/beats/{index}",
        "/api/runs/{run_id}/scenes/{index}/regenerate",
        "/api/runs/{run_id}/scenes/{index}/dialogue/regenerate",
        "/api/runs/{run_id}/compare",
        "/api/runs/{run_id}/resume",
    } <= paths
    assert "premise" in schema["components"]["schemas"]["RunRequest"]["properties"]


async def test_page_is_served_with_local_assets_only(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("/static/app.js", "/static/app.css"):
        assert asset in page.text
        served = await client.get(asset)
        assert served.status_code == 200
        # no CDN: nothing is fetched from another host
        assert "https://" not in served.text and "//cdn" not in served.text
    assert "/api/" in (await client.get("/static/app.js")).text
    assert (await client.get("/api/providers")).json() == {"providers": ["embedded"]}


def test_serve_rejects_an_unknown_provider_before_binding() -> None:
    result = CliRunner().invoke(main, ["serve", "--provider", "nope", "--port", "1"])
    assert result.exit_code == 2
    assert "nope" in result.output and "Traceback" not in result.output


# -- runs persist: a restarted server, runs made by the CLI and the engine API --


def serve_app(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


async def stop(app: Any) -> None:
    await app.state.store.cancel_all()
    await app.state.engines.aclose()


def cli_generate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, premise: str) -> str:
    """`storyengine generate` in-process, its engine on the scripted provider; returns the run id."""
    real = StoryEngine.from_config.__func__  # type: ignore[attr-defined]

    def scripted(cls: type[StoryEngine], *args: Any, **kwargs: Any) -> StoryEngine:
        provider = ScriptedProvider(story_script, name="embedded", structured_mode="grammar")
        kwargs["settings"] = parse_settings(SETTINGS, source="test.yaml")
        return real(cls, *args[1:], **{**kwargs, "providers": {"embedded": provider}})

    with monkeypatch.context() as patch:
        patch.setattr(StoryEngine, "from_config", classmethod(scripted))
        args = ["generate", premise, "--scenes", "2", "--seed", "4", "--provider", "embedded"]
        result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "cli"), "--json-progress"])
    assert result.exit_code == 0, result.output
    written = json.loads(result.output.strip().splitlines()[-1])
    assert written["event"] == "written"
    return str(written["run_id"])


async def test_a_restarted_server_lists_and_opens_runs_made_before_and_by_the_cli(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    first = create_app(engine_factory=Engines())
    async with serve_app(first) as http:
        run = await finished_run(http)
        base = f"/api/runs/{run['id']}"
        await steer_and_wait(http, f"{base}/scenes/1/regenerate", {"seed": 3})
        made = {n: (await http.get(f"{base}/versions/{n}")).json()["story"] for n in (1, 2)}
    await stop(first)

    # made without the server: by `storyengine generate`, by the engine API, and a run that failed
    cli_run = await asyncio.to_thread(cli_generate, monkeypatch, tmp_path, OTHER)  # it runs its own loop
    async with Engines(story_script)(None) as engine:
        direct = await engine.generate("A clockmaker repairs time.", scenes=1, seed=2, provider="embedded")

    def down(request: CompletionRequest) -> Any:
        if request.component == "dialogue":
            return ProviderUnavailable("connection refused", provider="embedded")
        return story_script(request)

    async with Engines(down)(None) as engine:
        with pytest.raises(RunFailed) as caught:
            await engine.generate("A diver finds a door on the seabed.", scenes=2, seed=3)
    failed_id = caught.value.run_id

    engines = Engines()
    restarted = create_app(engine_factory=engines)
    async with serve_app(restarted) as http:
        listed = {r["id"]: r for r in (await http.get("/api/runs")).json()}
        assert set(listed) == {run["id"], cli_run, direct.meta["run_id"], failed_id}
        assert [v["label"] for v in listed[run["id"]]["versions"]] == ["generated", "regenerated scene 2"]
        assert listed[run["id"]]["versions"][1]["seed"] == 3
        assert listed[cli_run]["premise"] == OTHER and listed[cli_run]["provider"] == "embedded"
        assert listed[cli_run]["status"] == "done" and listed[cli_run]["seed"] == 4
        assert listed[failed_id]["status"] == "failed" and not listed[failed_id]["busy"]

        # every version opens, compares and exports as before the restart
        for number, story in made.items():
            assert (await http.get(f"{base}/versions/{number}")).json()["story"] == story
        latest = (await http.get(base)).json()
        assert latest["version"] == 2 and latest["story"] == made[2] and latest["status"] == "done"
        changed = (await http.get(f"{base}/compare", params={"a": 1, "b": 2})).json()["changed"]
        assert changed["scenes"] == [1]
        cli_story = (await http.get(f"/api/runs/{cli_run}/versions/1/export/json")).json()
        assert Story.model_validate(cli_story).premise == OTHER
        written = Story.model_validate_json((tmp_path / "cli" / "story.json").read_text())
        assert written == Story.model_validate(cli_story)

        # a failed run shows what it finished (from its checkpoint), then resumes on this server
        replay = await events_of(http, failed_id)
        names = step_names(replay)
        assert {"plot", "bible", "scene.0", "scene.1"} <= set(names)  # its dialogue failed
        assert replay[-1]["event"] == "run_failed" and "connection refused" in replay[-1]["error"]
        resumed = await http.post(f"/api/runs/{failed_id}/resume", json={})
        assert resumed.status_code == 202
        events = await events_of(http, failed_id, after=resumed.json()["after"])
        assert events[-1]["event"] == "run_done" and events[-1]["version"] == 1
        assert {r.component for r in engines.requests} == {"dialogue", "evaluation", "enhancement"}

        # and an old run is steered on: the new version follows the old ones
        events = await steer_and_wait(http, f"{base}/scenes/0/dialogue/regenerate", {"base": 2})
        assert events[-1] == {**events[-1], "event": "steer_done", "version": 3}
        versions = (await http.get(f"{base}/versions")).json()
        assert [(v["number"], v["parent"]) for v in versions] == [(1, None), (2, 1), (3, 2)]
    await stop(restarted)


async def test_steering_a_missing_run_or_version_is_a_404_and_overwrites_nothing(
    client: httpx.AsyncClient, engines: Engines
) -> None:
    run = await finished_run(client)
    base = f"/api/runs/{run['id']}"
    kept = (await client.get(f"{base}/versions/1")).json()
    calls = len(engines.requests)
    cases = [
        (f"{base}/scenes/0/regenerate", {"base": 2}, "no version 2"),
        (f"{base}/scenes/0/dialogue/regenerate", {"base": 9}, "no version 9"),
        (f"{base}/beats/0", {"name": "New", "base": 3}, "no version 3"),
        ("/api/runs/nope/beats/0", {"name": "New"}, "no run 'nope'"),
        ("/api/runs/nope/scenes/0/regenerate", {"seed": 1}, "no run 'nope'"),
    ]
    for path, body, says in cases:
        response = await client.post(path, json=body)
        assert response.status_code == 404, (path, response.text)
        assert says in response.json()["error"]
    assert len(engines.requests) == calls  # no model call
    assert (await client.get(f"{base}/versions")).json() == run["versions"]
    assert (await client.get(f"{base}/versions/1")).json() == kept
    assert [r["id"] for r in (await client.get("/api/runs")).json()] == [run["id"]]


# -- errors: always JSON, with the status that says whose problem it is --


class BrokenEngines(Engines):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error
        self.built = 0

    def __call__(self, provider: str | None) -> StoryEngine:
        self.built += 1
        raise self.error


ENGINE_ERRORS: list[tuple[str, Exception, int]] = [
    ("model load", ModelLoadError("the model file is missing", provider="embedded"), 503),
    ("unreachable", ProviderUnavailable("connection refused", provider="embedded"), 503),
    ("auth", AuthenticationError("401: the API key is wrong", provider="openai"), 502),
    (
        "every provider unreachable",
        AllProvidersFailed("plot", [("a", ProviderTimeout("timed out", provider="a"))]),
        503,
    ),
    ("a provider answered badly", AllProvidersFailed("plot", [("a", BadResponse("not JSON"))]), 502),
    ("structuring", StructuringError("no valid plot", component="plot", attempts=[]), 502),
    ("config", ConfigError("providers.embedded.model_path: no such file"), 500),
    ("any other storyengine error", TemplateError("plot_freeform.poml is broken"), 500),
    ("not ours", RuntimeError("disk on fire"), 500),
]


@pytest.mark.parametrize(
    ("error", "status"), [c[1:] for c in ENGINE_ERRORS], ids=[c[0] for c in ENGINE_ERRORS]
)
async def test_every_error_is_json_with_its_status(error: Exception, status: int) -> None:
    engines = BrokenEngines(error)
    app = create_app(engine_factory=engines)
    async with serve_app(app) as http:
        # listing providers needs no engine: it works while engines cannot be built
        assert (await http.get("/api/providers")).json() == {"providers": ["embedded"]}
        assert engines.built == 0
        response = await http.post("/api/runs", json={"premise": PREMISE})
        assert response.status_code == status
        assert response.headers["content-type"] == "application/json"
        assert str(error) in response.json()["error"]
        assert "Traceback" not in response.text
        assert (await http.get("/api/runs")).json() == []
    await stop(app)


def test_a_run_failure_answers_with_the_status_of_its_cause() -> None:
    cause = RateLimited("429", provider="openai", retry_after=3)
    assert status_of(RunFailed("stopped", run_id="r", step="plot", cause=cause)) == 503
    assert status_of(NotFound("no run")) == 404 and status_of(InputError("bad")) == 422
