"""The story models accept sound data and reject shape-valid nonsense, with readable messages."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from storyengine.schemas import (
    EVALUATION_CRITERIA,
    Dialogue,
    Enhancement,
    Evaluation,
    PlotBeat,
    PlotStructure,
    Scene,
    Story,
    StoryScene,
)
from storyengine.text.review import review
from storyengine.text.rules import Context


def plot_data() -> dict[str, Any]:
    return {
        "structure_type": "three-act",
        "title": "The Lighthouse",
        "characters": ["Ana", "Bo"],
        "beats": [
            {"name": "Arrival", "purpose": "Ana reaches the island and meets Bo", "tension": 2},
            {"name": "The Storm", "purpose": "A storm cuts the island off", "tension": 6},
            {"name": "Betrayal", "purpose": "Bo hides the radio", "tension": 8},
            {"name": "Climax", "purpose": "Ana confronts Bo at the lamp", "tension": 10},
            {"name": "Dawn", "purpose": "The ferry returns and Ana leaves", "tension": 3},
        ],
    }


def scene_data() -> dict[str, Any]:
    return {
        "title": "Lamp room",
        "setting": "The top of the lighthouse at night",
        "summary": "Ana finds the radio under Bo's coat.",
        "characters": ["Ana", "Bo"],
        "beat": "Climax",
        "mood": "tense",
    }


def dialogue_data() -> dict[str, Any]:
    return {
        "lines": [
            {"speaker": "Ana", "text": "Where is the radio?", "direction": "quietly"},
            {"speaker": "Bo", "text": "Gone. Like the ferry."},
            {"speaker": "Ana", "text": "Then we signal with the lamp."},
        ]
    }


def evaluation_data() -> dict[str, Any]:
    return {
        "scores": [
            {"criterion": c, "score": s, "rationale": f"{c} is solid"}
            for c, s in zip(EVALUATION_CRITERIA, (7, 6, 5, 8, 6), strict=True)
        ],
        "overall": 6,
        "summary": "A tight, moody story.",
    }


def enhancement_data() -> dict[str, Any]:
    return {
        "suggestions": [
            {"target": "Betrayal", "problem": "Bo's motive is unclear", "change": "Show Bo's debt early"},
            {"target": "Dawn", "problem": "The ending is abrupt", "change": "Add a farewell between them"},
        ],
        "summary": "Motivate Bo and slow the ending.",
    }


def messages(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return " | ".join(f"{e['loc']}: {e['msg']}" for e in exc.value.errors())


# -- PlotBeat / PlotStructure --


def test_valid_plot_is_accepted_and_strings_are_stripped() -> None:
    data = plot_data()
    data["beats"][0]["name"] = "  Arrival \n"
    plot = PlotStructure.model_validate(data)
    assert plot.beats[0].name == "Arrival"
    assert [b.tension for b in plot.beats] == [2, 6, 8, 10, 3]
    assert plot.characters == ["Ana", "Bo"]


def test_optional_plot_fields_default() -> None:
    data = plot_data()
    del data["characters"]
    plot = PlotStructure.model_validate(data)
    assert plot.characters == []
    assert plot.beats[0].description is None


def test_a_plot_without_a_title_is_rejected_but_an_old_story_without_one_loads() -> None:
    data = plot_data()
    del data["title"]
    with pytest.raises(ValidationError) as exc:
        PlotStructure.model_validate(data)
    assert exc.value.errors()[0]["loc"] == ("title",)
    old = story_data()
    old["plot"]["title"] = None
    assert Story.model_validate(old).plot.title == "Untitled"


@pytest.mark.parametrize("tension", [0, 11, -3, "7", 7.0, 7.5, True, None])
def test_tension_must_be_a_strict_int_from_1_to_10(tension: object) -> None:
    data = plot_data()
    data["beats"][1]["tension"] = tension
    with pytest.raises(ValidationError) as exc:
        PlotStructure.model_validate(data)
    assert exc.value.errors()[0]["loc"] == ("beats", 1, "tension")


@pytest.mark.parametrize("tension", [1, 10])
def test_tension_bounds_are_inclusive(tension: int) -> None:
    data = plot_data()
    data["beats"][1]["tension"] = tension
    assert PlotStructure.model_validate(data).beats[1].tension == tension


@pytest.mark.parametrize("field", ["name", "purpose"])
@pytest.mark.parametrize("blank", ["", "   ", "\n\t"])
def test_blank_beat_strings_are_rejected(field: str, blank: str) -> None:
    data = plot_data()
    data["beats"][2][field] = blank
    with pytest.raises(ValidationError) as exc:
        PlotStructure.model_validate(data)
    assert exc.value.errors()[0]["loc"] == ("beats", 2, field)


def test_overlong_beat_name_is_rejected() -> None:
    data = plot_data()
    data["beats"][0]["name"] = "x" * 81
    with pytest.raises(ValidationError):
        PlotStructure.model_validate(data)
    data["beats"][0]["name"] = "x" * 80
    assert len(PlotStructure.model_validate(data).beats[0].name) == 80


def test_duplicate_beat_names_case_insensitive_are_rejected() -> None:
    data = plot_data()
    data["beats"][3]["name"] = "  the STORM "
    with pytest.raises(ValidationError) as exc:
        PlotStructure.model_validate(data)
    assert "beats[1] and beats[3]" in messages(exc)
    assert exc.value.errors()[0]["loc"] == ("beats",)


@pytest.mark.parametrize("count", [2, 25])
def test_beat_count_outside_3_to_24_is_rejected(count: int) -> None:
    data = plot_data()
    data["beats"] = [
        {"name": f"Beat {i}", "purpose": f"Event number {i} happens", "tension": 1 + i % 10}
        for i in range(count)
    ]
    with pytest.raises(ValidationError):
        PlotStructure.model_validate(data)


def test_all_equal_tensions_are_rejected_from_four_beats() -> None:
    data = plot_data()
    for beat in data["beats"]:
        beat["tension"] = 5
    with pytest.raises(ValidationError) as exc:
        PlotStructure.model_validate(data)
    assert "tension 5" in messages(exc) and "arc" in messages(exc)


def test_three_beats_may_share_a_tension() -> None:
    data = plot_data()
    data["beats"] = data["beats"][:3]
    for beat in data["beats"]:
        beat["tension"] = 4
    assert len(PlotStructure.model_validate(data).beats) == 3


def test_copied_purposes_on_more_than_half_the_beats_are_rejected() -> None:
    data = plot_data()
    for beat in data["beats"][:3]:
        beat["purpose"] = "The hero goes on an adventure"
    with pytest.raises(ValidationError) as exc:
        PlotStructure.model_validate(data)
    assert "3 of 5 beats" in messages(exc)


def test_purposes_repeated_on_half_the_beats_or_fewer_pass() -> None:
    data = plot_data()
    data["beats"][0]["purpose"] = data["beats"][1]["purpose"]
    assert PlotStructure.model_validate(data).beats[0].purpose == "A storm cuts the island off"


@pytest.mark.parametrize("purpose", ["Climax", "climax.", "  CLIMAX!  "])
def test_a_purpose_that_is_just_the_name_is_a_finding_for_a_re_ask(purpose: str) -> None:
    data = {"name": "Climax", "purpose": purpose, "tension": 9}
    reviewed = review(PlotBeat, data, Context(language="en"))
    assert [(f.rule, f.action) for f in reviewed.open] == [("repeats_sibling", "reask")]
    assert "only repeats the beat's name" in reviewed.open[0].message
    PlotBeat.model_validate(data)  # words never fail the shape


def test_plot_characters_are_unique_and_bounded() -> None:
    data = plot_data()
    data["characters"] = ["Ana", "ana "]
    with pytest.raises(ValidationError):
        PlotStructure.model_validate(data)
    data["characters"] = [f"Person {i}" for i in range(13)]
    with pytest.raises(ValidationError):
        PlotStructure.model_validate(data)
    data["characters"] = ["Ana", " "]
    with pytest.raises(ValidationError):
        PlotStructure.model_validate(data)


def test_unknown_keys_are_ignored() -> None:
    data = plot_data()
    data["act"] = 1
    data["beats"][0]["notes"] = "extra"
    plot = PlotStructure.model_validate(data)
    assert "act" not in plot.model_dump()


def test_structure_without_beats_or_type_is_rejected() -> None:
    for key in ("beats", "structure_type"):
        data = plot_data()
        del data[key]
        with pytest.raises(ValidationError) as exc:
            PlotStructure.model_validate(data)
        assert exc.value.errors()[0]["type"] == "missing"


# -- Scene --


def test_valid_scene() -> None:
    scene = Scene.model_validate(scene_data())
    assert scene.beat == "Climax" and scene.characters == ["Ana", "Bo"]


@pytest.mark.parametrize("characters", [[], ["Ana", "ANA"], [" "], [f"C{i}" for i in range(9)], "Ana"])
def test_scene_cast_must_be_1_to_8_unique_names(characters: object) -> None:
    data = scene_data()
    data["characters"] = characters
    with pytest.raises(ValidationError):
        Scene.model_validate(data)


def test_scene_summary_that_repeats_the_title_is_a_finding_for_a_re_ask() -> None:
    data = scene_data()
    data["summary"] = "Lamp room."
    reviewed = review(Scene, data, Context(language="en"))
    assert [f.field for f in reviewed.open] == ["summary"]
    assert "only repeats the title" in reviewed.open[0].message


# -- Dialogue --


def test_dialogue_without_cast_accepts_any_speaker() -> None:
    dialogue = Dialogue.model_validate(dialogue_data())
    assert [ln.speaker for ln in dialogue.lines] == ["Ana", "Bo", "Ana"]


def test_speakers_must_come_from_the_cast_and_take_its_spelling() -> None:
    data = dialogue_data()
    data["lines"][1]["speaker"] = "bo"
    dialogue = Dialogue.model_validate(data, context={"cast": ["Ana", "Bo"]})
    assert dialogue.lines[1].speaker == "Bo"
    data["lines"][1]["speaker"] = "Nadia"
    with pytest.raises(ValidationError) as exc:
        Dialogue.model_validate(data, context={"cast": ["Ana", "Bo"]})
    assert "'Nadia'" in messages(exc) and "Ana, Bo" in messages(exc)


def test_a_line_said_more_than_twice_is_dropped_after_its_second_time() -> None:
    data = {"lines": [{"speaker": "Ana", "text": "Help!"}, {"speaker": "Bo", "text": "Coming."}]}
    data["lines"] += [{"speaker": "Ana", "text": "help! "} for _ in range(4)]
    reviewed = review(Dialogue, data, Context(language="en"))
    kept = Dialogue.model_validate(reviewed.data)
    assert [ln.text for ln in kept.lines] == ["Help!", "Coming.", "help!"]
    assert [f.action for f in reviewed.findings] == ["dropped"] * 3
    twice = {"lines": [{"speaker": "Ana", "text": "Help!"}, {"speaker": "Bo", "text": "Help!"}]}
    assert len(review(Dialogue, twice, Context(language="en")).data["lines"]) == 2


def test_one_speaker_may_hold_every_line() -> None:
    # A monologue in front of a silent listener is real drama; it is not rejected.
    data = {"lines": [{"speaker": "Ana", "text": f"Sentence {i}."} for i in range(4)]}
    assert len(Dialogue.model_validate(data, context={"cast": ["Ana", "Bo"]}).lines) == 4


@pytest.mark.parametrize("count", [0, 61])
def test_dialogue_line_count_is_bounded(count: int) -> None:
    data = {"lines": [{"speaker": "Ana", "text": f"Line {i}"} for i in range(count)]}
    with pytest.raises(ValidationError):
        Dialogue.model_validate(data)


def test_blank_line_text_is_rejected() -> None:
    data = dialogue_data()
    data["lines"][0]["text"] = "  "
    with pytest.raises(ValidationError) as exc:
        Dialogue.model_validate(data)
    assert exc.value.errors()[0]["loc"] == ("lines", 0, "text")


# -- Evaluation --


def test_valid_evaluation_and_criterion_case_is_normalised() -> None:
    data = evaluation_data()
    data["scores"][0]["criterion"] = " Coherence "
    evaluation = Evaluation.model_validate(data)
    assert [s.criterion for s in evaluation.scores] == list(EVALUATION_CRITERIA)


def test_evaluation_missing_a_criterion_is_rejected() -> None:
    data = evaluation_data()
    data["scores"][2]["criterion"] = "coherence"
    with pytest.raises(ValidationError) as exc:
        Evaluation.model_validate(data)
    assert "missing: pacing" in messages(exc) and "more than once: coherence" in messages(exc)
    data = evaluation_data()
    del data["scores"][4]
    with pytest.raises(ValidationError):
        Evaluation.model_validate(data)


def test_unknown_criterion_is_rejected() -> None:
    data = evaluation_data()
    data["scores"][0]["criterion"] = "vibes"
    with pytest.raises(ValidationError):
        Evaluation.model_validate(data)


def test_overall_must_not_contradict_the_scores() -> None:
    data = evaluation_data()  # scores 5..8
    for overall, ok in [(4, True), (9, True), (3, False), (10, False), (0, False)]:
        data["overall"] = overall
        if ok:
            assert Evaluation.model_validate(data).overall == overall
        else:
            with pytest.raises(ValidationError):
                Evaluation.model_validate(data)


# -- Enhancement --


def test_valid_enhancement_and_its_limits() -> None:
    assert len(Enhancement.model_validate(enhancement_data()).suggestions) == 2
    data = enhancement_data()
    data["suggestions"] = []
    with pytest.raises(ValidationError):
        Enhancement.model_validate(data)
    data = enhancement_data()
    data["suggestions"][1]["change"] = "show bo's debt early"
    reviewed = review(Enhancement, data, Context(language="en"))
    assert len(reviewed.data["suggestions"]) == 1 and reviewed.findings[0].rule == "copied"
    data = enhancement_data()
    data["suggestions"][0]["change"] = "Bo's motive is unclear."
    reviewed = review(Enhancement, data, Context(language="en"))
    assert "only repeats the problem" in reviewed.open[0].message


# -- Story --


def story_data() -> dict[str, Any]:
    return {
        "premise": "A keeper and a stranger are trapped in a lighthouse.",
        "plot": plot_data(),
        "scenes": [{"scene": scene_data(), "dialogue": dialogue_data()}],
        "evaluation": evaluation_data(),
        "enhancement": enhancement_data(),
    }


def test_story_round_trips_through_json() -> None:
    story = Story.model_validate(story_data())
    assert story.meta == {}
    again = Story.model_validate_json(story.model_dump_json())
    assert again == story


def test_story_scene_speakers_must_be_scene_characters() -> None:
    data = copy.deepcopy(story_data())
    data["scenes"][0]["scene"]["characters"] = ["Ana"]
    with pytest.raises(ValidationError, match="not characters of scene"):
        Story.model_validate(data)
    with pytest.raises(ValidationError):
        StoryScene.model_validate(data["scenes"][0])


def test_story_needs_a_scene() -> None:
    data = story_data()
    data["scenes"] = []
    with pytest.raises(ValidationError):
        Story.model_validate(data)
