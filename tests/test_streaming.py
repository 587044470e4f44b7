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


def test_a_whole_objects_json_tells_each_list_item_once_it_is_complete_and_valid() -> None:
    import json

    from storyengine.pipeline.growing_json import GrowingItems
    from storyengine.schemas import PlotStructure
    from storyengine.text.rules import Context

    beats = [
        {"name": "Dawn", "purpose": 'Sets up the keeper\'s "quiet" life, her debts.', "tension": 2},
        {"name": "Storm", "purpose": "Raises the stakes as the storm cuts the harbour off.", "tension": 11},
        {"name": "Return", "purpose": "In the end, the light burns again over the bay.", "tension": 3},
    ]
    answer = json.dumps(
        {"structure_type": "three-act", "title": "The Light", "beats": beats, "characters": ["Mara"]}
    )
    told: list[tuple[str, str | None, dict]] = []
    listener = streaming.Listener(
        on_delta=None, on_part=lambda what, of, value: told.append((what, of, value))
    )
    items = GrowingItems(PlotStructure, Context(language="en"))
    with streaming.listening(listener):
        for char in answer[: answer.index('"Storm"')]:  # the first beat is complete, the second is not
            items.feed(char)
        assert [what for what, _, _ in told] == ["beats[0]"] and told[0][2]["purpose"] == beats[0]["purpose"]
        items.feed(answer[answer.index('"Storm"') :])
    # the second beat's tension is out of bounds: never shown; the third is, as the second shown
    assert [(what, of, value["name"]) for what, of, value in told] == [
        ("beats[0]", "beats", "Dawn"),
        ("beats[1]", "beats", "Return"),
    ]
    items.restart()  # a new attempt: counted from the start again
    told.clear()
    with streaming.listening(listener):
        items.feed(answer)
    assert [what for what, _, _ in told] == ["beats[0]", "beats[1]"]


async def test_a_standard_models_plot_shows_its_beats_as_its_json_grows() -> None:
    """The standard profile structures whole objects; with someone listening, the JSON streams
    and each beat is told as a part the moment it is complete and valid, before the plot is."""
    provider = ScriptedProvider(story_script, name="embedded", structured_mode="grammar", profile="standard")
    settings = parse_settings(SETTINGS.replace("profile: tiny", "profile: standard"), source="test.yaml")
    events: list[dict[str, Any]] = []
    async with StoryEngine.from_config(settings=settings, providers={"embedded": provider}) as engine:
        story = await engine.generate(PREMISE, scenes=3, seed=5, on_event=events.append)
    plot_done = next(i for i, e in enumerate(events) if e["event"] == "step_done" and e.get("name") == "plot")
    beats = [e for e in events[:plot_done] if e["event"] == "part_done" and e["name"] == "plot"]
    assert [b["value"]["name"] for b in beats] == [b.name for b in story.plot.beats]
    assert all(b["of"] == "beats" for b in beats)
    lines = [e for e in events if e["event"] == "part_done" and e["name"] == "dialogue.0"]
    assert [line["value"]["text"] for line in lines] == [line.text for line in story.scenes[0].dialogue.lines]
