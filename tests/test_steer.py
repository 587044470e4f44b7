"""Steering as operations of the run engine: one seed scheme, one numbering, checkpoints, versions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from storyengine.config import Settings, parse_settings
from storyengine.errors import InputError, ProviderUnavailable, RunFailed
from storyengine.pipeline.engine import StoryEngine, scene_inputs
from storyengine.pipeline.runstore import NotFound
from storyengine.pipeline.steering import Steer
from storyengine.pipeline.steps import Inputs
from storyengine.providers.fake_story import story_script
from storyengine.providers.scripted import ScriptedProvider
from storyengine.schemas import Story
from storyengine.seeds import StepSeeds
from storyengine.types import CompletionRequest

PREMISE = "A cartographer discovers that her maps redraw themselves overnight."
EDIT = {"name": "The Harbour Betrayal", "purpose": "Mara learns the maps were forged.", "tension": 9}


def settings(in_parts: bool = False) -> Settings:
    """One scene draft a scene: these tests follow each draft's seed (the choice among several is
    tests/test_text_rules.py's)."""
    parts = "tiny" if in_parts else "standard"
    return parse_settings(
        f"""
providers:
  embedded: {{type: embedded, context_window: 8192, profile: {parts}}}
retry: {{attempts: 2, backoff_initial: 0, backoff_max: 0}}
cache: {{enabled: false}}
narrative: {{scene_drafts: 1}}
""",
        source="test.yaml",
    )


def engine_with(script: Any = story_script, in_parts: bool = False) -> tuple[StoryEngine, ScriptedProvider]:
    provider = ScriptedProvider(script, name="embedded", structured_mode="grammar")
    engine = StoryEngine.from_config(settings=settings(in_parts), providers={"embedded": provider})
    return engine, provider


def without_meta(story: Story) -> dict[str, Any]:
    return story.model_dump(mode="json", exclude={"meta"})


def draft_seed(run_seed: int, key: str) -> int | None:
    """The seed of the first draft of step `key` in a run seeded `run_seed` (seeds.py)."""
    return StepSeeds(run_seed, key).draft(0, None)


def freeform(requests: list[CompletionRequest], component: str) -> list[CompletionRequest]:
    return [r for r in requests if r.component == component and r.stage == "freeform"]


async def test_same_edit_with_the_same_seed_gives_the_same_story() -> None:
    engine, provider = engine_with()
    async with engine:
        story = await engine.generate(PREMISE, scenes=3, seed=7)
        run_id = story.meta["run_id"]
        before = len(provider.requests)
        first = await engine.edit_beat(run_id, 1, EDIT, base=1, seed=99)
        steered = provider.requests[before:]
        second = await engine.edit_beat(run_id, 1, EDIT, base=1, seed=99)
        other = await engine.edit_beat(run_id, 1, EDIT, base=1, seed=100)
    assert (first.number, second.number, other.number) == (2, 3, 4)
    a, b, c = first.the_story(), second.the_story(), other.the_story()
    assert without_meta(a) == without_meta(b)
    drafts = [s.meta["steps"]["scene.1.draft"]["stage1_text"] for s in (a, b, c)]
    assert drafts[0] == drafts[1] and drafts[0] != drafts[2]  # the seed reaches the remade scenes
    assert a.plot.beats[1].name == "The Harbour Betrayal" and a.scenes[0] == story.scenes[0]
    assert a.meta["steered"]["seed"] == 99 and a.meta["steered"]["operation"] == "edit_beat"
    assert first.seed == 99 and first.parent == 1
    # every remade call was made (the cache is off): scenes 2 and 3, their dialogue, the assessment
    assert {r.component for r in steered} == {"scene", "dialogue", "evaluation", "enhancement"}
    assert sorted(r.seed for r in freeform(steered, "scene")) == sorted(
        draft_seed(99, f"scene.{i}") for i in (1, 2)
    )


@pytest.mark.parametrize("scenes", [3, 2], ids=["a-scene-per-beat", "fewer-scenes-than-beats"])
async def test_a_steered_scene_gets_the_seed_and_number_it_has_in_generate(scenes: int) -> None:
    """Regenerating scene 2 with the run's own seed asks exactly what `generate` asked for scene 2."""
    engine, provider = engine_with()
    async with engine:
        story = await engine.generate(PREMISE, scenes=scenes, seed=7)
        assert len(story.plot.beats) == 3  # with 2 scenes, scene 2 realises beat 3
        generated = list(provider.requests)
        version = await engine.regenerate_scene(story.meta["run_id"], 1, seed=7, reevaluate=False)
    steered = provider.requests[len(generated) :]
    asked = freeform(steered, "scene")
    assert len(asked) == 1 and asked[0].seed == draft_seed(7, "scene.1")
    assert f"Write scene 2 of {scenes}." in asked[0].messages[-1].content
    original = next(r for r in freeform(generated, "scene") if r.seed == draft_seed(7, "scene.1"))
    assert asked[0].messages == original.messages
    dialogue = freeform(steered, "dialogue")
    assert [r.seed for r in dialogue] == [draft_seed(7, "dialogue.1")]
    assert without_meta(version.the_story()) == without_meta(story)
    assert {r.component for r in steered} == {"scene", "dialogue"}  # reevaluate=False keeps the assessment


async def test_steered_evaluation_is_seeded_like_generate() -> None:
    engine, provider = engine_with()
    async with engine:
        story = await engine.generate(PREMISE, scenes=2, seed=3)
        before = len(provider.requests)
        await engine.regenerate_dialogue(story.meta["run_id"], 0, seed=41)
    steered = provider.requests[before:]
    assert [r.seed for r in freeform(steered, "evaluation")] == [draft_seed(41, "evaluation")]
    assert [r.seed for r in freeform(steered, "enhancement")] == [draft_seed(41, "enhancement")]
    assert [r.seed for r in freeform(steered, "dialogue")] == [draft_seed(41, "dialogue.0")]


async def test_steering_is_checkpointed_emits_run_events_and_resumes() -> None:
    healthy = {"on": True}

    def flaky(request: CompletionRequest) -> Any:
        # A required step fails (an evaluation that fails leaves a gap, not a failed job)
        if request.component == "dialogue" and not healthy["on"]:
            return ProviderUnavailable("connection refused", provider="embedded")
        return story_script(request)

    engine, provider = engine_with(flaky)
    events: list[dict[str, Any]] = []
    async with engine:
        story = await engine.generate(PREMISE, scenes=3, seed=5)
        run_id = story.meta["run_id"]
        healthy["on"] = False
        with pytest.raises(RunFailed) as caught:
            await engine.regenerate_scene(run_id, 2, seed=8, on_event=events.append)
        state_id = caught.value.run_id
        assert state_id.startswith(f"{run_id}.steer-")
        state = json.loads(engine.checkpoints.path(state_id).read_text())
        assert state["header"]["status"] == "failed" and state["header"]["seed"] == 8
        assert {"scene.2", "scene.0", "dialogue.1", "plot"} <= set(state["steps"])
        assert "dialogue.2" not in state["steps"] and "evaluation" not in state["steps"]
        assert [v.number for v in engine.runs.versions(run_id)] == [1]  # a failed job adds nothing
        started = [e for e in events if e["event"] == "step_started" and e["step"] == "scene"]
        assert [(e["index"], e["total"]) for e in started] == [(3, 3), (3, 3)]  # draft, structuring

        healthy["on"] = True
        before = len(provider.requests)
        resumed = await engine.resume(state_id)
    assert {r.component for r in provider.requests[before:]} == {"dialogue", "evaluation", "enhancement"}
    versions = engine.runs.versions(run_id)
    assert [(v.number, v.parent, v.label, v.seed) for v in versions] == [
        (1, None, "generated", 5),
        (2, 1, "regenerated scene 3", 8),
    ]
    assert resumed.scenes[:2] == story.scenes[:2]


@pytest.mark.parametrize(
    ("call", "error", "says"),
    [
        (lambda e, run: e.regenerate_scene("nope", 0), NotFound, "no run 'nope'"),
        (lambda e, run: e.regenerate_dialogue(run, 0, base=5), NotFound, "no version 5"),
        (lambda e, run: e.regenerate_scene(run, 3), InputError, "scene 3 does not exist"),
        (lambda e, run: e.edit_beat(run, 9, {"name": "X"}), InputError, "beat 9 does not exist"),
        (lambda e, run: e.edit_beat(run, 0, {}), InputError, "at least one of"),
        (lambda e, run: e.edit_beat(run, 0, {"mood": "grim"}), InputError, "no field mood"),
        (lambda e, run: e.restore(run, 4), NotFound, "no version 4"),
    ],
)
async def test_steering_what_does_not_exist_is_a_clear_error_and_writes_nothing(
    call: Any, error: type[Exception], says: str
) -> None:
    engine, provider = engine_with()
    async with engine:
        story = await engine.generate(PREMISE, scenes=3, seed=1)
        run_id = story.meta["run_id"]
        files = set(engine.checkpoints.directory.iterdir())
        calls = provider.calls
        with pytest.raises(error, match=says):
            await call(engine, run_id)
    assert provider.calls == calls and set(engine.checkpoints.directory.iterdir()) == files
    assert [v.number for v in engine.runs.versions(run_id)] == [1]
    assert without_meta(engine.runs.version(run_id, 1).the_story()) == without_meta(story)


async def test_generate_with_an_existing_run_id_overwrites_nothing() -> None:
    engine, _ = engine_with()
    async with engine:
        story = await engine.generate(PREMISE, scenes=1, seed=1)
        run_id = story.meta["run_id"]
        saved = engine.checkpoints.path(run_id).read_text()
        with pytest.raises(InputError, match="exists already"):
            await engine.generate("Another premise entirely.", scenes=1, run_id=run_id)
    assert engine.checkpoints.path(run_id).read_text() == saved
    assert engine.runs.run(run_id).premise == PREMISE


async def test_components_use_the_seeds_and_numbering_of_generate_and_return_their_metadata() -> None:
    engine, provider = engine_with()
    async with engine:
        story = await engine.generate(PREMISE, scenes=3, seed=9)
        generated = list(provider.requests)
        provider.requests.clear()
        plot = await engine.step("plot", Inputs(premise=PREMISE, beats=3), seed=9)
        bible = await engine.step("bible", Inputs(premise=PREMISE, plot=story.plot), seed=9)
        assert bible.value == story.bible
        x = scene_inputs(PREMISE, story.plot, 2, story.bible)
        scene = await engine.step("scene", x, seed=9, index=2)
        previous = "\n".join(
            f"{j}. {item.scene.title}. Setting: {item.scene.setting}. {item.scene.summary}"
            for j, item in enumerate(story.scenes[:2], 1)
        )
        # the scene's draft: its dialogue goes on from the conversation the scene step just had
        draft = scene.meta["scene.2.draft"]["stage1_text"]
        x = Inputs(scene=story.scenes[2].scene, scene_draft=draft, previous=previous, bible=story.bible)
        dialogue = await engine.step("dialogue", x, seed=9, index=2)
        evaluation = await engine.evaluate(PREMISE, story.plot, story.scenes, seed=9)
        enhancement = await engine.enhance(PREMISE, story.plot, story.scenes, evaluation, seed=9)
        with pytest.raises(InputError, match="beat 3 does not exist"):
            await engine.scene(PREMISE, story.plot, 3)
    # the same requests as the run's: same prompts, same seeds
    assert [(r.component, r.stage, r.seed, r.messages) for r in freeform(provider.requests, "scene")] == [
        (r.component, r.stage, r.seed, r.messages)
        for r in freeform(generated, "scene")
        if r.seed == draft_seed(9, "scene.2")
    ]
    for component in ("plot", "bible", "dialogue", "evaluation", "enhancement"):
        mine = [(r.seed, r.messages) for r in freeform(provider.requests, component)]
        theirs = [(r.seed, r.messages) for r in freeform(generated, component)]
        assert mine and mine[0] in theirs, component
    assert plot.value == story.plot and scene.value == story.scenes[2].scene
    assert dialogue.value == story.scenes[2].dialogue
    # the run's story also carries the code's verdict on the rubric (reliable, notes); the model's is the same
    assert story.evaluation is not None
    assert evaluation.scores == story.evaluation.scores and evaluation.summary == story.evaluation.summary
    assert enhancement == story.enhancement
    assert set(plot.meta) == {"plot.draft", "plot"} and plot.meta["plot"]["structured_mode"] == "grammar"
    assert plot.meta["plot.draft"]["stage1_text"] == story.meta["steps"]["plot.draft"]["stage1_text"]
    assert set(dialogue.meta) == {"dialogue.2.draft", "dialogue.2"}
    assert scene.meta["scene.2"]["attempts"] >= 1


async def test_steering_in_parts_keeps_untouched_parts_and_their_metadata(tmp_path: Path) -> None:
    engine, _ = engine_with(in_parts=True)
    async with engine:
        story = await engine.generate(PREMISE, scenes=3, seed=2)
        version = await engine.regenerate_dialogue(story.meta["run_id"], 1, seed=2, reevaluate=False)
    steered = version.the_story()
    assert without_meta(steered) == without_meta(story)  # same seed, same scheme: the same lines
    steps = steered.meta["steps"]
    assert steps["scene.0"] == story.meta["steps"]["scene.0"]  # kept with its metadata
    assert steps["dialogue.1"]["structured_mode"] == "grammar (in parts)"  # made again
    assert steered.meta["calls"] and {c["component"] for c in steered.meta["calls"]} == {"dialogue"}
    assert isinstance(Steer.from_dict(steered.meta["steered"]), Steer)
