"""The rules about text (storyengine/text): findings with repairs, in every language, and the policy
that never fails a story for its words.

The samples are what real models wrote (issues 13 and 23): JSON debris, schema text, machine
timestamps in a setting, descriptions as names, `NAME: Sam` dialogue, letter runs, meta talk,
beat purposes copied into titles. Every test fails when its rule or repair is removed; what a
rule must accept (names in any script, speech that repeats for effect, finished prose without a
full stop, well-formed stories in six languages) is tested alongside.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multilingual_stories import STORIES
from storyengine.bible import StoryBible
from storyengine.config import parse_settings
from storyengine.drafts import reader_prose
from storyengine.errors import SchemaValidationError
from storyengine.pipeline.engine import StoryEngine
from storyengine.providers.fake_story import story_script
from storyengine.providers.scripted import ScriptedProvider
from storyengine.quality import load_story, quality_report
from storyengine.schemas import (
    EVALUATION_CRITERIA,
    Dialogue,
    Enhancement,
    Evaluation,
    PlotStructure,
    Scene,
    Story,
)
from storyengine.structuring import format_errors, validate_json_payload
from storyengine.text.language import detect
from storyengine.text.loops import loop_at
from storyengine.text.review import Finding, check_text, review
from storyengine.text.rules import Context, findings_in, fragment
from storyengine.text.segment import content_units, sentences, words
from storyengine.types import CompletionRequest

EN = Context(language="en")
PREMISE = "A lighthouse keeper finds a message in a bottle written by her future self."


def rules_of(text: str, key: str, context: Context = EN) -> set[str]:
    return {name for name, _ in findings_in(text, key, context)}


def repaired(text: str, key: str, context: Context = EN) -> tuple[str, list[tuple[str, str]], bool]:
    text, found, unusable = check_text(text, key, context, key)
    return text, [(f.rule, f.action) for f in found], unusable


# -- segmentation and language --


def test_words_and_sentences_in_every_script() -> None:
    assert words("O'Neil and Mary-Jane") == ["o'neil", "and", "mary-jane"]
    assert words("नमस्ते दुनिया") == ["नमस्ते", "दुनिया"]  # the vowel signs stay in their word
    assert words("灯台守") == ["灯", "台", "守"]
    assert sentences("美咲は驚いた。手紙を読んだ！「本当？」") == [
        "美咲は驚いた。",
        "手紙を読んだ！",
        "「本当？」",
    ]
    assert sentences("Dr. Reed came home. J. Reed stayed.") == ["Dr. Reed came home.", "J. Reed stayed."]
    assert sentences("هل هي لها؟ نعم.") == ["هل هي لها؟", "نعم."]


@pytest.mark.parametrize(("language", "story"), STORIES.items())
def test_the_language_of_each_story_is_detected(language: str, story: dict[str, Any]) -> None:
    assert detect(story["premise"] + " " + story["scenes"][0]["prose"]) == language
    assert detect(PREMISE) == "en"


def test_content_units_match_across_a_spaceless_script() -> None:
    premise = set(content_units("灯台守は瓶の中の手紙を見つける", "ja"))
    story = set(content_units("美咲は浜辺で瓶を拾い、手紙を読んだ。", "ja"))
    assert {"手紙", "瓶"} <= premise & story, (premise, story)


# -- the rules, one by one --


@pytest.mark.parametrize(
    "name",
    ["José", "O'Neil", "Zoë", "Mary-Jane", "Tom Reed", "Dr. Ada Lovelace", "Ludwig van Beethoven",
     "d'Artagnan", "李娜", "美咲", "Мария Иванова", "ليلى", "Łucja Żak", "Anne-Marie Leblanc-Dubois",
     "Bartholomew-Maximilian"],
)  # fmt: skip
def test_real_names_pass(name: str) -> None:
    assert rules_of(name, "character") == set()


@pytest.mark.parametrize(
    "name",
    ["The New", "A lighthouse keeper", "a bottle written by her future self", "NAME: Sarah", "Narrator",
     "Person A", "Sarah 2", "wearing white robes and armor", "Human power", "TheFutureBeginsWhen",
     "Theeardofthelight-haulinglighthousek", "Lighthousekeepersdaughterofthebay"],
)  # fmt: skip
def test_what_is_not_a_name_is_unusable(name: str) -> None:
    _, found, unusable = repaired(name, "character")
    assert unusable and found[-1][0] in ("not_a_name", "debris")


def test_a_lower_case_name_is_capitalised() -> None:
    assert repaired("mary-jane", "character") == ("Mary-Jane", [("not_a_name", "repaired")], False)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("][", "debris"),
        ('"title": "x"', "debris"),
        ("theo-1.1,target:256,problem:13,minLength:70,maxLength:489,required:true.", "debris"),
        ("addError()' , 32:4, 33:5, 34:6, 35:7, 36:8.", "debris"),
        ("This is a JSON object that matches the schema you provided.", "debris"),
        ("A rose by the color of the month (tension 2/10). The stories unfold.", "debris"),
        ("2019-07-31T14:58:56.143.14.BREAK;Thelma is a great example of a keeper.", "timestamp"),
        ("Amaranthakeh, Greece 2018-04-30 at 1:57:59.633333 (UTC +1), Ares Olympus.", "timestamp"),
        ("Lighthouse keeper's End, England, 2018-04-30 at 1:57:59 PM GMT+6. The keeper waits.", "timestamp"),
        ("./the_story.jsonp1234567890-a-bcddefghijklmnpqrszwxyzwzwzwzwzw", "gibberish"),
        ("The harbor at dusk zwzwzwzwzwzw", "gibberish"),
    ],
)
def test_debris_schema_text_timestamps_and_gibberish_are_found(text: str, rule: str) -> None:
    assert rule in rules_of(text, "setting")


@pytest.mark.parametrize(
    "text",
    ["At 6:30 the ferry leaves.", "Chapter 2: the storm.", "It costs 12,000 coins.", "Hahahaha! You fool.",
     "Lalala, she sang.", "The year was 1999, and the sea was calm.", "Room 221B, Baker Street.",
     "The letter is dated 2018-04-30, a Monday."],
)  # fmt: skip
def test_plain_text_with_numbers_colons_and_laughter_is_not_junk(text: str) -> None:
    assert rules_of(text, "text") & {"debris", "gibberish", "timestamp", "loop"} == set()


@pytest.mark.parametrize(
    ("text", "key", "fixed"),
    [
        # two 2-scene stories of the embedded model died on this setting (issue 23)
        ("Ashwood, England, 2019-13-25T14:38:07.628ZMAD - Ashwood, En", "setting", "Ashwood, England"),
        ("The harbor at dusk zwzwzwzwzwzw", "setting", "The harbor at dusk"),
        ("A Keeper's Daughter, Maine, 2018-04-30, 2019-05-07, 2020-06-07, 2021-07-08.", "setting",
         "A Keeper's Daughter, Maine"),
        ("The lamp burns low. She said {\"text\": 1} to him. The sea is calm.", "summary",
         "The lamp burns low. The sea is calm."),
        ("A quiet harbor }", "setting", "A quiet harbor"),
        ("I am here. I am here. I am here.", "text", "I am here."),
        ("This is the first scene of a series that will explore loss. Mara climbs the stairs.", "summary",
         "Mara climbs the stairs."),
        ("The first paragraph is about the setting: Mara waits. The tide turns.", "summary",
         "The tide turns."),
        ("She lit the lamp. Then she read the lett", "summary", "She lit the lamp."),
        # settings of the third novella, stopped at maxLength by the grammar's full stop: the clause
        # before the cut is kept
        ("A lighthouse keeper's home in the town of the lighthouse, where they're separated by a.",
         "setting", "A lighthouse keeper's home in the town of the lighthouse."),
        ("Their Story of Redemption with Love and Respect, Their Family's Journey of Love and.",
         "setting", "Their Story of Redemption with Love and Respect."),
        ("A quiet harbour town at dusk,", "setting", "A quiet harbour town at dusk."),
        ("The Beat ,", "title", "The Beat"),
        ("In this realm, where imagination knows no end,.", "setting",
         "In this realm, where imagination knows no end."),
        ("Mara\x00 lights\x07 the lamp.", "summary", "Mara lights the lamp."),
    ],
)  # fmt: skip
def test_what_code_can_repair_is_repaired_and_recorded(text: str, key: str, fixed: str) -> None:
    result, found, unusable = repaired(text, key)
    assert result == fixed and not unusable
    assert found and all(action == "repaired" for _, action in found), found


@pytest.mark.parametrize(
    ("text", "language", "fixed"),
    [
        ("Старый маяк на берегу моря,", "ru", "Старый маяк на берегу моря."),
        ("東京の古い灯台の夜、", "ja", "東京の古い灯台の夜。"),
        ("منارة قديمة على شاطئ البحر،", "ar", "منارة قديمة على شاطئ البحر."),
        ("Старый маяк,", "ru", None),  # two words are no clause to keep
    ],
)
def test_a_clause_cut_off_in_any_script(text: str, language: str, fixed: str | None) -> None:
    result, found, _ = repaired(text, "setting", Context(language=language))
    assert ("cut_off", "repaired" if fixed else "reask") in found
    assert result == (fixed or text)


@pytest.mark.parametrize(
    ("text", "key", "rule"),
    [
        (", a lighthouse keeper, stands at the rail.", "summary", "leading_mark"),
        ("She lights the fire in the fm", "summary", "cut_off"),
        ("The keeper climbs to the", "summary", "cut_off"),
        ("She opened the door and,", "summary", "cut_off"),  # the clause before the comma is cut too
        ("At sea, the", "setting", "cut_off"),  # two words are no clause to keep
        ("NAME: Sarah, the lighthouse keeper. NAME: John, her brother.", "text", "not_speech"),
        ("the keeper of the glass door", "text", "not_speech"),
        ("The End: At the climax, it was a moment of pure purpose and", "title", "copied_instruction"),
    ],
)
def test_what_code_cannot_repair_is_left_for_one_re_ask(text: str, key: str, rule: str) -> None:
    result, found, _ = repaired(text, key)
    assert result == text and (rule, "reask") in found


def test_null_and_a_stage_direction_are_no_text() -> None:
    assert repaired("null", "mood")[2] and repaired("None", "fact")[2]
    assert repaired("(walks to the window)", "text")[2]


def test_the_cut_off_rule_measured_on_every_truncation_of_real_sentences() -> None:
    """Conservative and measurable: no complete sentence or word flagged; most truncations caught."""
    sentences_ = [
        "The keeper climbs the spiral stairs every evening to light the great lamp.",
        "A storm rolls in from the west and the ferry does not come back to the island.",
        "She finds a green bottle wedged between the rocks below the lighthouse.",
        "Inside is a letter in her own handwriting, dated thirty years from now.",
        "Her brother laughs at first, but the letter knows things nobody could know.",
        "At midnight the lamp fails, and the keeper must choose whether to trust the letter.",
    ]
    assert all("cut_off" not in rules_of(s, "summary") for s in sentences_)
    vocabulary = {w.strip(".,").casefold() for s in sentences_ for w in s.split()}
    vocabulary |= set(
        "lantern harbour compass window promise kettle signal midnight owl prism kept inn".split()
    )
    assert sorted(w for w in vocabulary if fragment(w)) == []
    mid_word = [
        s[:c] for s in sentences_ for c in range(8, len(s) - 1) if s[c - 1].isalpha() and s[c].isalpha()
    ]
    caught = sum(1 for t in mid_word if "cut_off" in rules_of(t, "summary"))
    assert caught / len(mid_word) >= 0.4, caught / len(mid_word)


@pytest.mark.parametrize(
    "text",
    ["No, no, no! Not the lamp!", "Run. Run! The tide is coming.", "Again and again, she said, again."],
)
def test_speech_that_repeats_for_effect_is_not_a_loop(text: str) -> None:
    assert loop_at(text) is None


def test_a_loop_in_a_spaceless_script_is_found_and_a_word_is_not() -> None:
    assert loop_at("ドキドキしながら手紙を開いた。") is None
    assert loop_at("手紙を読んだ手紙を読んだ手紙を読んだ手紙を読んだ") is not None


# -- rules that know only English stay out of other languages --


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("美咲が浜辺で瓶を拾い、自分の筆跡の手紙を読む", "ja"),
        ("林梅捡到漂流瓶，读到自己笔迹的信", "zh"),
        ("Анна находит бутылку и читает письмо, написанное её почерком", "ru"),
        ("Анна находит бутылку и читает письмо, написанное её почерком.", "ru"),
        ("تجد ليلى زجاجة وتقرأ رسالة بخط يدها", "ar"),
        ("Dies ist die erste Szene am Meer", "de"),
    ],
)
def test_finished_text_in_other_languages_has_no_findings(text: str, language: str) -> None:
    assert rules_of(text, "purpose", Context(language=language)) == set()


@pytest.mark.parametrize(("language", "story"), STORIES.items())
def test_well_formed_stories_in_six_languages_are_accepted_without_false_alarms(
    language: str, story: dict[str, Any]
) -> None:
    loaded, clean = load_story(json.dumps(story, ensure_ascii=False))
    assert clean
    report = quality_report(loaded)
    assert report.language == language
    assert report.cut_off_fields == [] and report.unpunctuated_fields == []
    assert report.non_names == [] and report.names_not_in_cast == [] and report.debris_fields == []
    assert report.meta_talk_fields == [] and report.gibberish_fields == [] and report.loop_fields == []
    assert report.premise_coverage >= 0.5, (report.premise_words, report.premise_words_found)
    assert report.unlisted_findings == [] and report.pronoun_slips == []


# -- objects: optional items dropped, script lines taken apart --


def test_a_bad_optional_name_is_dropped_and_the_plot_kept() -> None:
    data = {
        "structure_type": "three-act",
        "title": "The Keeper",
        "beats": [{"name": f"B{i}", "purpose": f"Beat {i} happens.", "tension": i + 2} for i in range(3)],
        "characters": ["Mara", "wearing white robes and armor", "Human power", "Tom Reed", "Mara"],
    }
    reviewed = review(PlotStructure, data, EN)
    assert PlotStructure.model_validate(reviewed.data).characters == ["Mara", "Tom Reed"]
    assert [f.action for f in reviewed.findings] == ["dropped", "dropped", "dropped"] and not reviewed.open


def test_script_lines_are_taken_apart_and_moved_to_their_speaker() -> None:
    lines = [
        {"speaker": "Sam", "text": "NAME: Sam"},
        {"speaker": "Sam", "text": "NAME: America and Europe."},
        {"speaker": "Tom", "text": "Sam: I will go now."},
        {"speaker": "Tom", "text": "Tom (quietly): Then go."},
        {"speaker": "Tom", "text": "*sighs*"},
        {"speaker": "Sam", "text": "Again."},
        {"speaker": "Sam", "text": "Again."},
        {"speaker": "Sam", "text": "Again."},
    ]
    reviewed = review(Dialogue, {"lines": lines}, Context(language="en", cast=("Sam", "Tom")))
    dialogue = Dialogue.model_validate(reviewed.data, context={"cast": ["Sam", "Tom"]})
    assert [(ln.speaker, ln.text) for ln in dialogue.lines] == [
        ("Sam", "America and Europe."),
        ("Sam", "I will go now."),
        ("Tom", "Then go."),
        ("Sam", "Again."),
        ("Sam", "Again."),
    ]
    assert not reviewed.open


def test_a_scene_title_copying_its_beat_becomes_the_beat_name() -> None:
    data = {
        "title": "The End: At the climax, it was a moment of pure purpose and",
        "setting": "The lighthouse gallery at night",
        "summary": "Mara reads the letter again.",
        "characters": ["Mara"],
    }
    purpose = "At the climax, it was a moment of pure purpose"
    context = Context(language="en", instructions=(purpose,), beat_name="Storm")
    reviewed = review(Scene, data, context)
    assert reviewed.data["title"] == "Storm" and not reviewed.open


@pytest.mark.parametrize(
    "earlier, copy, fresh, language",
    [
        (
            "A beacon of hope that was once a family's memory is now no more for them to rely on.",
            "A beacon of hope that was once a family's memory is now no more for them to rely on, still.",
            "The harbour master seizes the lamp oil and the keeper's daughter goes to the court.",
            "en",
        ),
        (
            "港長が灯台の油を差し押さえ、娘は裁判所へ向かう。",
            "港長が灯台の油を差し押さえ、娘は裁判所へ向かう。",
            "嵐の夜、娘は一人で灯をともす。",
            "ja",
        ),
    ],
)
def test_a_purpose_that_repeats_the_chapter_before_is_left_for_a_re_ask_in_any_script(
    earlier: str, copy: str, fresh: str, language: str
) -> None:
    """Measured: SmolLM2 planning chapter 2 of a long story copied chapter 1's scenes."""
    context = Context(language=language, earlier=(earlier,))
    assert "repeats_earlier" in rules_of(copy, "purpose", context)
    assert "repeats_earlier" not in rules_of(fresh, "purpose", context)
    assert "repeats_earlier" not in rules_of(copy, "purpose", Context(language=language))  # nothing before


def test_a_role_equal_to_the_name_is_left_for_a_re_ask() -> None:
    data = {
        "characters": [{"name": "Mara", "role": "Mara", "description": "The keeper.", "pronouns": "she/her"}],
        "setting": "An island lighthouse.",
    }
    reviewed = review(StoryBible, data, EN)
    assert [(f.rule, f.action) for f in reviewed.open] == [("role_is_name", "reask")]


# -- the policy in the pipeline: repair, re-ask once, keep and record; never fail for words --


def engine_for(script: Callable[[CompletionRequest], str], *, in_parts: bool) -> StoryEngine:
    settings = parse_settings(
        f"""
providers:
  embedded: {{type: embedded, context_window: 8192, profile: {"tiny" if in_parts else "standard"}}}
retry: {{attempts: 3, backoff_initial: 0, backoff_max: 0}}
""",
        source="test.yaml",
    )
    provider = ScriptedProvider(script, name="embedded", structured_mode="grammar")
    return StoryEngine.from_config(settings=settings, providers={"embedded": provider})


def stubborn(
    component: str, key: str, bad: Any, asked: list[CompletionRequest]
) -> Callable[[CompletionRequest], str]:
    """story_script, except that `key` of `component`'s structured answers is always `bad`: a
    model that repeats itself on every re-ask. Every structuring request of `component` is kept."""

    def script(request: CompletionRequest) -> str:
        answer = story_script(request)
        if request.component != component or request.stage != "structuring":
            return answer
        asked.append(request)
        data = json.loads(answer)
        if key in data:
            data[key] = bad
        return json.dumps(data)

    return script


CASES = {
    "a summary starting with punctuation": ("scene", "summary", ", a lighthouse keeper, stands at the rail."),
    "a summary cut off": ("scene", "summary", "Mara lights the fire in the fm"),
}


@pytest.mark.parametrize("in_parts", [False, True], ids=["one-shot", "in-parts"])
@pytest.mark.parametrize(("component", "key", "bad"), CASES.values(), ids=CASES.keys())
async def test_a_model_that_repeats_a_text_problem_still_gets_its_story(
    component: str, key: str, bad: str, in_parts: bool
) -> None:
    asked: list[CompletionRequest] = []
    async with engine_for(stubborn(component, key, bad, asked), in_parts=in_parts) as engine:
        story = await engine.generate(PREMISE, scenes=1, seed=3)
    step = story.meta["steps"]["scene.0"]
    assert step["reasked"]
    findings = step["findings"]
    assert findings, "the finding is recorded"
    assert all(f["action"] in ("kept", "repaired", "dropped", "nulled") for f in findings)
    # one answer and one re-ask for the part that holds the field: never the six of the old rules
    holding = [r for r in asked if f'"{key}"' in json.dumps(r.json_schema or {})]
    assert len(holding) == 2, len(holding)
    report = quality_report(story)
    assert report.kept_findings or report.repairs
    assert report.unlisted_findings == []
    Story.model_validate(story.model_dump(mode="json"))


@pytest.mark.parametrize("in_parts", [False, True], ids=["one-shot", "in-parts"])
async def test_a_repairable_finding_costs_no_model_call(in_parts: bool) -> None:
    asked: list[CompletionRequest] = []
    bad = "Ashwood, England, 2019-13-25T14:38:07.628ZMAD - Ashwood, En"
    async with engine_for(stubborn("scene", "setting", bad, asked), in_parts=in_parts) as engine:
        story = await engine.generate(PREMISE, scenes=1, seed=3)
    assert story.scenes[0].scene.setting == "Ashwood, England"
    step = story.meta["steps"]["scene.0"]
    assert not step["reasked"]
    assert {"rule": "timestamp", "action": "repaired"}.items() <= next(
        f for f in step["findings"] if f["rule"] == "timestamp"
    ).items()
    assert "scenes[0].setting: timestamp" in quality_report(story).repairs


@pytest.mark.parametrize("in_parts", [False, True], ids=["one-shot", "in-parts"])
async def test_a_title_copying_its_beat_becomes_the_beat_name_without_a_re_ask(in_parts: bool) -> None:
    asked: list[CompletionRequest] = []
    script = stubborn("scene", "title", "Sets up: a moment of pure purpose and", asked)
    async with engine_for(script, in_parts=in_parts) as engine:
        story = await engine.generate(PREMISE, scenes=1, seed=3)
    scene = story.scenes[0].scene
    assert scene.title == scene.beat
    assert not story.meta["steps"]["scene.0"]["reasked"]
    assert any(r.endswith("title: copied_instruction") for r in quality_report(story).repairs)


async def test_the_re_ask_carries_the_finding_and_no_example_values() -> None:
    asked: list[CompletionRequest] = []
    script = stubborn("scene", "summary", ", a keeper, stands at the rail.", asked)
    async with engine_for(script, in_parts=False) as engine:
        await engine.generate(PREMISE, scenes=1, seed=3)
    reask = asked[-1].messages[-1].content
    assert "begins with punctuation" in reask
    assert "Tom Reed" not in reask and "such as" not in reask


# -- the evaluation and the enhancement: copies are notes or dropped, never a failed story --


def evaluation(rationales: list[str], scores: tuple[int, ...] = (7, 6, 5, 8, 6)) -> dict[str, Any]:
    return {
        "scores": [
            {"criterion": c, "score": s, "rationale": r}
            for c, s, r in zip(EVALUATION_CRITERIA, scores, rationales, strict=True)
        ],
        "overall": 6,
        "summary": "A tight, moody story.",
    }


def test_copied_rationales_are_kept_but_mark_the_evaluation_unreliable() -> None:
    same = "The story is good and the characters are interesting to read about."
    rationales = [same, "The pace is even.", same + "!", "The lines sound real.", "A fresh idea."]
    marked = Evaluation.model_validate(evaluation(rationales))
    assert marked.reliable is False
    assert marked.notes == [
        "the rationales for coherence and pacing are the same sentence: the model did not reason about "
        "each criterion"
    ]
    distinct = ["Events follow.", "People feel real.", "It moves.", "Lines sound spoken.", "Fresh."]
    assert Evaluation.model_validate(evaluation(distinct)).reliable is True


def test_one_score_for_every_criterion_is_kept_but_marked_unreliable() -> None:
    rationales = ["Events follow.", "People feel real.", "It moves.", "Lines sound spoken.", "Fresh."]
    marked = Evaluation.model_validate({**evaluation(rationales, (10,) * 5), "overall": 10})
    assert marked.reliable is False and "same score" in marked.notes[0]
    assert Evaluation.model_validate(marked.model_dump()).notes == marked.notes  # not added twice


def test_a_copied_suggestion_is_dropped_and_one_always_stays() -> None:
    change = "Give the keeper a clear reason to climb the tower that night."
    suggestions = [
        {"target": "Scene 1", "problem": "The start is slow.", "change": change},
        {"target": "Scene 2", "problem": "The middle sags.", "change": change.replace("clear", "clear,")},
    ]
    reviewed = review(Enhancement, {"suggestions": suggestions, "summary": "Fix the start."}, EN)
    kept = Enhancement.model_validate(reviewed.data)
    assert [s.target for s in kept.suggestions] == ["Scene 1"]
    assert [(f.rule, f.action) for f in reviewed.findings] == [("copied", "dropped")]


# -- the one-shot path: whole objects through validate_json_payload with the review --

GOOD_PLOT = {
    "structure_type": "three-act",
    "title": "The Bottle",
    "characters": ["Ana", "Bo"],
    "beats": [
        {"name": "Arrival", "purpose": "Ana finds the bottle on the rocks.", "tension": 2},
        {"name": "The Letter", "purpose": "The letter warns of a storm.", "tension": 6},
        {"name": "The Storm", "purpose": "Ana keeps the lamp burning.", "tension": 9},
        {"name": "Dawn", "purpose": "The ferry comes home safe.", "tension": 3},
    ],
}
ONE_SHOT = {
    "structure type debris": (lambda d: d.update(structure_type="]["), "structure_type", "debris"),
    "a phrase as a character": (
        lambda d: d.update(characters=["A lighthouse keeper", "Bo"]),
        "characters[0]",
        "not_a_name",
    ),
    "purpose cut off": (
        lambda d: d["beats"][2].update(purpose="Ana keeps the lamp burning in the fm"),
        "beats[2].purpose",
        "cut_off",
    ),
    "looping purpose": (
        lambda d: d["beats"][3].update(purpose="No no no nah naw no yes no no no no."),
        "beats[3].purpose",
        "loop",
    ),
}


@pytest.mark.parametrize(("change", "where", "rule"), ONE_SHOT.values(), ids=ONE_SHOT.keys())
def test_one_shot_findings_name_their_field_and_never_raise(
    change: Callable[[dict[str, Any]], None], where: str, rule: str
) -> None:
    data = copy.deepcopy(GOOD_PLOT)
    change(data)
    findings: list[Finding] = []
    plot = validate_json_payload(json.dumps(data), PlotStructure, reviewing=EN, findings=findings)
    assert plot.title == "The Bottle"
    assert (where, rule) in [(f.field, f.rule) for f in findings]


def test_shape_errors_are_still_errors() -> None:
    data = copy.deepcopy(GOOD_PLOT)
    data.pop("title")
    with pytest.raises(SchemaValidationError) as exc:
        validate_json_payload(json.dumps(data), PlotStructure, reviewing=EN)
    assert "title" in format_errors(exc.value)


# -- bad input: any script, right to left, emoji, control characters --

KEYS = sorted(
    {"title", "setting", "summary", "purpose", "text", "character", "speaker", "role", "fact", "mood"}
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.text(min_size=1, max_size=200),
    key=st.sampled_from(KEYS),
    language=st.sampled_from(["en", "ja", "ar", ""]),
)
def test_any_text_in_any_field_is_checked_without_a_crash(text: str, key: str, language: str) -> None:
    result, found, unusable = check_text(text, key, Context(language=language), key)
    assert isinstance(result, str) and all(f.action in ("repaired", "reask") for f in found)
    if not unusable:
        assert "\x00" not in result
    loop_at(text)
    sentences(text)


@pytest.mark.parametrize(
    "text",
    ["مرحبا بالعالم. كيف حالك؟", "Shalom עולם and world.", "🌊🏮 The lamp burns. 🌊", "Ἀχιλλεύς speaks.",
     "ሰላም ለዓለም።", "नमस्ते दुनिया।", "안녕하세요. 등대지기입니다."],
)  # fmt: skip
def test_no_script_is_debris_or_gibberish(text: str) -> None:
    language = detect(text)
    found = rules_of(text, "summary", Context(language=language)) | rules_of(
        text, "text", Context(language=language)
    )
    assert found & {"debris", "gibberish", "control", "loop", "null_text", "cut_off"} == set(), found


def test_the_prose_a_reader_gets_drops_meta_talk_and_junk_by_the_sentence_and_says_so() -> None:
    draft = (
        "This is the first scene of a series that will explore loss. Mara climbs the stairs.\n\n"
        "The lamp hums. The log says ./the_story.jsonp1234567890 now. The sea is calm."
    )
    prose, found = reader_prose(draft)
    assert prose == "Mara climbs the stairs.\n\nThe lamp hums. The sea is calm."
    assert sorted((f.rule, f.action) for f in found) == [("gibberish", "repaired"), ("meta_talk", "repaired")]


# -- choosing among drafts --


def drafts_script(texts: list[str], seen: list[int | None]) -> Callable[[CompletionRequest], str]:
    """story_script, except that scene drafts are `texts` in turn (seeds recorded in `seen`)."""

    def script(request: CompletionRequest) -> str:
        if request.component == "scene" and request.stage == "freeform":
            seen.append(request.seed)
            return texts[(len(seen) - 1) % len(texts)]
        return story_script(request)

    return script


WEAK = (  # passes every draft check (on premise, long enough), but says little of it
    "This is the first scene of a series. The lighthouse keeper waits by the window all night long "
    "and thinks about the sea, the boats, the nets and the long winter ahead of the village.\n\n"
    "The keeper makes tea. The wind is cold and the village sleeps under the grey clouds. Somewhere a "
    "dog barks twice, a shutter bangs, and the kettle sings on the stove until dawn."
)
ON_TOPIC = (
    "Mara, the lighthouse keeper, finds a green bottle wedged in the rocks below the tower. Inside is "
    "a message in her own handwriting, written by her future self, dated thirty years from now.\n\n"
    "She reads it twice by the lamp. The message warns her about the storm that is coming. She folds "
    "the letter into her coat, climbs the stairs and lights the great lamp an hour early."
)


@pytest.mark.parametrize(("drafts", "kept"), [(3, ON_TOPIC), (1, WEAK)])
async def test_the_best_of_k_drafts_by_code_is_kept(drafts: int, kept: str) -> None:
    seen: list[int | None] = []
    settings_text = (
        "providers:\n  embedded: {type: embedded, context_window: 8192, profile: standard}\n"
        f"narrative: {{scene_drafts: {drafts}}}\ncache: {{enabled: false}}\n"
    )
    provider = ScriptedProvider(drafts_script([WEAK, ON_TOPIC, WEAK], seen), name="embedded")
    engine = StoryEngine.from_config(
        settings=parse_settings(settings_text, source="t.yaml"), providers={"embedded": provider}
    )
    async with engine:
        story = await engine.generate(PREMISE, scenes=1, seed=3)
    meta = story.meta["steps"]["scene.0.draft"]
    assert len(seen) == drafts and len(set(seen)) == drafts  # each draft its own seed
    assert meta["stage1_text"] == kept
    if drafts > 1:
        scores = [d["score"] for d in meta["drafts"]]
        assert scores[1] == max(scores) > scores[0]
        assert meta["seed"] == seen[1]


def test_a_bible_setting_with_no_words_becomes_the_premise_and_says_so() -> None:
    data = {
        "characters": [
            {
                "name": "Mara",
                "role": "the keeper",
                "description": "She keeps the lamp.",
                "pronouns": "she/her",
            }
        ],
        "setting": ";;;;;;;;;;;;;;＆＆＆＆＆＆＆!",
    }
    reviewed = review(StoryBible, data, Context(language="en", fallbacks=(("setting", PREMISE),)))
    assert StoryBible.model_validate(reviewed.data).setting == PREMISE
    assert [(f.rule, f.action) for f in reviewed.findings] == [("debris", "repaired")]
    assert "made from the premise" in reviewed.findings[0].message


def test_junk_in_long_prose_drops_its_sentence_and_never_cuts_the_rest() -> None:
    prose = (
        "Mara climbs the stairs. The log reads 2019-13-25T14:38. 07.628Z now. The sea is calm.\n\nShe waits."
    )
    result, found, _ = repaired(prose, "prose")
    assert result.endswith("The sea is calm.\n\nShe waits.") and "2019" not in result
    assert found == [("timestamp", "repaired")]


def test_text_that_is_junk_in_every_sentence_is_not_repaired_into_other_junk() -> None:
    text = "./fact.json:10, type: json. contains JSON or schema text; write plain words."
    result, found, _ = repaired(text, "fact")
    # what remains still holds junk, so its finding stays open: re-asked, else listed as kept
    assert ("debris", "reask") in found and "debris" in rules_of(result, "fact")


def test_two_beats_with_one_name_are_told_apart_by_code() -> None:
    data = copy.deepcopy(GOOD_PLOT)
    data["beats"][1]["name"] = "Arrival"
    data["beats"][2]["name"] = "arrival"
    findings: list[Finding] = []
    plot = validate_json_payload(json.dumps(data), PlotStructure, reviewing=EN, findings=findings)
    assert [b.name for b in plot.beats] == ["Arrival", "The Letter Warns Of", "Ana Keeps The Lamp", "Dawn"]
    assert [(f.rule, f.action) for f in findings] == [("duplicate_name", "repaired")] * 2


def test_beats_that_share_a_purpose_are_given_their_own_by_code() -> None:
    """Qwen2.5-0.5B (standard profile) gave two of three beats one purpose on all six attempts and
    the story was lost at its plot: the repeat is repaired, never fatal."""
    data = copy.deepcopy(GOOD_PLOT)
    data["beats"] = data["beats"][:3]
    data["beats"][1]["name"] = "As the wedding begins, they both take turns"
    data["beats"][2]["name"] = "Dawn"
    for beat in data["beats"]:
        beat["purpose"] = "to ensure everything is perfect before the wedding starts"
    findings: list[Finding] = []
    plot = validate_json_payload(json.dumps(data), PlotStructure, reviewing=EN, findings=findings)
    assert [b.purpose for b in plot.beats] == [
        "to ensure everything is perfect before the wedding starts",
        "As the wedding begins, they both take turns.",  # its name is a sentence
        "to ensure everything is perfect before the wedding starts, as Dawn.",
    ]
    assert [(f.rule, f.action) for f in findings] == [("duplicate_purpose", "repaired")] * 2


def test_offers_and_notes_to_the_user_are_meta_talk() -> None:
    # README command (a)'s scene 2, measured: the draft offered options instead of telling the scene
    draft = (
        "Here's a few more options to use: 1. The End: At the climax of the story, it was a moment. "
        "This is another example, using different wording that can be used as needed. Lionel smiled."
    )
    prose, found = reader_prose(draft)
    assert prose == "Lionel smiled." and [f.rule for f in found] == ["meta_talk"]


def test_a_word_no_language_holds_is_gibberish_and_its_sentence_is_dropped() -> None:
    """A run of letters longer than any word (SmolLM2's "Theeardoriliguadunzundulitamarkelenoycabra"
    in a novella's prose) is repaired away; a long German compound, English's long words and a
    Japanese sentence (no spaces at all) are words."""
    from storyengine.text.junk_rules import gibberish
    from storyengine.text.rules import Context

    junk = (
        "The keeper climbed the stairs. Bathroom: Theeardoriliguadunzundulitamarkelenoycabra. "
        "She lit the lamp."
    )
    hit = gibberish(junk, Context(language="en"))
    assert hit is not None and hit.repaired == "The keeper climbed the stairs. She lit the lamp."
    for language, text in [
        ("en", "The counterrevolutionaries met at the lighthouse, uncharacteristically quiet."),
        ("de", "Die Rindfleischetikettierungsüberwachungsaufgabe war ihr zu schwer. Sie lachte."),
        (
            "ja",
            "東京の灯台守の娘は父の借金と港長との確執を受け継いだが、彼女は毎晩ひとりで灯りをともし続け、嵐の夜にも決して火を絶やさなかった。",
        ),
    ]:
        assert gibberish(text, Context(language=language)) is None, language


def test_a_file_name_is_gibberish_but_an_abbreviation_is_not() -> None:
    """README command (a)'s scene setting began "Lighthouse-Dreaming-In-the-Maelstroms-2018-3.jpg,
    Thelana: …" and passed every rule; a file's name is not a story's word."""
    from storyengine.text.junk_rules import gibberish
    from storyengine.text.rules import Context

    english = Context(language="en")
    summary = "Lighthouse-Dreaming-In-the-Maelstroms-2018-3.jpg, Thelana: The Lamplighter 2019-2020."
    assert gibberish(summary, english) is not None
    hit = gibberish("She found the bottle at dawn. It held a photo named storm.JPG and a letter.", english)
    assert hit is not None and hit.repaired == "She found the bottle at dawn."
    assert gibberish("She wrote to Mr. Md. Rahman at St. Pdf Street. She slept.", english) is None
