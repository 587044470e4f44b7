"""A step is one object: the step graph, one seed scheme, the typed run header.

The steps are found in pipeline/steps/; `StoryRun` schedules them by what they need; every seed
comes from seeds.py; a checkpoint's header is a `RunHeader`. The last test adds a step to a copy of
the package (one module with its schema, and its two templates) and writes a story with it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from storyengine.errors import InputError
from storyengine.pipeline.checkpoint import CheckpointStore, RunHeader
from storyengine.pipeline.steps import CONTRACT, STEPS
from storyengine.prompts.render import template_names, template_variables
from storyengine.providers.fake_story import story_script
from storyengine.seeds import StepSeeds, attempt_seed, derive
from test_pipeline import PREMISE, engine_with, settings_for

SRC = Path(__file__).resolve().parent.parent / "src"

# -- the steps --


def test_every_step_a_model_makes_has_its_templates_schema_and_contract() -> None:
    made = [s for s in STEPS.values() if not s.by_code]
    assert {s.name for s in made} == {
        "plot",
        "bible",
        "chapter",
        "scene",
        "dialogue",
        "evaluation",
        "enhancement",
    }
    for step in made:
        for stage in ("freeform", "structuring"):
            template = f"{step.name}_{stage}"
            assert template in template_names(), template
            assert template_variables(template) == set(CONTRACT[template]), template
        assert set(step.contract) == {f"{step.name}_freeform", f"{step.name}_structuring"}
        assert "properties" in step.model.model_json_schema()


async def test_each_step_starts_once_what_it_needs_is_finished() -> None:
    """Dialogue i is asked after scenes 1..i are structured, the evaluation after every dialogue,
    the enhancement after the evaluation: the graph, not the order the code was written in."""
    engine, provider = engine_with(story_script, settings_for(in_parts=False))
    async with engine:
        story = await engine.generate(PREMISE, scenes=3, seed=2)
    asked = [(r.component, r.stage) for r in provider.requests]

    def first(component: str, stage: str) -> int:
        return asked.index((component, stage))

    def last(component: str, stage: str) -> int:
        return len(asked) - 1 - asked[::-1].index((component, stage))

    assert last("plot", "structuring") < first("bible", "freeform") < first("scene", "freeform")
    scene_done = [i for i, a in enumerate(asked) if a == ("scene", "structuring")]
    dialogue_asked = [i for i, a in enumerate(asked) if a == ("dialogue", "freeform")]
    assert len(scene_done) == len(dialogue_asked) == len(story.scenes) == 3
    for n, asked_at in enumerate(dialogue_asked):  # the n-th dialogue after n+1 scenes
        assert sum(done < asked_at for done in scene_done) >= n + 1
    assert last("dialogue", "structuring") < first("evaluation", "freeform")
    assert last("evaluation", "structuring") < first("enhancement", "freeform")
    steps = story.meta["steps"]
    assert {"plot", "bible", "evaluation", "enhancement", "scene.2", "dialogue.2.draft"} <= set(steps)


# -- one seed scheme --


def test_seeds_differ_by_step_round_stage_and_draw_and_follow_the_run_seed() -> None:
    seeds = StepSeeds(7, "scene.1")
    drawn = {
        seeds.draft(0, None),
        seeds.draft(1, None),
        seeds.structuring(0),
        StepSeeds(7, "scene.2").draft(0, None),
        StepSeeds(7, "scene.1", round=1).draft(0, None),
        StepSeeds(8, "scene.1").draft(0, None),
    }
    assert len(drawn) == 6 and all(isinstance(s, int) and 0 <= s < 2**31 for s in drawn)
    assert seeds.draft(0, None) == StepSeeds(7, "scene.1").draft(0, 12345)  # the run's seed wins
    assert StepSeeds(None, "plot").draft(0, None) is None  # unseeded: a fresh draw each time
    assert StepSeeds(None, "plot").structuring(0) == StepSeeds(None, "plot").structuring(0) is not None
    assert attempt_seed(5, 1) != attempt_seed(5, 2) and attempt_seed(None, 1) == attempt_seed(0, 1)


def test_a_seed_is_the_same_in_every_process() -> None:
    """sha256, not Python's salted hash: another process with another hash seed derives the same."""
    code = "from storyengine.seeds import derive; print(derive(7, 'scene.1', 0, 'draft', 0))"
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout) == derive(7, "scene.1", 0, "draft", 0)


async def test_the_same_seed_gives_the_same_story_run_after_run() -> None:
    stories = []
    for _ in range(2):
        engine, _ = engine_with(story_script, settings_for(in_parts=True))
        async with engine:
            stories.append(await engine.generate(PREMISE, scenes=2, seed=11))
    first, second = (s.model_dump(mode="json", exclude={"meta"}) for s in stories)
    assert first == second


# -- the typed run header --


def test_a_header_written_before_versions_is_read_and_written_as_version_1(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    old = {
        "run_id": "r1",
        "premise": "A kite.",
        "scenes": 2,
        "seed": 3,
        "status": "failed",
        "round": 1,
        "plain_bible": "the model gave no valid bible",
        "start_provider": {"scene.0": 1},
    }
    (tmp_path / "r1.json").write_text(json.dumps({"header": old, "steps": {"plot": {}}, "meta": {}}))
    state = store.load("r1")
    assert isinstance(state.header, RunHeader) and state.header.version == 1
    assert state.header.plain == {"bible": "the model gave no valid bible"}
    assert (state.header.round, state.header.start_provider, state.header.status) == (
        1,
        {"scene.0": 1},
        "failed",
    )
    state.set_status("running")
    written = json.loads((tmp_path / "r1.json").read_text())["header"]
    assert (
        written["version"] == 1 and "plain_bible" not in written and store.load("r1").header == state.header
    )


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"surprise": 1}, "surprise"),
        ({"status": "exploded"}, "status"),
        ({"round": "many"}, "round"),
        ({"story_run": "../x"}, "not a run id"),
    ],
)
def test_a_header_that_is_not_one_storyengine_wrote_is_refused(
    tmp_path: Path, change: dict[str, object], why: str
) -> None:
    header = {**RunHeader(run_id="r1", premise="A kite.").model_dump(mode="json"), **change}
    (tmp_path / "r1.json").write_text(json.dumps({"header": header, "steps": {}}))
    with pytest.raises(InputError, match=f"not one storyengine wrote.*{why}"):
        CheckpointStore(tmp_path).load("r1")


# -- a new step: one module (with its schema) and its two templates --

LOGLINE_STEP = '''
"""A logline: the story in one sentence, for a catalogue."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field

from ...structuring import decoding_schema
from ..story import outline
from .base import Inputs, RunView, Step


class Logline(BaseModel):
    logline: str = Field(min_length=10, max_length=300)


class LoglineStep(Step[Logline]):
    name = "logline"
    model = Logline
    optional = True
    contract: ClassVar[dict[str, dict[str, type]]] = {
        "logline_freeform": {"premise": str, "plot": str},
        "logline_structuring": {"draft": str, "schema": str},
    }

    def needs(self, index, run):
        return ["plot"]

    def gather(self, run, index):
        return Inputs(premise=run.premise, plot=run.value("plot"))

    async def draft(self, stages, x, meta):
        return await stages.freeform("logline", {"premise": x.premise, "plot": outline(x.plot)}, meta)

    async def structure(self, stages, x, draft, meta):
        schema = decoding_schema(Logline)
        return await stages.structure("logline", {"draft": draft}, Logline, schema, meta)
'''

LOGLINE_FREEFORM = """<poml>
  <system-msg><p>You write loglines.</p></system-msg>
  <human-msg>
    <p whiteSpace="pre">Premise: {{ premise }}</p>
    <p whiteSpace="pre">Plot:
{{ plot }}</p>
    <p>Write the story's logline: one sentence.</p>
  </human-msg>
</poml>
"""

LOGLINE_STRUCTURING = """<poml>
  <system-msg>
    <p>You are a formatter that outputs only JSON. Start with { and end with }.</p>
    <p whiteSpace="pre">Write one JSON object that matches this JSON schema:
{{ schema }}</p>
  </system-msg>
  <human-msg>
    <p whiteSpace="pre">Logline:
{{ draft }}</p>
    <p>Turn this logline into the JSON object. Output only the JSON object.</p>
  </human-msg>
  <runtime stop='["\\n```", "\\nNote"]'/>
</poml>
"""

WRITE_A_STORY = textwrap.dedent(
    """
    import asyncio, json, sys
    sys.path.insert(0, sys.argv[1])
    from test_pipeline import PREMISE, engine_with, settings_for
    from storyengine.providers.fake_story import story_script

    async def main():
        engine, provider = engine_with(story_script, settings_for(in_parts=False))
        async with engine:
            story = await engine.generate(PREMISE, scenes=1, seed=3)
            state = engine.checkpoints.load(story.meta["run_id"])
        asked = sorted({r.component for r in provider.requests})
        meta = {key: state.meta.get(key) for key in ("logline.draft", "logline")}
        made = {"logline": state.get("logline"), "meta": meta, "asked": asked}
        print(json.dumps(made))

    asyncio.run(main())
    """
)


def test_a_new_step_is_one_module_its_schema_and_its_templates(tmp_path: Path) -> None:
    copy = tmp_path / "src"
    shutil.copytree(SRC / "storyengine", copy / "storyengine", ignore=shutil.ignore_patterns("__pycache__"))
    before = {p.relative_to(copy) for p in copy.rglob("*") if p.is_file()}
    (copy / "storyengine/pipeline/steps/logline.py").write_text(LOGLINE_STEP)
    (copy / "storyengine/prompts/logline_freeform.poml").write_text(LOGLINE_FREEFORM)
    (copy / "storyengine/prompts/logline_structuring.poml").write_text(LOGLINE_STRUCTURING)
    added = {p.relative_to(copy) for p in copy.rglob("*") if p.is_file()} - before
    assert len(added) == 3  # nothing else was touched
    env = {**os.environ, "PYTHONPATH": f"{copy}{os.pathsep}{Path(__file__).parent}"}
    env["XDG_CACHE_HOME"] = env["XDG_DATA_HOME"] = env["XDG_STATE_HOME"] = str(tmp_path / "xdg")
    out = subprocess.run(
        [sys.executable, "-c", WRITE_A_STORY, str(Path(__file__).parent)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    # made by the model (scheduled after the plot, routed like the plot, seeded, checkpointed)
    assert "logline" in found["asked"] and len(found["logline"]["logline"]) >= 10
    draft, structured = found["meta"]["logline.draft"], found["meta"]["logline"]
    assert draft["seed"] is not None and structured["provider"] == "embedded"
