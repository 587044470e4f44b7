"""Watch it write, and stop (issue 27): a draft's text reaches the page's stream as it grows (never
kept in the run's event log), and a run stopped from the page keeps what it finished and resumes
from there without asking for it again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from storyengine.pipeline.checkpoint import CheckpointStore, checkpoint_dir
from storyengine.providers.fake_story import story_script
from storyengine.routing.instrument import current_step
from storyengine.types import CompletionRequest
from storyengine.web.app import create_app
from storyengine.web.runs import LiveRun
from test_web_api import PREMISE, Engines, events_of, numbered_script, parse_sse

# -- a draft's text on the live stream --


async def _take(follower: AsyncIterator[dict[str, Any] | None], count: int) -> list[dict[str, Any]]:
    taken: list[dict[str, Any]] = []
    while len(taken) < count:
        event = await follower.__anext__()
        if event is not None:
            taken.append(event)
    return taken


async def test_a_drafts_pieces_are_coalesced_for_a_follower_and_never_logged() -> None:
    run = LiveRun("r1")
    run.start_job("generate")
    where = {"step": "scene", "name": "scene.0.draft", "index": 1, "total": 3}
    run.publish({"event": "run_started"})
    run.publish({"event": "draft_restarted", **where})
    for word in ("The ", "maps ", "moved."):
        run.publish({"event": "draft_delta", "text": word, "tokens": 5, **where})
    # the log holds no piece of a draft: only its current text is kept
    assert [e["event"] for e in run.events] == ["run_started"]
    assert run.drafts["scene.0.draft"].text == "The maps moved."

    late = run.follow(-1, drafts=True)  # a follower that joins now gets the text so far at once
    first = await _take(late, 3)
    assert [e["event"] for e in first] == ["run_started", "draft_restarted", "draft_delta"]
    assert first[2]["text"] == "The maps moved." and first[2]["name"] == "scene.0.draft"
    assert "seq" not in first[1] and "seq" not in first[2] and first[2]["index"] == 1
    plain = run.follow(-1)  # a follower that did not ask for drafts gets only the log
    assert [e["event"] for e in await _take(plain, 1)] == ["run_started"]

    run.publish({"event": "draft_delta", "text": " Again", **where})
    run.publish({"event": "draft_delta", "text": " and again.", **where})
    assert await _take(late, 1) == [
        {"event": "draft_delta", "run_id": "r1", **where, "text": " Again and again."}
    ]

    run.publish({"event": "draft_restarted", **where})  # a new attempt: what was shown is void
    run.publish({"event": "draft_delta", "text": "Anew.", **where})
    assert [(e["event"], e.get("text")) for e in await _take(late, 2)] == [
        ("draft_restarted", None),
        ("draft_delta", "Anew."),
    ]

    # the finished draft is in its step_done; the draft in progress is dropped
    run.publish({"event": "step_done", "stage": "freeform", "value": "Anew.", **where})
    assert run.drafts == {} and [e["event"] for e in await _take(late, 1)] == ["step_done"]
    run.finish_job({"event": "run_done"})
    assert [e["event"] for e in await _take(late, 1)] == ["run_done"]
    with pytest.raises(StopAsyncIteration):
        await late.__anext__()
    assert [e["seq"] for e in run.events] == [0, 1, 2]


# -- stop, then resume --


class Held:
    """numbered_script, but scenes 2 and 3 and every dialogue wait for `gate` before they answer, so
    a run is in flight with its plot, bible and first scene made; every request is recorded with
    the step it was made for (`asked`)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.asked: list[tuple[str, str]] = []
        self.script = numbered_script()

    async def __call__(self, request: CompletionRequest) -> str:
        step = current_step.get() or "?"
        self.asked.append((step, request.stage))
        if step in ("scene.1", "scene.2") or step.startswith("dialogue."):
            await self.gate.wait()
        return self.script(request)


@pytest.fixture
def held() -> Held:
    return Held()


@pytest.fixture
async def app_client(held: Held) -> AsyncIterator[tuple[Any, httpx.AsyncClient, Engines]]:
    engines = Engines(held, latency=0.001)
    app = create_app(engine_factory=engines)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
        yield app, http, engines
    await app.state.store.cancel_all()
    await app.state.engines.aclose()


async def test_a_stopped_run_keeps_what_it_finished_and_resumes_without_asking_it_again(
    app_client: tuple[Any, httpx.AsyncClient, Engines], held: Held
) -> None:
    app, client, engines = app_client
    started = await client.post("/api/runs", json={"premise": PREMISE, "scenes": 3, "seed": 7})
    run_id = started.json()["id"]
    live: LiveRun = app.state.store._live[run_id]

    # watch it write: the first scene's draft arrives piece by piece, then its checked scene
    seen: list[dict[str, Any]] = []
    async for event in live.follow(-1, drafts=True):
        if event is None:
            continue
        seen.append(event)
        if event["event"] == "step_done" and event["name"] == "scene.0":
            break
    pieces = [e for e in seen if e["event"] == "draft_delta" and e["name"] == "scene.0.draft"]
    assert pieces and all("seq" not in e for e in pieces)
    draft = next(e["value"] for e in seen if e["event"] == "step_done" and e["name"] == "scene.0.draft")
    assert draft.strip()[:40] in "".join(e["text"] for e in pieces)
    for _ in range(2000):  # until the second scene's draft is asked (held at the gate)
        if ("scene.1", "freeform") in held.asked:
            break
        await asyncio.sleep(0.005)
    assert live.busy

    stopped = await client.post(f"/api/runs/{run_id}/stop", json={})
    assert stopped.status_code == 200, stopped.text
    answer = stopped.json()
    assert answer["event"] == "run_stopped" and answer["stopped"]
    assert answer["message"].startswith("stopped: plot, bible and 1 of 3 scenes kept")
    assert answer["message"].endswith("resume to continue")
    assert {"plot", "bible", "scene.0"} <= set(answer["kept"]) and "scene.1" not in answer["kept"]

    events = await events_of(client, run_id)  # the stream says so, and ends: the run is idle
    assert events[-1]["event"] == "run_stopped" and events[-1]["message"] == answer["message"]
    run = (await client.get(f"/api/runs/{run_id}")).json()
    assert run["status"] == "failed" and not run["busy"] and "stopped before it finished" in run["error"]
    state = CheckpointStore(checkpoint_dir(engines.settings)).load(run_id)
    assert {"plot", "plot.draft", "bible", "scene.0", "scene.0.draft"} <= set(state.steps)
    assert "scene.1" not in state.steps and "dialogue.0" not in state.steps
    again = await client.post(f"/api/runs/{run_id}/stop", json={})
    assert again.status_code == 409 and "nothing to stop" in again.json()["error"]

    # resume: the kept stages are not asked again, and the story is finished
    held.gate.set()
    before = len(held.asked)
    resumed = await client.post(f"/api/runs/{run_id}/resume", json={})
    assert resumed.status_code == 202, resumed.text
    events = await events_of(client, run_id, after=resumed.json()["after"])
    assert events[-1]["event"] == "run_done"
    asked_again = {step for step, _ in held.asked[before:]}
    assert not asked_again & {"plot", "bible", "scene.0"}, asked_again
    assert {"scene.1", "scene.2", "dialogue.0", "evaluation"} <= asked_again
    run = (await client.get(f"/api/runs/{run_id}")).json()
    assert run["status"] == "done" and len(run["story"]["scenes"]) == 3
    assert run["story"]["scenes"][0]["prose"].strip()[:40] in draft


async def test_the_page_stream_carries_drafts_only_when_asked(
    app_client: tuple[Any, httpx.AsyncClient, Engines], held: Held
) -> None:
    """A finished run's stream is its log, with or without drafts (none is kept to replay); the
    page asks for them (`drafts=true`), and the stop button posts JSON like every other change."""
    _, client, _ = app_client
    held.gate.set()
    response = await client.post("/api/runs", json={"premise": PREMISE, "scenes": 2, "seed": 3})
    run_id = response.json()["id"]
    plain = await events_of(client, run_id)
    with_drafts = await client.get(f"/api/runs/{run_id}/events", params={"drafts": "true"})
    assert parse_sse(with_drafts.text) == plain
    assert not [e for e in plain if e["event"].startswith("draft_")]
    assert [e["seq"] for e in plain] == list(range(len(plain)))
    idle = await client.post(f"/api/runs/{run_id}/stop", json={})
    assert idle.status_code == 409
    unknown = await client.post("/api/runs/nope/stop", json={})
    assert unknown.status_code == 404
    form = await client.post(f"/api/runs/{run_id}/stop", content="x", headers={"content-type": "text/plain"})
    assert form.status_code == 415


# -- validated parts as they pass --


async def test_each_plot_beat_is_told_as_it_passes_and_they_make_the_plot() -> None:
    """A small model's plot is filled a part at a time: each part that passes is a `part_done` event
    (after `parts_started`), before the plot's step_done, in order; the beats are the plot's."""
    from test_streaming import PREMISE as STREAM_PREMISE
    from test_streaming import _engine

    events: list[dict[str, Any]] = []
    async with _engine(story_script) as engine:
        story = await engine.generate(STREAM_PREMISE, scenes=2, seed=5, on_event=events.append)
    plot = [e for e in events if e.get("name") == "plot"]
    kinds = [e["event"] for e in plot]
    assert kinds[0] == "parts_started" and kinds[-1] == "step_done" and "part_done" in kinds
    beats = [e["value"] for e in plot if e["event"] == "part_done" and e["of"] == "beats"]
    assert [{k: b[k] for k in ("name", "purpose", "tension")} for b in beats] == [
        {k: b[k] for k in ("name", "purpose", "tension")}
        for b in story.model_dump(mode="json")["plot"]["beats"]
    ]
    assert all(
        e["part"].startswith(f"beat {i + 1} of")
        for i, e in enumerate(p for p in plot if p.get("of") == "beats")
    )
