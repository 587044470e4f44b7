"""The streaming seam: a draft's text reaches the run's events as it is written, and nothing that is
stored changes with or without a listener."""

from __future__ import annotations

from typing import Any

from storyengine import streaming
from storyengine.config import parse_settings
from storyengine.pipeline.engine import StoryEngine
from storyengine.providers.fake_story import story_script
from storyengine.providers.scripted import ScriptedProvider
from storyengine.types import CompletionRequest

PREMISE = "A cartographer discovers that her maps redraw themselves overnight."
SETTINGS = """
providers:
  embedded: {type: embedded, profile: tiny}
retry: {attempts: 2, backoff_initial: 0, backoff_max: 0}
cache: {enabled: false}
"""


def _engine(script: Any) -> StoryEngine:
    provider = ScriptedProvider(script, name="embedded", structured_mode="grammar")
    return StoryEngine.from_config(
        settings=parse_settings(SETTINGS, source="test.yaml"), providers={"embedded": provider}
    )


async def test_every_draft_streams_as_it_is_written_and_the_pieces_make_the_draft() -> None:
    events: list[dict[str, Any]] = []
    async with _engine(story_script) as engine:
        story = await engine.generate(PREMISE, scenes=2, seed=5, on_event=events.append)
    drafts = {e["name"]: e["value"] for e in events if e["event"] == "step_done" and e["stage"] == "freeform"}
    assert {"plot.draft", "scene.0.draft", "scene.1.draft"} <= set(drafts)
    for name, text in drafts.items():
        shown = ""
        for event in events:
            if event.get("name") != name:
                continue
            if event["event"] == "draft_restarted":
                shown = ""  # a new attempt: the viewer drops what the last one showed
            elif event["event"] == "draft_delta":
                shown += event["text"]
        assert shown.strip(), name
        # the last attempt shown is the draft kept (a draft may be trimmed by code after it)
        assert text.strip()[:40] in shown, name
    scene_deltas = [e for e in events if e["event"] == "draft_delta" and e["step"] == "scene"]
    assert {e["index"] for e in scene_deltas} == {1, 2} and len(scene_deltas) > 10
    # stage 2 writes JSON: nothing of it is streamed as text
    assert not [e for e in events if e["event"] == "draft_delta" and not e["name"].endswith(".draft")]
    # the same seed without a listener stores the same story
    async with _engine(story_script) as engine:
        quiet = await engine.generate(PREMISE, scenes=2, seed=5)
    assert quiet.model_dump(mode="json", exclude={"meta"}) == story.model_dump(mode="json", exclude={"meta"})


async def test_a_retried_draft_restarts_its_stream() -> None:
    asked: dict[str, int] = {}

    def script(request: CompletionRequest) -> Any:
        if request.component == "plot" and request.stage == "freeform":
            asked["plot"] = asked.get("plot", 0) + 1
            if asked["plot"] == 1:
                return ""  # an empty answer: vetted out, asked again
        return story_script(request)

    events: list[dict[str, Any]] = []
    async with _engine(script) as engine:
        await engine.generate(PREMISE, scenes=1, seed=5, on_event=events.append)
    plot = [e["event"] for e in events if e.get("name") == "plot.draft"]
    assert plot.count("draft_restarted") >= 2 and asked["plot"] >= 2


def test_a_listener_that_fails_is_dropped_not_fatal() -> None:
    heard: list[str] = []

    def broken(text: str) -> None:
        heard.append(text)
        raise RuntimeError("display gone")

    with streaming.listening(streaming.Listener(on_delta=broken)):
        streaming.delta("one")
        streaming.delta("two")
        assert not streaming.wanted()
    assert heard == ["one"]
