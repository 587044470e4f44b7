"""One revision on the real embedded model (SmolLM2-135M), through the run engine."""

from __future__ import annotations

import pytest

from storyengine.pipeline.engine import StoryEngine
from storyengine.quality import story_measures, worse_measures
from storyengine.schemas import Enhancement

pytestmark = pytest.mark.model

CHANGE = "Let a storm break over the lighthouse while the keeper reads the message again."


async def test_a_revision_on_the_embedded_model_rewrites_the_targeted_scene_and_loses_nothing() -> None:
    async with StoryEngine.from_config() as engine:
        story = await engine.generate(
            "A lighthouse keeper finds a message written by her future self.", scenes=1, seed=8
        )
        run_id = story.meta["run_id"]
        # SmolLM2's own suggestions rarely name a scene of the story; give it one that does, as a
        # user's edit of the suggestions would, so that the rewrite itself is what is tested.
        suggestions = Enhancement.model_validate(
            {
                "suggestions": [
                    {"target": "Scene 1", "problem": "The scene has no weather at all.", "change": CHANGE},
                    {"target": "The moon landing", "problem": "It is missing.", "change": "Add it."},
                ],
                "summary": "Give the scene a storm.",
            }
        )
        engine.runs.add_version(
            run_id, story.model_copy(update={"enhancement": suggestions}), "edited", parent=1
        )
        version = await engine.revise(run_id, seed=3)
    revised = version.the_story()
    record = revised.meta["revision"]
    assert version.number == 3 and record["base"] == 2
    assert [u["target"] for u in record["untargeted"]] == ["The moon landing"]
    assert record["applied"] == [{"target": "Scene 1", "change": CHANGE, "scenes": [1]}]
    draft = revised.meta["steps"]["scene.0.draft"]
    if record["revised"] == [1]:  # the rewrite was kept: it is a new scene, written by the model
        assert draft["stage1_text"] and revised.scenes[0].prose != story.scenes[0].prose
        assert draft["provider"] == "embedded" and draft["model"].startswith("SmolLM2")
    else:  # kept as it was, and the version says which measure the rewrite would have lowered
        assert record["kept_earlier"]["1"] and revised.scenes[0] == story.scenes[0]
    # never worse by the code's measures; version 1 is untouched
    assert not worse_measures(story_measures(story), story_measures(revised))
    assert record["before"] == story_measures(story)
    assert engine.runs.version(run_id, 1).the_story().scenes == story.scenes
