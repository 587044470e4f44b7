"""Revision: the enhancement's suggestions applied to the targeted scenes, as a new version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from storyengine.config import Settings, parse_settings
from storyengine.errors import InputError
from storyengine.pipeline.engine import StoryEngine
from storyengine.pipeline.revision import plan_revision, scenes_targeted
from storyengine.pipeline.runstore import NotFound
from storyengine.providers.fake_story import story_script
from storyengine.providers.scripted import ScriptedProvider
from storyengine.quality import story_measures, worse_measures
from storyengine.schemas import Enhancement, Story
from storyengine.types import CompletionRequest

PREMISE = "A cartographer discovers that her maps redraw themselves overnight."
CHANGE = "Let the storm break over the harbor while Mara studies the redrawn coastline."
UNTARGETED = {
    "target": "The weather in general",
    "problem": "Skies stay vague.",
    "change": "Name the clouds.",
}

# A rewritten scene that reads better by every code measure: longer, varied, on the premise.
_VERBS = "unrolls traces compares circles questions copies burns signs locks folds measures hides".split()
_THINGS = "chart coastline inlets islands soundings survey drawer compass ledger lantern atlas quill".split()
_PLACES = "harbor lighthouse fjord estuary quay channel archive office study attic pier tower".split()
_SKY = "storm rain thunder lightning gale surf squall dawn fog hail tide wind".split()
_DOES = "gathers hammers rolls splits tears climbs passes breaks lifts rattles turns howls".split()
BETTER = "The cartographer discovers that her maps redraw themselves overnight.\n\n" + "\n\n".join(
    " ".join(
        f"Mara {_VERBS[k % 12]} the {_THINGS[(k + p) % 12]} in the {_PLACES[(k + 5 * p) % 12]}; "
        f"outside, the {_SKY[(k + 7 * p) % 12]} {_DOES[(k + 3 * p) % 12]}."
        for k in range(p * 5, p * 5 + 5)
    )
    for p in range(5)
)
# A rewritten scene that makes the story worse: one sentence, said again and again.
WORSE = " ".join(["Mara looks at the map."] * 12)


def enhancement(targets: list[str]) -> str:
    suggestions = [
        {"target": t, "problem": f"The {t.lower()} feels thin and rushed.", "change": CHANGE} for t in targets
    ]
    suggestions.append(UNTARGETED)
    return json.dumps({"suggestions": suggestions, "summary": "Sharpen the middle of the story."})


def script(targets: list[str], rewritten: str) -> Any:
    def answer(request: CompletionRequest) -> str:
        prompt = request.messages[-1].content
        if request.component == "enhancement" and request.stage == "structuring":
            return enhancement(targets)
        if request.component == "scene" and request.stage == "freeform" and "Rewrite it with" in prompt:
            return rewritten
        return story_script(request)

    return answer


def settings(extra: str = "") -> Settings:
    return parse_settings(
        f"""
providers:
  embedded: {{type: embedded, context_window: 8192, profile: standard}}
{extra}
retry: {{attempts: 2, backoff_initial: 0, backoff_max: 0}}
cache: {{enabled: false}}
""",
        source="test.yaml",
    )


def engine_with(answer: Any) -> tuple[StoryEngine, ScriptedProvider]:
    provider = ScriptedProvider(answer, name="embedded", structured_mode="grammar")
    return StoryEngine.from_config(settings=settings(), providers={"embedded": provider}), provider


def without_meta(story: Story) -> dict[str, Any]:
    return story.model_dump(mode="json", exclude={"meta"})


async def test_a_revision_rewrites_exactly_the_targeted_scene_as_a_new_version() -> None:
    engine, provider = engine_with(script(["Scene 2"], BETTER))
    async with engine:
        story = await engine.generate(PREMISE, scenes=3, seed=7)
        run_id = story.meta["run_id"]
        before = len(provider.requests)
        version = await engine.revise(run_id, seed=11)
    asked = provider.requests[before:]
    revised = version.the_story()
    assert (version.number, version.parent) == (2, 1)
    assert version.label == "revised scene(s) 2 from the suggestions"
    # only scene 2 (and its dialogue) was written again, then the story was assessed again
    scene_drafts = [r for r in asked if r.component == "scene" and r.stage == "freeform"]
    assert scene_drafts and all("Write scene 2 of 3." in r.messages[-1].content for r in scene_drafts)
    prompt = scene_drafts[0].messages[-1].content
    assert CHANGE in prompt and story.scenes[1].prose[:80] in prompt  # the change and the earlier prose
    assert {r.component for r in asked} == {"scene", "dialogue", "evaluation", "enhancement"}
    assert revised.scenes[0] == story.scenes[0] and revised.scenes[2] == story.scenes[2]
    assert revised.scenes[1].prose != story.scenes[1].prose and "outside, the" in revised.scenes[1].prose
    record = revised.meta["revision"]
    assert record["revised"] == [2] and record["kept_earlier"] == {}
    assert record["applied"][0]["scenes"] == [2]
    assert [u["target"] for u in record["untargeted"]] == [UNTARGETED["target"]]  # reported, not applied
    assert not worse_measures(story_measures(story), story_measures(revised))
    assert record["before"] == story_measures(story) and record["after"] == story_measures(revised)
    # nothing overwritten: version 1 is the story it was
    assert without_meta(engine.runs.version(run_id, 1).the_story()) == without_meta(story)


async def test_a_rewritten_scene_that_makes_the_story_worse_keeps_its_earlier_version() -> None:
    engine, _ = engine_with(script(["Scene 1"], WORSE))
    async with engine:
        story = await engine.generate(PREMISE, scenes=2, seed=3)
        version = await engine.revise(story.meta["run_id"], seed=4)
    revised = version.the_story()
    record = revised.meta["revision"]
    assert record["revised"] == [] and "repeated sentences %" in " ".join(record["kept_earlier"]["1"])
    assert revised.scenes == story.scenes  # the earlier scene, its prose and its dialogue
    assert not worse_measures(story_measures(story), story_measures(revised))
    state = json.loads(engine.checkpoints.path(revised.meta["run_id"]).read_text())
    assert state["steps"]["scene.0.draft"] == story.scenes[0].prose  # a resume keeps the earlier scene


@pytest.mark.parametrize(
    ("target", "scenes"),
    [
        ("Scene 3", [2]),
        ("scene #1", [0]),
        ("Chapter 2", [1]),
        ("Scene 9", []),
        ("the ending", [2]),
        ("The opening", [0]),
        ("nothing in particular", []),
    ],
)
async def test_targets_name_scenes_by_number_and_by_place(target: str, scenes: list[int]) -> None:
    engine, _ = engine_with(story_script)
    async with engine:
        story = await engine.generate(PREMISE, scenes=3, seed=2)
    assert scenes_targeted(story, target) == scenes


async def test_targets_name_scenes_by_title_beat_and_character() -> None:
    engine, _ = engine_with(story_script)
    async with engine:
        story = await engine.generate(PREMISE, scenes=3, seed=2)
    assert scenes_targeted(story, story.scenes[1].scene.title) == [1]
    beat = next(b for b in story.plot.beats if b.name == story.scenes[2].scene.beat)
    assert 2 in scenes_targeted(story, f"the beat {beat.name!r}")
    person = story.scenes[0].scene.characters[0]
    expected = [i for i, s in enumerate(story.scenes) if person in s.scene.characters]
    assert scenes_targeted(story, person) == expected


async def test_revise_what_cannot_be_revised_is_a_clear_error_and_writes_nothing() -> None:
    engine, provider = engine_with(script(["The weather"], BETTER))
    async with engine:
        story = await engine.generate(PREMISE, scenes=2, seed=1)
        run_id = story.meta["run_id"]
        files = set(engine.checkpoints.directory.iterdir())
        calls = provider.calls
        with pytest.raises(NotFound, match="no run 'nope'"):
            await engine.revise("nope")
        with pytest.raises(NotFound, match="no version 7"):
            await engine.revise(run_id, base=7)
        with pytest.raises(InputError, match="none of the 2 suggestion"):
            await engine.revise(run_id)  # both suggestions name nothing in the story
        gap = story.model_copy(update={"enhancement": None, "gaps": {"enhancement": "the model gave none"}})
        engine.runs.add_version(run_id, gap, "without suggestions", parent=1)
        with pytest.raises(InputError, match=r"no suggestions to apply .*the model gave none"):
            await engine.revise(run_id)

        # a version written with a provider that this configuration no longer has
        targeted = Enhancement.model_validate_json(enhancement(["Scene 1"]))
        meta = {**story.meta, "routes": {"scene": ["lmstudio"]}}
        engine.runs.add_version(
            run_id, story.model_copy(update={"enhancement": targeted, "meta": meta}), "old"
        )
        with pytest.raises(InputError, match=r"provider.*lmstudio.*no longer configures.*--provider"):
            await engine.revise(run_id)
        assert provider.calls == calls and set(engine.checkpoints.directory.iterdir()) == files
    assert [v.number for v in engine.runs.versions(run_id)] == [1, 2, 3]


def test_plan_revision_reports_what_each_suggestion_targets() -> None:
    data = json.loads(enhancement(["Scene 1"]))
    story = Story.model_validate(
        {
            "premise": PREMISE,
            "plot": {
                "title": "The Moving Coast",
                "structure_type": "three-act",
                "characters": ["Mara", "Tobin"],
                "beats": [
                    {"name": "The Map", "purpose": "Mara finds a changed map.", "tension": 3},
                    {"name": "The Storm", "purpose": "A storm hits the harbor.", "tension": 8},
                    {"name": "The Dawn", "purpose": "Mara chooses the truth.", "tension": 5},
                ],
            },
            "scenes": [
                {
                    "scene": {
                        "title": "Ink at Midnight",
                        "setting": "A study above the harbor.",
                        "summary": "Mara watches a coastline move on her desk.",
                        "characters": ["Mara", "Tobin"],
                        "beat": "The Map",
                    },
                    "dialogue": {"lines": [{"speaker": "Mara", "text": "It moved again."},
                                           {"speaker": "Tobin", "text": "Maps do not move."}]},
                    "prose": "Mara watched the coastline move.",
                }
            ],
            "enhancement": data,
        }
    )  # fmt: skip
    plan = plan_revision(story)
    assert plan.changes == {0: [f"{CHANGE} (The scene 1 feels thin and rushed)"]}
    assert plan.applied == [{"target": "Scene 1", "change": CHANGE, "scenes": [1]}]
    assert plan.untargeted[0]["target"] == UNTARGETED["target"]


def test_the_cli_generates_revises_and_writes_both_and_revise_refuses_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from storyengine.cli import main

    original = StoryEngine.from_config

    def scripted(*args: Any, **kwargs: Any) -> StoryEngine:
        provider = ScriptedProvider(script(["Scene 1"], BETTER), name="embedded", structured_mode="grammar")
        return original(*args, **{**kwargs, "providers": {"embedded": provider}})

    monkeypatch.setattr(StoryEngine, "from_config", scripted)
    config = tmp_path / "config.yaml"
    config.write_text(
        "providers: {embedded: {type: embedded, profile: standard}}\ncache: {enabled: false}\n"
        f"logging: {{runlog: {tmp_path / 'runs.sqlite3'}, dir: {tmp_path / 'logs'}}}\n"
    )
    out = tmp_path / "story"
    result = CliRunner().invoke(main, ["generate", PREMISE, "--scenes", "2", "--seed", "2", "--config",
                                       str(config), "--out", str(out), "--revise"])  # fmt: skip
    assert result.exit_code == 0, result.output
    first = Story.model_validate_json((out / "story.json").read_text())
    revised = Story.model_validate_json((out / "revised" / "story.json").read_text())
    assert "outside, the" not in first.scenes[0].prose and "outside, the" in revised.scenes[0].prose, (
        result.output
    )
    assert revised.scenes[1] == first.scenes[1]
    assert "Rewritten scene(s): 1 (from version 1)" in result.output
    assert "Not applied, it names nothing in the story: 'The weather in general'" in result.output
    assert "quality by code" in result.output and str(out / "revised" / "story.md") in result.output

    run_id = first.meta["run_id"]
    again = tmp_path / "again"
    args = ["revise", run_id, "--version", "1", "--seed", "3", "--config", str(config), "--out", str(again)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "Revised run" in result.output and "version 3" in result.output
    assert Story.model_validate_json((again / "story.json").read_text()).meta["revision"]["base"] == 1

    for args, says in (
        (["revise", "nope"], "no run 'nope'"),
        (["revise", run_id, "--version", "9"], "no version 9"),
    ):
        nowhere = tmp_path / "nowhere"
        result = CliRunner().invoke(main, [*args, "--config", str(config), "--out", str(nowhere)])
        assert result.exit_code == 2 and says in result.output, result.output
        assert not any(nowhere.rglob("story.*"))


async def test_bench_quality_revises_each_story_and_counts_what_the_revision_raised_and_lowered() -> None:
    from storyengine.bench.quality import run_quality_bench
    from storyengine.bench.table import Report

    provider = ScriptedProvider(script(["Scene 1"], BETTER), name="embedded", structured_mode="grammar")
    report = await run_quality_bench(
        Report("quality", "storyengine bench quality --revise", {}),
        settings(),
        premises=[PREMISE, "Two rival bakers are snowed in together on the night of the contest."],
        scenes=2,
        seed=0,
        max_minutes=None,
        progress=lambda _: None,
        providers={"embedded": provider},
        revise=True,
    )
    assert report.summary["revisions"] == {"applied": 2, "kept earlier": 0, "not revisable": 0, "failed": 0}
    measures = {m.name: m for m in report.measures}
    assert measures["measures a revision lowered"].runs == [0, 0]
    assert all(v > 0 for v in measures["measures a revision raised"].runs)


@pytest.mark.parametrize("profile", ["standard", "tiny"])
async def test_suggestions_are_aimed_at_a_scene_or_person_of_the_story(profile: str) -> None:
    from storyengine.pipeline.story import revision_targets

    provider = ScriptedProvider(story_script, name="embedded", structured_mode="grammar")
    tuned = settings().model_copy(deep=True)
    tuned.providers["embedded"] = tuned.providers["embedded"].model_copy(update={"profile": profile})
    async with StoryEngine.from_config(settings=tuned, providers={"embedded": provider}) as engine:
        story = await engine.generate(PREMISE, scenes=2, seed=5)
    assert story.enhancement is not None
    targets = revision_targets(story.scenes, story.bible)
    assert targets[:2] == [f"Scene {i}: {item.scene.title}" for i, item in enumerate(story.scenes, 1)]
    assert all(s.target in targets for s in story.enhancement.suggestions)
    asked = [r for r in provider.requests if r.component == "enhancement" and r.json_schema is not None]
    assert asked and all(
        "Scene 1: " in json.dumps(r.json_schema) for r in asked if "target" in json.dumps(r.json_schema)
    )
    assert plan_revision(story).changes  # so a revision can apply them
