"""The bible's pronoun rule on scripted drafts that break it: redrawn, and counted by the report."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from storyengine.config import parse_settings
from storyengine.pipeline.engine import StoryEngine
from storyengine.providers.fake_story import story_script
from storyengine.providers.scripted import ScriptedProvider
from storyengine.quality import quality_report
from storyengine.schemas import Dialogue, DialogueLine
from storyengine.types import CompletionRequest

PREMISE = "A lighthouse keeper finds a message in a bottle written by her future self."


def settings_for(profile: str) -> Any:
    """One scene draft a scene (these tests count redraws; tests/test_text_rules.py the choice)."""
    return parse_settings(
        f"providers:\n  embedded: {{type: embedded, context_window: 8192, profile: {profile}}}\n"
        "retry: {attempts: 2, backoff_initial: 0, backoff_max: 0}\ncache: {enabled: false}\n"
        "narrative: {scene_drafts: 1}\n",
        source="test.yaml",
    )


def slipping_script() -> tuple[Any, Counter[str]]:
    """The first scene and dialogue draft of each scene call the she/her lead "he"."""
    drafts: Counter[str] = Counter()

    def answer(request: CompletionRequest) -> str:
        prompt = "\n".join(m.content for m in request.messages)  # a dialogue goes on from its scene's
        lead = re.search(r"^(\w+) \(she/her\)", prompt, re.M)
        if request.stage == "freeform" and request.component in ("scene", "dialogue") and lead:
            drafts[request.component] += 1
            if drafts[request.component] == 1:
                name = lead.group(1)
                slip = f"{name} climbs the lighthouse stairs and he reads the message in the bottle again."
                text = story_script(request)
                return f"{slip}\n\n{text}" if request.component == "scene" else f"{name}: {slip}\n{text}"
        return story_script(request)

    return answer, drafts


async def test_a_draft_that_gives_the_lead_the_other_pronouns_is_drawn_again() -> None:
    answer, drafts = slipping_script()
    provider = ScriptedProvider(answer, name="embedded", structured_mode="grammar")
    async with StoryEngine.from_config(
        settings=settings_for("standard"), providers={"embedded": provider}
    ) as engine:
        story = await engine.generate(PREMISE, scenes=1, seed=4)
    assert story.bible is not None and story.bible.characters[0].pronouns == "she/her"
    assert drafts == {"scene": 2, "dialogue": 2}  # each drawn again once
    steps = story.meta["steps"]
    assert steps["scene.0.draft"]["redraws"] == 1 and steps["scene.0.draft"]["draft_problems"] == []
    assert steps["dialogue.0.draft"]["redraws"] == 1
    assert " he reads the message" not in story.scenes[0].prose
    report = quality_report(story)
    assert report.pronoun_slips == [] and report.speakers_outside_bible == []


async def test_the_report_counts_pronoun_slips_and_speakers_outside_the_bible() -> None:
    provider = ScriptedProvider(story_script, name="embedded", structured_mode="grammar")
    async with StoryEngine.from_config(
        settings=settings_for("standard"), providers={"embedded": provider}
    ) as engine:
        story = await engine.generate(PREMISE, scenes=1, seed=4)
    assert story.bible is not None
    lead = story.bible.characters[0].name
    scene = story.scenes[0]
    bad_prose = f"{lead} lights the lamp and he sighs."
    outsider = "Zebediah"
    lines = [*scene.dialogue.lines, DialogueLine(speaker=outsider, text="I was never in the bible at all.")]
    broken = story.model_copy(
        update={
            "scenes": [
                scene.model_copy(
                    update={
                        "prose": bad_prose,
                        "dialogue": Dialogue.model_construct(lines=lines),
                        "scene": scene.scene.model_copy(
                            update={"characters": [*scene.scene.characters, outsider]}
                        ),
                    }
                )
            ]
        }
    )
    report = quality_report(broken)
    assert report.speakers_outside_bible == [outsider]
    assert len(report.pronoun_slips) == 1 and lead in report.pronoun_slips[0]
    assert "bible" in report.failed
    assert report.measures()["pronoun slips"] == 1 and report.measures()["speakers outside the bible"] == 1


FACT = "The lighthouse lamp has been dark for ten years."


def fact_script(contradictions: list[list[int]]) -> tuple[Any, list[CompletionRequest]]:
    """A bible with one fact; the fact checks answer `contradictions` in turn (then none)."""
    checks: list[CompletionRequest] = []

    def answer(request: CompletionRequest) -> str:
        if request.component == "bible" and request.stage == "structuring":
            data = json.loads(story_script(request))
            if "characters" in data:
                data["facts"] = [FACT]
            return json.dumps(data)
        if request.schema_name == "FactCheck":
            checks.append(request)
            found = contradictions[len(checks) - 1] if len(checks) <= len(contradictions) else []
            return json.dumps(
                {"contradicted": found, "why": "The lamp is lit in the scene." if found else ""}
            )
        return story_script(request)

    return answer, checks


async def test_a_scene_that_contradicts_a_fact_of_the_bible_is_drawn_again() -> None:
    answer, checks = fact_script([[1]])
    provider = ScriptedProvider(answer, name="embedded", structured_mode="grammar")
    async with StoryEngine.from_config(
        settings=settings_for("standard"), providers={"embedded": provider}
    ) as engine:
        story = await engine.generate(PREMISE, scenes=1, seed=4)
    assert story.bible is not None and story.bible.facts == [FACT]
    assert len(checks) == 2 and FACT in checks[0].messages[-1].content
    assert checks[0].json_schema is not None and checks[0].temperature == 0
    draft = story.meta["steps"]["scene.0.draft"]
    assert draft["redraws"] == 1 and draft["draft_problems"] == []
    assert draft["fact_checks"] == ["contradicted: [1]", "contradicted: none"]
    assert quality_report(story).fact_contradictions == []


async def test_a_contradiction_that_remains_is_in_the_quality_report() -> None:
    answer, checks = fact_script([[1], [1]])
    provider = ScriptedProvider(answer, name="embedded", structured_mode="grammar")
    async with StoryEngine.from_config(
        settings=settings_for("standard"), providers={"embedded": provider}
    ) as engine:
        story = await engine.generate(PREMISE, scenes=1, seed=4)
    assert len(checks) == 2  # the retry budget: two draws
    report = quality_report(story)
    assert len(report.fact_contradictions) == 1 and FACT in report.fact_contradictions[0]
    assert "bible" in report.failed and report.measures()["fact contradictions"] == 1


async def test_a_tiny_model_is_not_asked_to_check_facts() -> None:
    from storyengine.pipeline.twostage import StepMeta

    answer, checks = fact_script([[1]])
    provider = ScriptedProvider(answer, name="embedded", structured_mode="grammar")
    async with StoryEngine.from_config(
        settings=settings_for("tiny"), providers={"embedded": provider}
    ) as engine:
        assert (
            await engine.stages.check_facts("scene", [FACT], "The lamp burns bright.", StepMeta("scene"))
            == []
        )
    async with StoryEngine.from_config(
        settings=settings_for("standard"), providers={"embedded": provider}
    ) as engine:
        found = await engine.stages.check_facts("scene", [FACT], "The lamp burns bright.", StepMeta("scene"))
    assert len(checks) == 1 and found == [
        f"contradicts the bible's fact 1 ({FACT}): The lamp is lit in the scene."
    ]
