"""The web API's revision ("Apply suggestions") and story-bible edit, on the scripted provider."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from storyengine.config import parse_settings
from storyengine.schemas import Story
from storyengine.web.app import create_app
from test_revision import BETTER, CHANGE, UNTARGETED, script
from test_web_api import PREMISE, SETTINGS, Engines, events_of, finished_run, steer_and_wait


@pytest.fixture
def engines() -> Engines:
    made = Engines(script(["Scene 2"], BETTER))  # the suggestions are answered whole: standard profile
    made.settings = parse_settings(SETTINGS.replace("8192}", "8192, profile: standard}"), source="test.yaml")
    return made


@pytest.fixture
async def client(engines: Engines) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(engine_factory=engines)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
        yield http
    await app.state.store.cancel_all()
    await app.state.engines.aclose()


async def test_apply_suggestions_makes_a_revised_version_and_says_what_was_not_applied(
    client: httpx.AsyncClient, engines: Engines
) -> None:
    run = await finished_run(client)
    v1 = Story.model_validate(run["story"])
    response = await client.post(f"/api/runs/{run['id']}/revise", json={})
    assert response.status_code == 202, response.text
    job = response.json()
    assert [a["scenes"] for a in job["applied"]] == [[2]] and job["base"] == 1
    assert [u["target"] for u in job["untargeted"]] == [UNTARGETED["target"]]
    events = await events_of(client, run["id"], after=job["after"])
    assert events[-1]["event"] == "steer_done" and events[-1]["version"] == 2
    v2 = Story.model_validate((await client.get(f"/api/runs/{run['id']}/versions/2")).json()["story"])
    assert v2.scenes[0] == v1.scenes[0] and v2.scenes[2] == v1.scenes[2]
    assert "outside, the" in v2.scenes[1].prose and v2.meta["revision"]["revised"] == [2]
    prompts = [
        r.messages[-1].content for r in engines.requests if "Rewrite it with" in r.messages[-1].content
    ]
    assert prompts and all(CHANGE in p for p in prompts)


async def test_apply_suggestions_without_suggestions_is_a_422_and_writes_nothing(
    client: httpx.AsyncClient,
) -> None:
    run = await finished_run(client)
    store = client._transport.app.state.store.store  # type: ignore[attr-defined]
    story = Story.model_validate(run["story"])
    store.add_version(run["id"], story.model_copy(update={"enhancement": None}), "no suggestions", parent=1)
    response = await client.post(f"/api/runs/{run['id']}/revise", json={})
    assert response.status_code == 422 and "no suggestions to apply" in response.json()["error"]
    assert len((await client.get(f"/api/runs/{run['id']}/versions")).json()) == 2


async def test_a_bible_edit_says_which_scenes_it_regenerates_then_regenerates_only_those(
    client: httpx.AsyncClient,
) -> None:
    run = await finished_run(client)
    v1 = Story.model_validate(run["story"])
    assert v1.bible is not None
    cast = [set(item.scene.characters) for item in v1.scenes]
    gone = next(c.name for c in v1.bible.characters if any(c.name in s for s in cast))
    bible: dict[str, Any] = v1.bible.model_dump(mode="json")
    bible["characters"] = [c for c in bible["characters"] if c["name"] != gone]
    using = [i + 1 for i, names in enumerate(cast) if gone in names]

    preview = await client.post(f"/api/runs/{run['id']}/bible", json={"bible": bible, "dry_run": True})
    assert preview.status_code == 200, preview.text
    assert preview.json() == {"scenes": using, "removed": [gone], "base": 1}
    assert len((await client.get(f"/api/runs/{run['id']}/versions")).json()) == 1  # a preview writes nothing

    events = await steer_and_wait(client, f"/api/runs/{run['id']}/bible", {"bible": bible})
    assert events[-1]["event"] == "steer_done"
    v2 = Story.model_validate((await client.get(f"/api/runs/{run['id']}/versions/2")).json()["story"])
    assert v2.bible is not None and gone not in v2.bible.names
    for i, (old, new) in enumerate(zip(v1.scenes, v2.scenes, strict=True)):
        if i + 1 in using:
            assert new.scene != old.scene and gone not in new.scene.characters
        else:
            assert new == old
    assert v2.meta["steered"]["operation"] == "edit_bible"


async def test_an_invalid_bible_is_a_422(client: httpx.AsyncClient) -> None:
    run = await finished_run(client, PREMISE)
    bad = {"characters": [], "setting": "x"}
    response = await client.post(f"/api/runs/{run['id']}/bible", json={"bible": bad})
    assert response.status_code == 422 and "the edited bible is not valid" in response.json()["error"]


async def test_a_story_with_a_gap_tries_the_missing_parts_again_as_a_new_version() -> None:
    broken = {"on": True}

    def script(request: Any) -> str:
        from storyengine.providers.fake_story import story_script

        if broken["on"] and request.component == "evaluation" and request.stage == "structuring":
            return "not json"
        return story_script(request)

    app = create_app(engine_factory=Engines(script))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
    ) as client:
        run = await finished_run(client)
        assert run["story"]["gaps"].keys() == {"evaluation", "enhancement"} and run["status"] == "done"
        broken["on"] = False
        response = await client.post(f"/api/runs/{run['id']}/resume", json={})
        assert response.status_code == 202, response.text
        await events_of(client, run["id"], after=response.json()["after"])
        versions = (await client.get(f"/api/runs/{run['id']}/versions")).json()
        assert [(v["number"], v["label"]) for v in versions] == [(1, "generated"), (2, "completed")]
        completed = Story.model_validate((await client.get(f"/api/runs/{run['id']}")).json()["story"])
        assert not completed.gaps and completed.evaluation is not None
        assert completed.scenes == Story.model_validate(run["story"]).scenes
        again = await client.post(f"/api/runs/{run['id']}/resume", json={})  # nothing missing now
        assert again.status_code == 409 and "nothing missing" in again.json()["error"]
    await app.state.store.cancel_all()
    await app.state.engines.aclose()
