"""The whole pipeline on the scripted provider: exact scenarios, end to end."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from ebooklib import epub

from storyengine.config import Settings, parse_settings
from storyengine.errors import InputError, ProviderUnavailable, RunFailed
from storyengine.export import write_story
from storyengine.pipeline.engine import StoryEngine
from storyengine.providers.fake_story import story_script
from storyengine.providers.scripted import ScriptedProvider
from storyengine.schemas import Story
from storyengine.types import Completion, CompletionRequest

PREMISE = "A cartographer discovers that her maps redraw themselves overnight."


def settings_for(extra: str = "", *, window: int = 8192, in_parts: bool = True) -> Settings:
    parts = "tiny" if in_parts else "standard"
    text = f"""
providers:
  embedded: {{type: embedded, context_window: {window}, profile: {parts}}}
retry: {{attempts: 2, backoff_initial: 0, backoff_max: 0}}
{extra}
"""
    return parse_settings(text, source="test.yaml")


def engine_with(
    script: Any, settings: Settings | None = None, *, window: int = 8192
) -> tuple[StoryEngine, ScriptedProvider]:
    provider = ScriptedProvider(script, name="embedded", context_window=window, structured_mode="grammar")
    engine = StoryEngine.from_config(
        settings=settings or settings_for(window=window), providers={"embedded": provider}
    )
    return engine, provider


@pytest.mark.parametrize("in_parts", [False, True], ids=["whole-objects", "in-parts"])
async def test_full_story_is_typed_valid_and_exported(tmp_path: Path, in_parts: bool) -> None:
    engine, _ = engine_with(story_script, settings_for(in_parts=in_parts))
    async with engine:
        story = await engine.generate(PREMISE, scenes=3, seed=11)
    assert isinstance(story, Story)
    assert len(story.plot.beats) == 3 and len(story.scenes) == 3
    Story.model_validate(story.model_dump(mode="json"))
    paths = write_story(story, tmp_path / "out")
    assert Story.model_validate_json(paths["json"].read_text()) == story
    assert "## Scene 3" in paths["markdown"].read_text()
    fountain = paths["fountain"].read_text()
    assert all(item.scene.setting.upper() in fountain for item in story.scenes)
    assert (
        epub.read_epub(str(paths["epub"]), {"ignore_ncx": True}).get_metadata("DC", "title")[0][0]
        == story.plot.title
    )
    # per component: one freeform call, and one structuring call per object (or per part); counted
    # as calls (a part asked twice with the same prompt is a cache hit, not a provider request)
    stages = Counter((c["component"], c["stage"]) for c in story.meta["calls"] if c["kind"] == "call")
    assert stages[("plot", "freeform")] == 1 and stages[("bible", "freeform")] == 1
    if in_parts:  # title/type, 3 characters, 3 beats; 3 people, setting, 2 facts; title+setting,
        # summary (the cast its draft names is read by code); 4 lines (the fake's scripts are by
        # people outside the tiny cast, so no line is copied by code)
        assert stages[("plot", "structuring")] == 1 + 3 + 3
        reasks = story.meta["steps"]["bible"]["reasked"]  # the fake may copy a description: re-asked
        assert stages[("bible", "structuring")] == 3 + 1 + 2 + reasks
        assert stages[("scene", "structuring")] == 3 * 2 and stages[("dialogue", "structuring")] == 3 * 4
        by_code = [story.meta["steps"][f"scene.{i}"]["parts_by_code"] for i in range(3)]
        assert by_code == [["the characters who appear in the scene, each named once"]] * 3
    else:
        assert stages[("plot", "structuring")] == 1 and stages[("bible", "structuring")] == 1
        assert stages[("scene", "structuring")] == 3 and stages[("dialogue", "structuring")] == 3
    assert story.bible is not None and story.bible.names == list(story.plot.characters)
    assert all(set(item.scene.characters) <= set(story.bible.names) for item in story.scenes)
    calls = story.meta["calls"]
    assert {c["component"] for c in calls} >= {"plot", "scene", "dialogue", "evaluation", "enhancement"}
    for call in calls:
        assert call["run_id"] == story.meta["run_id"]
        assert len(call["prompt_hash"]) == 64 and call["params_snapshot"]["temperature"] is not None
    plot_meta = story.meta["steps"]["plot"]
    assert plot_meta["stage2_text"] and story.meta["steps"]["plot.draft"]["stage1_text"]
    assert plot_meta["structured_mode"] == ("grammar (in parts)" if in_parts else "grammar")


async def test_structuring_request_carries_guardrails_and_bounded_schema() -> None:
    engine, provider = engine_with(story_script, settings_for(in_parts=False))
    async with engine:
        await engine.generate(PREMISE, scenes=4, seed=1)
    plot_request = next(r for r in provider.requests if r.component == "plot" and r.stage == "structuring")
    assert plot_request.temperature == 0.0 and plot_request.seed is not None and plot_request.stop
    beats = plot_request.json_schema["properties"]["beats"]
    assert beats["minItems"] == beats["maxItems"] == 4
    assert beats["items"]["properties"]["tension"]["enum"] == list(range(1, 11))
    dialogue = next(r for r in provider.requests if r.component == "dialogue" and r.stage == "structuring")
    speakers = dialogue.json_schema["properties"]["lines"]["items"]["properties"]["speaker"]["enum"]
    assert speakers and set(speakers) <= set(engine_plot_cast(provider))


def engine_plot_cast(provider: ScriptedProvider) -> list[str]:
    plot_request = next(r for r in provider.requests if r.component == "plot" and r.stage == "structuring")
    return json.loads(story_script(plot_request))["characters"]


async def test_scene_structuring_that_fails_twice_then_succeeds() -> None:
    """Whole-object mode: the scene's answer fails its retry, then the re-ask succeeds."""
    failures: list[str] = []

    def script(request: CompletionRequest) -> str:
        # The fake plot names beat 2 "Name of the harbor 2"; scene 2's structuring prompt carries it
        # as its plot beat (every scene's draft saw the whole plot: its conversation goes on).
        prompt = "\n".join(m.content for m in request.messages)
        if (
            request.component == "scene"
            and request.stage == "structuring"
            and "beat: Name of the harbor 2" in prompt
        ):
            if len(failures) < 2:
                failures.append(prompt)
                return '{"title": "", "setting": 42}'
        return story_script(request)

    engine, provider = engine_with(script, settings_for(in_parts=False))
    async with engine:
        story = await engine.generate(PREMISE, scenes=3, seed=5)
    assert len(failures) == 2
    scene_calls = [r for r in provider.requests if r.component == "scene" and r.stage == "structuring"]
    assert len(scene_calls) == 3 + 2  # one per scene, plus the two failed answers for scene 2
    assert story.meta["steps"]["scene.1"]["attempts"] == 3
    assert story.scenes[1].scene.title.startswith("Title")  # the valid third answer
    rows = [c for c in story.meta["calls"] if c["component"] == "scene" and c["stage"] == "structuring"]
    calls = sorted(c["outcome"] for c in rows if c["kind"] == "call")
    assert calls == ["invalid", "ok", "ok", "ok"]  # scene 2: invalid after its retry, then the re-ask
    assert len([c for c in rows if c["kind"] == "attempt"]) == 5


async def test_in_parts_a_copied_beat_purpose_is_re_asked_at_its_part() -> None:
    """The tiny model's habit: one purpose for every beat. Each copy is re-asked at its own part."""
    copied = "Sets up the keeper and the lighthouse she tends alone."

    def script(request: CompletionRequest) -> str:
        answer = story_script(request)
        schema = request.json_schema or {}
        reasked = any("already used" in m.content for m in request.messages)
        if request.component == "plot" and "purpose" in schema.get("properties", {}) and not reasked:
            return json.dumps({**json.loads(answer), "purpose": copied})
        return answer

    engine, provider = engine_with(script)
    async with engine:
        plot = await engine.plot(PREMISE, beats=3, seed=3)
    purposes = [b.purpose for b in plot.beats]
    assert purposes[0] == copied and len(set(purposes)) == 3
    beat_calls = [
        r
        for r in provider.requests
        if r.component == "plot" and "purpose" in (r.json_schema or {}).get("properties", {})
    ]
    assert len(beat_calls) == 1 + 2 * (2 + 1)  # beats 2 and 3: two attempts with the copy, then the re-ask


async def test_a_scene_draft_that_never_stops_is_kept_as_far_as_it_goes() -> None:
    """SmolLM2 sometimes loops until max_tokens on every attempt: the story goes on, and says so."""
    loop = "The lantern swings in the storm. Mara holds the rope. " * 40 + "The lant"

    def script(request: CompletionRequest) -> Any:
        if request.component == "scene" and request.stage == "freeform":
            return Completion(text=loop, finish_reason="length", model="fake", provider="embedded")
        return story_script(request)

    engine, _ = engine_with(script)
    async with engine:
        story = await engine.generate(PREMISE, scenes=2, seed=4)
    assert len(story.scenes) == 2
    scene_meta = story.meta["steps"]["scene.0.draft"]
    assert scene_meta["stage1_cut_off"] is True
    assert scene_meta["stage1_text"] == "The lantern swings in the storm. Mara holds the rope."
    assert story.meta["steps"]["plot.draft"]["stage1_cut_off"] is False


async def test_a_dialogue_line_the_model_cannot_make_new_is_left_out_with_the_rest() -> None:
    """Optional parts: the dialogue keeps the lines it has instead of failing the scene's story."""

    def script(request: CompletionRequest) -> str:
        answer = story_script(request)
        if request.component == "dialogue" and "text" in (request.json_schema or {}).get("properties", {}):
            return json.dumps({**json.loads(answer), "text": "I told you the map was wrong."})
        return answer

    engine, provider = engine_with(script)
    async with engine:
        story = await engine.generate(PREMISE, scenes=1, seed=2)
    lines = story.scenes[0].dialogue.lines
    # a part may say a line twice; the dialogue assembled from the parts is then reviewed whole,
    # and a long line said again is dropped there, by code (no model call), and recorded
    assert [line.text for line in lines] == ["I told you the map was wrong."]
    findings = story.meta["steps"]["dialogue.0"]["findings"]
    assert {"rule": "repeated_line", "field": "lines[1]", "action": "dropped"}.items() <= findings[-1].items()
    left_out = story.meta["steps"]["dialogue.0"]["parts_left_out"]
    assert len(left_out) == 2 and "already used" in left_out[0] and "rest of its list" in left_out[1]
    line_calls = [r for r in provider.requests if r.component == "dialogue" and r.stage == "structuring"]
    # lines 1-2, then line 3 (optional): one answer and one re-ask, not the retry layer's further
    # attempts (two per ask here); no line 4
    assert len(line_calls) == 2 + (1 + 1)


async def test_a_required_part_the_model_cannot_write_still_fails_with_a_clear_error() -> None:
    def script(request: CompletionRequest) -> str:
        if request.component == "plot" and "purpose" in (request.json_schema or {}).get("properties", {}):
            return '{"name": "", "purpose": 3}'
        return story_script(request)

    engine, _ = engine_with(script)
    async with engine:
        with pytest.raises(RunFailed, match="plot"):
            await engine.generate(PREMISE, scenes=1, seed=2)


async def test_provider_dies_mid_run_then_resume_makes_no_repeated_calls(tmp_path: Path) -> None:
    settings = settings_for("cache: {enabled: false}")
    healthy = {"on": True}

    def flaky(request: CompletionRequest) -> Any:
        if not healthy["on"] and request.component in ("dialogue", "evaluation", "enhancement"):
            return ProviderUnavailable("connection refused", provider="embedded")
        return story_script(request)

    healthy["on"] = False
    engine, provider = engine_with(flaky, settings)
    async with engine:
        with pytest.raises(RunFailed) as caught:
            await engine.generate(PREMISE, scenes=3, seed=3)
    run_id = caught.value.run_id
    assert f"--resume {run_id}" in str(caught.value)
    first_ok = {
        (r.component, r.stage, r.messages) for r in provider.requests if r.component in ("plot", "scene")
    }
    assert len([r for r in provider.requests if r.component == "scene" and r.stage == "freeform"]) == 3

    healthy["on"] = True
    engine2, provider2 = engine_with(flaky, settings)
    async with engine2:
        story = await engine2.resume(run_id)
    assert len(story.scenes) == 3
    repeated = [r for r in provider2.requests if (r.component, r.stage, r.messages) in first_ok]
    assert repeated == []
    assert {r.component for r in provider2.requests} == {"dialogue", "evaluation", "enhancement"}
    # the plot and scenes of the first run are the story's
    state = json.loads(engine2.checkpoints.path(run_id).read_text())
    assert state["header"]["status"] == "done"
    assert story.plot.model_dump(mode="json") == state["steps"]["plot"]


async def test_twelve_scenes_fit_a_2048_token_window() -> None:
    engine, provider = engine_with(story_script, settings_for(window=2048), window=2048)
    async with engine:
        story = await engine.generate(PREMISE, scenes=12, seed=9)
    assert len(story.scenes) == 12
    for request in provider.requests:
        prompt = sum(provider.count_tokens(m.content) + 6 for m in request.messages)
        assert prompt + request.max_tokens <= 2048, (request.component, request.stage)
    summarized = [s for meta in story.meta["steps"].values() for s in meta.get("summarized", [])]
    assert summarized, "a 12-scene story must summarize earlier scenes on a 2,048-token window"
    assert any(r.component == "summarize" for r in provider.requests)
    # continuity: every scene's characters come from the plot's cast
    cast = {c.lower() for c in story.plot.characters}
    assert all({c.lower() for c in item.scene.characters} <= cast for item in story.scenes)


async def test_same_seed_same_story_and_different_seed_differs() -> None:
    settings = settings_for("cache: {enabled: false}")
    stories = []
    for seed in (21, 21, 22):
        engine, _ = engine_with(story_script, settings)
        async with engine:
            stories.append(await engine.generate(PREMISE, scenes=2, seed=seed))
    dump = [s.model_dump(mode="json", exclude={"meta"}) for s in stories]
    drafts = [s.meta["steps"]["plot.draft"]["stage1_text"] for s in stories]
    assert dump[0] == dump[1] and drafts[0] == drafts[1]
    assert drafts[0] != drafts[2] or dump[0] != dump[2]


@pytest.mark.parametrize(
    ("premise", "scenes", "message"),
    [
        ("   ", None, "empty"),
        ("x" * 100_000, None, "characters"),
        (PREMISE, 0, "between"),
        (PREMISE, 500, "between"),
    ],
)
async def test_bad_input_is_rejected_before_any_call(premise: str, scenes: int | None, message: str) -> None:
    engine, provider = engine_with(story_script)
    async with engine:
        with pytest.raises(InputError, match=message):
            await engine.generate(premise, scenes=scenes)
    assert provider.calls == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["   "], "premise is empty"),
        (["x" * 100_000], "characters"),
        ([PREMISE, "--scenes", "0"], "between 1 and"),
        ([PREMISE, "--scenes", "500"], "between 1 and"),
        ([PREMISE, "--out", "{tmp}/a-file/out"], "cannot write to --out"),
        (["--resume", "20260101-000000-abcdef", PREMISE], "give the run id"),
        (["--resume", "20260101-000000-abcdef", "--seed", "4"], "no run"),
    ],
)
def test_cli_rejects_bad_input_in_one_line_before_any_model_call(
    args: list[str], message: str, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from storyengine.cli import main

    # A config whose only provider is a closed port: any model call would fail differently.
    config = tmp_path / "config.yaml"
    config.write_text(
        "narrative: {providers: {plot: down, scene: down, dialogue: down, evaluation: down, "
        "enhancement: down, summarize: down}}\n"
        "providers: {down: {type: openai, base_url: 'http://127.0.0.1:9/v1', model: m}}\n"
    )
    (tmp_path / "a-file").write_text("not a directory")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(main, ["generate", *args, "--config", str(config)])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_public_api_is_importable() -> None:
    import storyengine

    for name in storyengine.__all__:
        assert getattr(storyengine, name) is not None
