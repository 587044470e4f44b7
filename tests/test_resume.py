"""A resume never repeats a failure identically, and says what it does."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from ebooklib import epub

from storyengine.config import COMPONENTS, parse_settings
from storyengine.errors import InputError, RunFailed
from storyengine.pipeline.engine import StoryEngine
from storyengine.providers.fake_story import story_script
from storyengine.providers.scripted import ScriptedProvider
from storyengine.seeds import StepSeeds
from storyengine.types import CompletionRequest

PREMISE = "A clockmaker builds a clock that runs backwards."


def engine_for(script: Any, tmp_path: Path, profile: str) -> StoryEngine:
    settings = parse_settings(
        f"""
providers:
  embedded: {{type: embedded, profile: {profile}}}
retry: {{attempts: 2, backoff_initial: 0, backoff_max: 0}}
logging: {{runlog: {tmp_path / "runs.sqlite3"}, dir: {tmp_path / "logs"}}}
cache: {{enabled: false}}
"""
    )
    provider = ScriptedProvider(script, name="embedded", structured_mode="grammar")
    return StoryEngine.from_config(settings=settings, providers={"embedded": provider})


def key(request: CompletionRequest) -> str:
    return json.dumps([[m.role, m.content] for m in request.messages]) + json.dumps(
        request.params(), default=str
    )


@pytest.mark.parametrize("profile", ["standard", "tiny"])
async def test_a_resume_asks_the_failed_step_differently_and_finishes(tmp_path: Path, profile: str) -> None:
    failed: set[str] = set()
    first_run = {"on": True}
    resumed: list[CompletionRequest] = []

    def script(request: CompletionRequest) -> Any:
        if not first_run["on"]:
            resumed.append(request)
        if request.component == "dialogue" and request.stage == "structuring":
            if first_run["on"] or key(request) in failed:  # a repeated call fails as it did before
                failed.add(key(request))
                return '{ "speaker": "Aclockmaker }'
        return story_script(request)

    async with engine_for(script, tmp_path, profile) as engine:
        with pytest.raises(RunFailed) as caught:
            await engine.generate(PREMISE, scenes=1, seed=1)
        message = str(caught.value)
        assert "stopped at step dialogue.0" in message and "--resume" in message
        first_run["on"] = False
        story = await engine.resume(caught.value.run_id)
    assert failed and not {key(r) for r in resumed} & failed
    # Finished steps were not made again: only the dialogue (drawn again) and what follows it.
    assert {r.component for r in resumed} <= {"dialogue", "evaluation", "enhancement"}
    steps = story.meta["steps"]
    assert steps["dialogue.0.draft"]["round"] == 1 and steps["plot.draft"]["round"] == 0
    assert steps["dialogue.0.draft"]["seed"] == StepSeeds(1, "dialogue.0", 1).draft(0, None)


async def test_a_finished_run_is_not_resumed_and_nothing_is_overwritten(tmp_path: Path) -> None:
    async with engine_for(story_script, tmp_path, "standard") as engine:
        story = await engine.generate(PREMISE, scenes=1, seed=3)
        run_id = story.meta["run_id"]
        checkpoint = engine.checkpoints.path(run_id)
        before = checkpoint.read_bytes()
        with pytest.raises(InputError, match="finished"):
            await engine.resume(run_id)
        assert checkpoint.read_bytes() == before
        with pytest.raises(InputError, match="no run"):
            await engine.resume("20990101-000000-abcdef")


@pytest.mark.parametrize("way_on", ["resume", "story_of_run"])
async def test_a_run_stopped_before_its_story_was_kept_is_kept_from_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, way_on: str
) -> None:
    """Ctrl-C between a run's last step and its version in the run store (a batch met it): every step
    is in the checkpoint, so the story is put together again and kept, with no model call."""
    engine = engine_for(story_script, tmp_path, "standard")
    keep = engine._first_version

    def stopped(*args: Any) -> Any:
        raise KeyboardInterrupt

    async with engine:
        monkeypatch.setattr(engine, "_first_version", stopped)
        with pytest.raises(KeyboardInterrupt):
            await engine.generate(PREMISE, scenes=1, seed=3, run_id="r-stopped")
        assert engine.checkpoints.load("r-stopped").header.status == "done"
        assert engine.runs.run("r-stopped").status == "failed" and not engine.runs.versions("r-stopped")
        monkeypatch.setattr(engine, "_first_version", keep)
        calls = engine.router.providers["embedded"].calls  # type: ignore[attr-defined]
        if way_on == "resume":
            story = await engine.resume("r-stopped")
        else:
            story = await engine.story_of_run("r-stopped", PREMISE, scenes=1, seed=3)
        assert engine.router.providers["embedded"].calls == calls  # type: ignore[attr-defined]
        assert engine.runs.run("r-stopped").status == "done"
        assert engine.runs.version("r-stopped").the_story() == story and len(story.scenes) == 1
        with pytest.raises(InputError, match="finished"):  # kept now: nothing more to continue
            await engine.resume("r-stopped")


async def test_a_resume_with_another_seed_changes_only_the_steps_not_made_yet(tmp_path: Path) -> None:
    broken = {"on": True}

    def script(request: CompletionRequest) -> Any:
        if request.component == "dialogue" and broken["on"]:
            return "not json"
        return story_script(request)

    async with engine_for(script, tmp_path, "standard") as engine:
        with pytest.raises(RunFailed) as caught:
            await engine.generate(PREMISE, scenes=1, seed=1)
        broken["on"] = False
        story = await engine.resume(caught.value.run_id, seed=9)
    steps = story.meta["steps"]
    assert story.meta["seed"] == 9
    assert steps["plot.draft"]["seed"] == StepSeeds(1, "plot").draft(0, None)  # made before: kept
    assert steps["dialogue.0.draft"]["seed"] == StepSeeds(9, "dialogue.0", 1).draft(0, None)
    assert steps["dialogue.0.draft"]["round"] == 1 and steps["scene.0.draft"]["round"] == 0


async def test_an_exception_outside_the_error_tree_still_marks_the_run_failed(tmp_path: Path) -> None:
    from storyengine.runlog import RunLog

    def script(request: CompletionRequest) -> Any:
        if request.component == "scene":
            return RuntimeError("a bug deep inside a provider")
        return story_script(request)

    async with engine_for(script, tmp_path, "standard") as engine:
        with pytest.raises(RuntimeError):
            await engine.generate(PREMISE, scenes=1, seed=1, run_id="run-with-a-bug")
        state = engine.checkpoints.load("run-with-a-bug")
    assert state.header.status == "failed" and "RuntimeError" in (state.header.error or "")
    (run,) = [r for r in RunLog(tmp_path / "runs.sqlite3").runs() if r.id == "run-with-a-bug"]
    assert run.status == "failed" and "a bug deep inside" in (run.error or "")


async def test_a_story_whose_evaluation_fails_is_kept_with_the_gap_named(tmp_path: Path) -> None:
    """The evaluation fails every attempt: the story is still made, the gap says why, and a resume
    tries the missing parts again (a new round) without remaking the story."""
    broken = {"on": True}
    asked: list[CompletionRequest] = []

    def script(request: CompletionRequest) -> Any:
        asked.append(request)
        if request.component == "evaluation" and request.stage == "structuring" and broken["on"]:
            return '{ "score":10, "rationale":"Aclockmaker }'
        return story_script(request)

    async with engine_for(script, tmp_path, "standard") as engine:
        story = await engine.generate(PREMISE, scenes=1, seed=1)
        assert story.evaluation is None and story.enhancement is None
        assert "no valid evaluation" in story.gaps["evaluation"] and "enhancement" in story.gaps
        assert len(story.scenes) == 1 and story.scenes[0].dialogue.lines
        run_id = story.meta["run_id"]
        assert engine.checkpoints.load(run_id).header.status == "gaps"
        assert engine.runs.run(run_id).versions  # kept as a version
        broken["on"] = False
        asked.clear()
        again = await engine.resume(run_id)
    assert again.evaluation is not None and again.enhancement is not None and not again.gaps
    assert {r.component for r in asked} <= {"evaluation", "enhancement"}
    assert again.scenes == story.scenes


def test_the_cli_writes_a_story_with_a_gap_and_exits_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from storyengine.cli import main
    from storyengine.commands import generate as generate_command
    from storyengine.schemas import Story

    def script(request: CompletionRequest) -> Any:
        if request.component == "evaluation" and request.stage == "structuring":
            return "not json at all"
        return story_script(request)

    original = StoryEngine.from_config

    def scripted(*args: Any, **kwargs: Any) -> StoryEngine:
        provider = ScriptedProvider(script, name="embedded", structured_mode="grammar")
        return original(*args, **{**kwargs, "providers": {"embedded": provider}})

    monkeypatch.setattr(generate_command.StoryEngine, "from_config", scripted)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"providers: {{embedded: {{type: embedded, profile: standard}}}}\ncache: {{enabled: false}}\n"
        f"retry: {{attempts: 1}}\n"
        f"logging: {{runlog: {tmp_path / 'runs.sqlite3'}, dir: {tmp_path / 'logs'}}}\n"
    )
    out = tmp_path / "story"
    result = CliRunner().invoke(main, ["generate", PREMISE, "--scenes", "1", "--seed", "2", "--config",
                                       str(config), "--out", str(out), "--quiet"])  # fmt: skip
    assert result.exit_code == 3, result.output
    assert "written without its evaluation" in result.output and "--resume" in result.output
    story = Story.model_validate_json((out / "story.json").read_text())
    assert story.evaluation is None and story.gaps and (out / "story.md").exists()
    assert str(out / "story.epub") in result.output.split()  # the book says what is missing too
    assert "Missing parts" in [
        link.title for link in epub.read_epub(str(out / "story.epub"), {"ignore_ncx": True}).toc
    ]


async def test_a_bible_the_model_cannot_write_is_made_plain_and_the_story_goes_on(tmp_path: Path) -> None:
    def script(request: CompletionRequest) -> Any:
        if request.component == "bible" and request.stage == "structuring":
            return "not json"
        return story_script(request)

    async with engine_for(script, tmp_path, "tiny") as engine:
        story = await engine.generate("A keeper finds a bottle written by her future self.", scenes=1, seed=4)
    assert story.bible is not None and story.bible.names == list(story.plot.characters)
    assert story.bible.characters[0].pronouns == "she/her"  # the premise's, for the lead
    assert "plain one" in story.gaps["bible"] and story.evaluation is not None


async def test_a_bible_character_the_model_only_echoes_is_made_by_code_and_the_bible_is_kept(
    tmp_path: Path,
) -> None:
    """SmolLM2 measured (README command (a)): a character's role answered ",<name>," on every
    attempt threw the whole bible away. Now that character alone is made by code (its description
    the draft's sentence about them), the model's other characters and setting are kept, no gap."""
    asked: list[str] = []  # the characters the bible's parts asked about, in order

    def echoing(request: CompletionRequest) -> Any:
        schema = request.json_schema or {}
        if request.component == "bible" and "role" in schema.get("properties", {}):
            name = re.search(r"write who (.+?) is: their role", " ".join(m.content for m in request.messages))
            assert name is not None
            if name[1] not in asked:
                asked.append(name[1])
            if asked[1:2] == [name[1]]:
                return json.dumps({"role": f",<{name[1]}>,", "description": ",<name>,", "pronouns": "he/him"})
        return story_script(request)

    async with engine_for(echoing, tmp_path, "tiny") as engine:
        story = await engine.generate("A keeper finds a bottle written by her future self.", scenes=1, seed=4)
    assert len(asked) >= 2, "the scenario never reached the bible's second character"
    assert story.bible is not None and "bible" not in story.gaps
    made = story.bible.characters[1]
    assert made.name == asked[1] and "<" not in made.role + made.description
    assert made.role == "a character of the story" and made.pronouns == "they/them"
    model_made = story.bible.characters[0]
    assert model_made.description != f"{asked[0]}, as the plot tells it."  # the model's, kept
    assert any("made from the draft" in note for note in story.meta["steps"]["bible"]["parts_left_out"])


async def test_a_scene_summary_still_junk_after_its_re_ask_is_made_from_the_draft(tmp_path: Path) -> None:
    """README command (a) measured: SmolLM2's third summary was "./lighthouse-keeper.json:1,
    summary_type:'object', …" on both tries and was kept with a warning. A part that code can make
    from the notes gets code's clean value instead, recorded as a repair."""

    def script(request: CompletionRequest) -> Any:
        schema = request.json_schema or {}
        if (
            request.component == "scene"
            and "summary" in schema.get("properties", {})
            and "title" not in schema.get("properties", {})
        ):
            return json.dumps(
                {"summary": "./lighthouse-keeper.json:1, summary_type:'object', required: true."}
            )
        return story_script(request)

    async with engine_for(script, tmp_path, "tiny") as engine:
        story = await engine.generate(PREMISE, scenes=1, seed=5)
    summary = story.scenes[0].scene.summary
    assert (
        ".json" not in summary and summary.split()[0] in story.meta["steps"]["scene.0.draft"]["stage1_text"]
    )
    findings = story.meta["steps"]["scene.0"]["findings"]
    assert any(f["action"] == "repaired" and "made from the draft instead" in f["message"] for f in findings)
    assert not any(f["action"] == "kept" and f["field"].endswith("summary") for f in findings)


async def test_a_scene_summary_the_model_only_copies_is_made_from_the_draft(tmp_path: Path) -> None:
    """SmolLM2 measured: the summary part answered with the title six times; the scene is kept with
    a summary made from its own draft, and the metadata says so."""

    def script(request: CompletionRequest) -> Any:
        if request.component == "scene" and request.stage == "structuring" and request.json_schema:
            if (
                "summary" in request.json_schema["properties"]
                and "title" not in request.json_schema["properties"]
            ):
                return json.dumps({"summary": "Title of the scene"})
            if "title" in request.json_schema["properties"]:
                return json.dumps({"title": "Title of the scene", "setting": "A quiet harbor at dawn."})
        return story_script(request)

    async with engine_for(script, tmp_path, "tiny") as engine:
        story = await engine.generate(PREMISE, scenes=1, seed=5)
    scene = story.scenes[0].scene
    assert scene.summary != scene.title and scene.summary.split()[0] in story.scenes[0].prose
    left = story.meta["steps"]["scene.0"]["parts_left_out"]
    assert any("made from the draft" in item for item in left)


# -- a resume starts the failed step from the next provider of its chain --


def chain_engine(
    scripts: dict[str, Any], tmp_path: Path, chain: str = "[a, b]"
) -> tuple[StoryEngine, list[tuple[str, CompletionRequest]]]:
    """Every component routed to `chain` (providers of one profile: one route); `asked` is every
    call in order, as (provider, request)."""
    routes = "\n".join(f"    {c}: {chain}" for c in COMPONENTS)
    settings = parse_settings(
        f"""
narrative:
  providers:
{routes}
providers:
  a: {{type: embedded, profile: standard}}
  b: {{type: embedded, profile: standard}}
retry: {{attempts: 1, backoff_initial: 0, backoff_max: 0}}
logging: {{runlog: {tmp_path / "runs.sqlite3"}, dir: {tmp_path / "logs"}}}
cache: {{enabled: false}}
"""
    )
    asked: list[tuple[str, CompletionRequest]] = []

    def provider(name: str) -> ScriptedProvider:
        def script(request: CompletionRequest) -> Any:
            asked.append((name, request))
            return scripts[name](request)

        return ScriptedProvider(script, name=name, structured_mode="grammar")

    engine = StoryEngine.from_config(settings=settings, providers={n: provider(n) for n in "ab"})
    return engine, asked


def bad_dialogue(request: CompletionRequest) -> Any:
    if request.component == "dialogue" and request.stage == "structuring":
        return '{ "speaker": "Aclockmaker }'
    return story_script(request)


def first_to(asked: list[tuple[str, CompletionRequest]], component: str) -> str:
    return next(name for name, request in asked if request.component == component)


async def test_a_resume_starts_the_failed_step_from_the_next_provider_and_wraps(tmp_path: Path) -> None:
    """Chain [a, b] (one route): dialogue.0 fails on both. The resume asks it (draft and structuring)
    of b first, a after it; the steps that did not fail still start from a. A resume that fails
    there again starts from a (wrapping)."""
    b_broken = {"on": True}

    def b_script(request: CompletionRequest) -> Any:
        return bad_dialogue(request) if b_broken["on"] else story_script(request)

    engine, asked = chain_engine({"a": bad_dialogue, "b": b_script}, tmp_path)
    async with engine:
        with pytest.raises(RunFailed) as caught:
            await engine.generate(PREMISE, scenes=1, seed=1)
        run_id = caught.value.run_id
        assert "stopped at step dialogue.0" in str(caught.value)
        assert "starting from provider b" in str(caught.value)
        assert first_to(asked, "dialogue") == "a"

        # Round 1: b is still broken, so it fails there again, having asked b first.
        asked.clear()
        with pytest.raises(RunFailed) as again:
            await engine.resume(run_id)
        assert {r.component for _, r in asked} == {"dialogue"}  # finished steps are not redone
        assert asked[0][0] == "b" and asked[0][1].stage == "freeform"  # the draft, from b
        structuring = [name for name, r in asked if r.stage == "structuring"]
        assert structuring[0] == "b" and "a" in structuring  # b first, a still its fallback
        assert engine.checkpoints.load(run_id).header.start_provider == {"dialogue.0": 1}
        assert "starting from provider a" in str(again.value)

        # Round 2: back to a (wrapping); b, now fixed, answers as a's fallback.
        b_broken["on"] = False
        asked.clear()
        story = await engine.resume(run_id)
        assert first_to(asked, "dialogue") == "a"
        assert engine.checkpoints.load(run_id).header.start_provider == {"dialogue.0": 0}
    assert {r.component for _, r in asked} <= {"dialogue", "evaluation", "enhancement"}
    steps = story.meta["steps"]
    assert steps["dialogue.0"]["provider"] == "b" and steps["dialogue.0"]["round"] == 2
    assert "first_provider" not in steps["dialogue.0"]  # the chain's own order again
    assert first_to(asked, "evaluation") == "a" and "first_provider" not in steps["evaluation"]


async def test_the_resumed_step_records_the_provider_it_asked_first(tmp_path: Path) -> None:
    """a never writes a valid dialogue; b only after the first run. The resumed dialogue starts
    from b, says so in its metadata, and the steps made after it start from a."""
    b_broken = {"on": True}

    def b_script(request: CompletionRequest) -> Any:
        return bad_dialogue(request) if b_broken["on"] else story_script(request)

    engine, asked = chain_engine({"a": bad_dialogue, "b": b_script}, tmp_path)
    async with engine:
        with pytest.raises(RunFailed) as caught:
            await engine.generate(PREMISE, scenes=1, seed=1)
        b_broken["on"] = False
        asked.clear()
        story = await engine.resume(caught.value.run_id)
    assert {r.component for _, r in asked} <= {"dialogue", "evaluation", "enhancement"}
    assert not [r for name, r in asked if name == "a" and r.component == "dialogue"]  # b answered first
    steps = story.meta["steps"]
    for name in ("dialogue.0.draft", "dialogue.0"):
        assert steps[name]["start"] == 1 and steps[name]["first_provider"] == "b"
    assert "first_provider" not in steps["scene.0"] and "first_provider" not in steps["enhancement"]
    assert first_to(asked, "evaluation") == "a" and first_to(asked, "enhancement") == "a"


async def test_a_single_provider_chain_is_not_rotated(tmp_path: Path) -> None:
    broken = {"on": True}

    def script(request: CompletionRequest) -> Any:
        return bad_dialogue(request) if broken["on"] else story_script(request)

    engine, asked = chain_engine({"a": script, "b": story_script}, tmp_path, chain="a")
    async with engine:
        with pytest.raises(RunFailed) as caught:
            await engine.generate(PREMISE, scenes=1, seed=1)
        assert "starting from" not in str(caught.value)
        broken["on"] = False
        story = await engine.resume(caught.value.run_id)
        header = engine.checkpoints.load(caught.value.run_id).header
    assert not header.start_provider and {name for name, _ in asked} == {"a"}
    step = story.meta["steps"]["dialogue.0"]
    assert step["round"] == 1 and "start" not in step and "first_provider" not in step


def test_a_run_made_with_a_provider_resumes_on_it_and_a_gone_provider_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from storyengine.cli import main

    broken = {"on": True}
    asked: dict[str, list[str]] = {"embedded": [], "other": []}

    def script_for(name: str) -> Any:
        def script(request: CompletionRequest) -> Any:
            asked[name].append(request.component)
            if broken["on"] and request.component == "dialogue" and request.stage == "structuring":
                return "not json"
            return story_script(request)

        return script

    original = StoryEngine.from_config

    def scripted(*args: Any, **kwargs: Any) -> StoryEngine:
        providers = {
            name: ScriptedProvider(script_for(name), name=name, structured_mode="grammar")
            for name in ("embedded", "other")
        }
        return original(*args, **{**kwargs, "providers": providers})

    monkeypatch.setattr(StoryEngine, "from_config", scripted)
    logging = f"logging: {{runlog: {tmp_path / 'runs.sqlite3'}, dir: {tmp_path / 'logs'}}}\n"
    both = tmp_path / "both.yaml"
    both.write_text(
        "providers:\n  embedded: {type: embedded, profile: standard}\n"
        "  other: {type: embedded, profile: standard}\n"
        f"cache: {{enabled: false}}\nretry: {{attempts: 1}}\n{logging}"
    )
    out = tmp_path / "story"
    args = ["generate", PREMISE, "--scenes", "1", "--seed", "2", "--config", str(both), "--provider", "other"]
    result = CliRunner().invoke(main, [*args, "--out", str(out), "--quiet"])
    assert result.exit_code == 1, result.output
    run_id = result.output.split("--resume ")[1].split()[0]
    assert asked["embedded"] == [] and "dialogue" in asked["other"]

    # the config no longer has "other": a clear error, nothing asked, nothing written
    gone = tmp_path / "gone.yaml"
    gone.write_text(
        f"providers:\n  embedded: {{type: embedded, profile: standard}}\ncache: {{enabled: false}}\n{logging}"
    )
    checkpoint = (tmp_path / "checkpoints" / f"{run_id}.json").read_text()
    result = CliRunner().invoke(main, ["generate", "--resume", run_id, "--config", str(gone)])
    assert result.exit_code == 2 and "'other'" in result.output and "no longer configures" in result.output
    assert (tmp_path / "checkpoints" / f"{run_id}.json").read_text() == checkpoint
    assert not (out / "story.json").exists()

    # resumed without --provider: it continues on "other", the provider it was made with
    broken["on"] = False
    asked["other"].clear()
    result = CliRunner().invoke(
        main, ["generate", "--resume", run_id, "--config", str(both), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert asked["embedded"] == [] and "dialogue" in asked["other"]
