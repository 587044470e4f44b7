"""The sanity rules: on the models, on the one-shot path, in parts, and re-asked in the pipeline.

Each rule is fed the adversarial answers that were seen from real models (issue 13): JSON
debris, names that are not names, dialogue that is a list or a stage direction, word loops,
fields cut off mid-word, copied rationales and suggestions, a missing title. Every test fails
when its rule is removed; the names a rule must accept (José, O'Neil, Zoë, Mary-Jane) are
tested alongside.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError
from storyengine.sanity import (
    cut_off_problem,
    debris_problem,
    fragment,
    loop_problem,
    person_name_problem,
    similar,
    speech_problem,
)

from storyengine.config import parse_settings
from storyengine.errors import SchemaValidationError
from storyengine.pipeline.engine import StoryEngine
from storyengine.providers.fake_story import story_script
from storyengine.providers.scripted import ScriptedProvider
from storyengine.schemas import (
    EVALUATION_CRITERIA,
    Dialogue,
    DialogueLine,
    Enhancement,
    Evaluation,
    PlotStructure,
    Scene,
    Story,
)
from storyengine.structuring import format_errors, validate_json_payload
from storyengine.types import CompletionRequest

PREMISE = "A lighthouse keeper finds a message in a bottle written by her future self."

# -- the rules, one by one --


@pytest.mark.parametrize(
    "name",
    [
        "José",
        "O'Neil",
        "Zoë",
        "Mary-Jane",
        "Tom Reed",
        "Dr. Ada Lovelace",
        "Ludwig van Beethoven",
        "d'Artagnan",
        "McAllister",
        "Ana",
        "Bo",
        "Li Wei",
    ],
)
def test_real_names_pass(name: str) -> None:
    assert person_name_problem(name) is None
    assert PlotStructure.model_fields["characters"]  # the field exists
    scene = Scene.model_validate(
        {"title": "T", "setting": "A room.", "summary": "They talk.", "characters": [name]}
    )
    assert scene.characters == [name]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("1", "has no words"),
        ("The New", "is a description, not a name"),
        ("A lighthouse keeper", "is a description, not a name"),
        ("a bottle written by her future self", "one to four words"),
        ("NAME: Sarah", "letters only"),
        ("Sarah, the keeper", "letters only"),
        ("Narrator", "placeholder"),
        ("Person A", "placeholder"),
        ("Sarah 2", "letters only"),
        ("{ ", "JSON syntax"),
    ],
)
def test_non_names_are_rejected_with_a_reason(name: str, reason: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Scene.model_validate(
            {"title": "T", "setting": "A room.", "summary": "They talk.", "characters": [name]}
        )
    assert reason in str(exc.value)


def test_a_lower_case_name_is_capitalised_not_rejected() -> None:
    assert DialogueLine.model_validate({"speaker": "mary-jane", "text": "Hi."}).speaker == "Mary-Jane"


@pytest.mark.parametrize(
    "text",
    ["][", "Lighthouse ][ keeper", '"title": "x"', "A quiet harbor }", "{ the lamp", 'It said \\"no\\".'],
)
def test_json_debris_is_rejected(text: str) -> None:
    assert debris_problem(text) is not None
    with pytest.raises(ValidationError, match=r"JSON syntax|has no words"):
        Scene.model_validate({"title": "T", "setting": text, "summary": "They talk.", "characters": ["Ana"]})


@pytest.mark.parametrize(
    "text",
    [  # SmolLM2's enhancement, measured (bench completion): the schema and code in a suggestion
        "theo-1.1,target:256,problem:13,minLength:70,maxLength:489,required:true,moreOptions:null.",
        "addError()' , 32:4, 33:5, 34:6, 35:7, 36:8, 37:9, 38:10.",
        "Keep every maxItems: 4 of them.",
        "2019-07-31T14:58:56.143.14.BREAK;Thelma is a great example of a keeper.",
        # SmolLM2's dialogue lines, measured (bench story --seed 5): talk about the format itself
        "This is a JSON object that matches the schema you provided.",
        "This is a json object that has multiple properties, including one with the enum.",
        # SmolLM2's scene setting and summary, measured (bench story --seed 5)
        "Amaranthakeh, Greece 2018-04-30 at 1:57:59.633333 (UTC +1), Ares Olympus.",
        "A rose by the color of the month (tension 2/10). The stories unfold.",
    ],
)
def test_schema_and_code_text_is_rejected(text: str) -> None:
    assert debris_problem(text) is not None
    with pytest.raises(ValidationError, match="schema or code text"):
        Scene.model_validate({"title": "T", "setting": "A room.", "summary": text, "characters": ["Ana"]})


@pytest.mark.parametrize(
    "text",
    [
        "The ferry left at 10:30, and the bell rang.",
        "Her minimum was ten coins.",
        "It is required: bring a lamp.",
        "The Jasons and the Enumclaw ferry left on the schemer's tide.",
    ],
)
def test_plain_text_with_numbers_and_colons_is_not_debris(text: str) -> None:
    assert debris_problem(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "No no no nah naw no yes no no no no.",
        "I am here. I am here. I am here.",
        "The sea the sea the sea the sea.",
        "we go we go we go we go now.",
        "and then the light, and then the light, and then the light went out.",
    ],
)
def test_loops_inside_a_field_are_rejected(text: str) -> None:
    assert loop_problem(text) is not None
    with pytest.raises(ValidationError, match=r"loop|same few words"):
        Enhancement.model_validate(
            {
                "suggestions": [{"target": "Scene 1", "problem": "It drags.", "change": "Cut it."}],
                "summary": text,
            }
        )


@pytest.mark.parametrize(
    "text",
    [
        "No, no, no!",
        "I know, I know, I know.",
        "Ha ha ha.",
        "The storm came back, as storms do, and the keeper waited.",
    ],
)
def test_speech_that_repeats_for_effect_is_not_a_loop(text: str) -> None:
    assert loop_problem(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "She lights the fire in the fm",
        "She lights the fire in the fm.",
        "It was accessible to a.",
        "The keeper climbs to the",
        "They argue about the compl",
        "He reads the lett",
        "Ana and Bo,",
        "The ship comes wh",
    ],
)
def test_prose_cut_off_mid_word_or_sentence_is_rejected(text: str) -> None:
    assert cut_off_problem(text) is not None
    with pytest.raises(ValidationError, match=r"cut off|mid-sentence"):
        Scene.model_validate({"title": "T", "setting": "A room.", "summary": text, "characters": ["Ana"]})


@pytest.mark.parametrize(
    "text",
    [
        "Ana meets Bo",
        "The top of the lighthouse at night",
        "She waits.",
        "Wait—",
        'He says "go"',
        "It is 1920",
        "They sail at dawn",
        "Nobody comes back (at first)",
        "And then, silence...",
    ],
)
def test_finished_prose_without_a_full_stop_is_accepted(text: str) -> None:
    assert cut_off_problem(text) is None


@pytest.mark.parametrize(
    ("field", "given", "kept"),
    [  # SmolLM2, measured: a scene title and a bible setting that end on a comma, every re-ask alike
        ("title", "A Note: Sets up the lighthouse,", "A Note: Sets up the lighthouse"),
        ("title", "The Beat ,", "The Beat"),
        (
            "setting",
            "In this realm, where imagination knows no end,.",
            "In this realm, where imagination knows no end.",
        ),
        ("setting", "They wait for the tide ; !", "They wait for the tide!"),
        ("setting", "Wait, then go.", "Wait, then go."),
    ],
)
def test_a_comma_left_dangling_at_the_end_is_dropped_not_re_asked(field: str, given: str, kept: str) -> None:
    data = {"title": "T", "setting": "A room.", "summary": "They talk.", "characters": ["Ana"], field: given}
    assert getattr(Scene.model_validate(data), field) == kept


def test_titles_and_names_are_not_checked_for_cut_offs() -> None:
    scene = Scene.model_validate(
        {
            "title": "A Message in a Botte",
            "setting": "A room.",
            "summary": "They talk.",
            "characters": ["Ana"],
        }
    )
    assert scene.title == "A Message in a Botte"


SENTENCES = [
    "The keeper climbs the spiral stairs every evening to light the great lamp.",
    "A storm rolls in from the west and the ferry does not come back to the island.",
    "She finds a green bottle wedged between the rocks below the lighthouse.",
    "Inside is a letter in her own handwriting, dated thirty years from now.",
    "Her brother laughs at first, but the letter knows things nobody could know.",
    "They argue in the kitchen while the radio crackles with warnings about the weather.",
    "At midnight the lamp fails, and the keeper must choose whether to trust the letter.",
    "In the morning the sea is calm, and a fishing boat waits at the harbour wall.",
]


def test_the_cut_off_rule_measured_on_every_truncation_of_real_sentences() -> None:
    """Conservative and measurable: no complete sentence or word flagged; most truncations caught."""
    assert all(cut_off_problem(s) is None for s in SENTENCES)
    vocabulary = {w.strip(".,").casefold() for s in SENTENCES for w in s.split()}
    vocabulary |= set(
        "lantern harbour compass garden window promise ladder orchard attic mirror kettle tower engine "
        "signal winter silence children quietly remembers breath wrong right midnight strength month "
        "length world girl owl sign reign campaign heroism prism clasp crisp doubt climb tomb thumb kept "
        "add odd egg inn err app aww shh hmm".split()
    )
    flagged = sorted(w for w in vocabulary if fragment(w))
    assert flagged == [], flagged
    mid_word = [
        s[:cut]
        for s in SENTENCES
        for cut in range(8, len(s) - 1)
        if s[cut - 1].isalpha() and s[cut].isalpha()
    ]
    caught = sum(1 for t in mid_word if cut_off_problem(t) is not None)
    # Many truncations end in a real word ("keep" of "keeper", "light" of "lighthouse") that no
    # rule can flag without context; measured 0.475 on these sentences.
    assert caught / len(mid_word) >= 0.45, caught / len(mid_word)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("NAME: Sarah, the lighthouse keeper. NAME: John, her brother.", "list of labels"),
        ("CHARACTER: the keeper", "list of labels"),
        ("(walks to the window)", "stage direction"),
        ("*sighs deeply*", "stage direction"),
        ("[pause]", "stage direction"),
        ("the keeper of the glass door", "describes something"),
        ("- the lamp\n- the bottle", "list"),
    ],
)
def test_dialogue_that_is_not_speech_is_rejected(text: str, reason: str) -> None:
    assert speech_problem(text) is not None
    with pytest.raises(ValidationError) as exc:
        Dialogue.model_validate(
            {"lines": [{"speaker": "Ana", "text": text}, {"speaker": "Bo", "text": "Yes."}]}
        )
    assert reason in str(exc.value)


@pytest.mark.parametrize(
    "text",
    [
        "Where is the radio?",
        "the lamp! Look at the lamp!",
        "Listen: the tide is turning.",
        "a ship, I think.",
        "Sarah, wait.",
    ],
)
def test_speech_passes(text: str) -> None:
    assert speech_problem(text) is None


def test_a_line_labelled_with_another_speakers_name_is_rejected_with_the_cast() -> None:
    data = {"lines": [{"speaker": "Bo", "text": "Ana: where is it?"}, {"speaker": "Bo", "text": "Gone."}]}
    with pytest.raises(ValidationError, match="starts with 'Ana:'"):
        Dialogue.model_validate(data, context={"cast": ["Ana", "Bo"]})


def test_a_line_labelled_with_its_own_speaker_keeps_only_the_words() -> None:
    data = {"lines": [{"speaker": "Ana", "text": " ana : where is it?"}, {"speaker": "Bo", "text": "Gone."}]}
    dialogue = Dialogue.model_validate(data, context={"cast": ["Ana", "Bo"]})
    assert [line.text for line in dialogue.lines] == ["where is it?", "Gone."]


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
    """The review of a story must not fail the story: a copy is a note, and the scores no verdict."""
    same = "The story is good and the characters are interesting to read about."
    rationales = [same, "The pace is even.", same + "!", "The lines sound real.", "A fresh idea."]
    marked = Evaluation.model_validate(evaluation(rationales))
    assert marked.reliable is False
    assert marked.notes == [
        "the rationales for coherence and pacing are the same sentence: the model did not reason about "
        "each criterion"
    ]
    near = [same, "The pace is even.", "The story is good and the characters are interesting to read.",
            "The lines sound real.", "A fresh idea."]  # fmt: skip
    assert similar(near[0], near[2])
    assert Evaluation.model_validate(evaluation(near)).reliable is False
    distinct = ["Events follow.", "People feel real.", "It moves.", "Lines sound spoken.", "Fresh."]
    assert Evaluation.model_validate(evaluation(distinct)).reliable is True


def test_one_score_for_every_criterion_is_kept_but_marked_unreliable() -> None:
    rationales = ["Events follow.", "People feel real.", "It moves.", "Lines sound spoken.", "Fresh."]
    marked = Evaluation.model_validate({**evaluation(rationales, (10,) * 5), "overall": 10})
    assert marked.reliable is False and "same score" in marked.notes[0]
    again = Evaluation.model_validate(marked.model_dump())
    assert again.notes == marked.notes  # the note is not added twice
    assert Evaluation.model_validate(evaluation(rationales)).reliable is True


def test_copied_suggestions_and_debris_targets_are_rejected() -> None:
    change = "Give the keeper a clear reason to climb the tower that night."
    suggestions = [
        {"target": "Scene 1", "problem": "The start is slow.", "change": change},
        {"target": "Scene 2", "problem": "The middle sags.", "change": change.replace("clear", "clear,")},
    ]
    with pytest.raises(ValidationError, match="same change"):
        Enhancement.model_validate({"suggestions": suggestions, "summary": "Fix the start."})
    suggestions = [{"target": "][", "problem": "The start is slow.", "change": change}]
    with pytest.raises(ValidationError, match="JSON syntax"):
        Enhancement.model_validate({"suggestions": suggestions, "summary": "Fix the start."})


# -- the one-shot path: whole objects through validate_json_payload --

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


def _plot_with(change: Callable[[dict[str, Any]], None]) -> str:
    data = copy.deepcopy(GOOD_PLOT)
    change(data)
    return json.dumps(data)


ONE_SHOT = {
    "structure type debris": (lambda d: d.update(structure_type="]["), "structure_type"),
    "beat named 1": (lambda d: d["beats"][1].update(name="1"), "beats[1].name"),
    "setting ending in a brace": (
        lambda d: d["beats"][0].update(purpose="Ana finds the bottle }"),
        "purpose",
    ),
    "a phrase as a character": (
        lambda d: d.update(characters=["A lighthouse keeper", "Bo"]),
        "characters[0]",
    ),
    "title missing": (lambda d: d.pop("title"), "title"),
    "purpose cut off": (
        lambda d: d["beats"][2].update(purpose="Ana keeps the lamp burning in the fm"),
        "purpose",
    ),
    "looping purpose": (
        lambda d: d["beats"][3].update(purpose="No no no nah naw no yes no no no no."),
        "purpose",
    ),
}


def test_the_good_one_shot_plot_passes() -> None:
    assert validate_json_payload(json.dumps(GOOD_PLOT), PlotStructure).title == "The Bottle"


@pytest.mark.parametrize(("change", "where"), ONE_SHOT.values(), ids=ONE_SHOT.keys())
def test_one_shot_answers_breaking_a_rule_are_rejected_with_the_field_named(
    change: Callable[[dict[str, Any]], None], where: str
) -> None:
    with pytest.raises(SchemaValidationError) as exc:
        validate_json_payload(_plot_with(change), PlotStructure)
    assert where in format_errors(exc.value)


# -- the pipeline: an adversarial answer is re-asked with its reason, on both paths --


def engine_for(
    script: Callable[[CompletionRequest], str], *, in_parts: bool
) -> tuple[StoryEngine, ScriptedProvider]:
    settings = parse_settings(
        f"""
providers:
  embedded: {{type: embedded, context_window: 8192, profile: {"tiny" if in_parts else "standard"}}}
retry: {{attempts: 2, backoff_initial: 0, backoff_max: 0}}
""",
        source="test.yaml",
    )
    provider = ScriptedProvider(script, name="embedded", structured_mode="grammar")
    return StoryEngine.from_config(settings=settings, providers={"embedded": provider}), provider


def adversary(
    component: str, key: str, bad: Any, reason: str, *, alone: bool = False
) -> tuple[Callable[[CompletionRequest], str], list[str]]:
    """story_script, except that `key` of `component`'s structured answer is `bad` until a re-ask
    shows the model `reason` (with `alone`, only in answers holding `key` alone: one part).
    Returns the script and the re-ask prompts seen."""
    reasks: list[str] = []

    def script(request: CompletionRequest) -> str:
        answer = story_script(request)
        if request.component != component or request.stage != "structuring":
            return answer
        shown = [m.content for m in request.messages if reason in m.content]
        if shown:
            reasks.append(shown[-1])
            return answer
        data = json.loads(answer)
        if alone and set(data) != {key}:
            return answer
        if _replace(data, key, bad):
            return json.dumps(data)
        return answer

    return script, reasks


def _replace(data: Any, key: str, bad: Any) -> bool:
    if isinstance(data, dict):
        if key in data:
            data[key] = bad
            return True
        return any(_replace(v, key, bad) for v in data.values())
    if isinstance(data, list):
        return any(_replace(v, key, bad) for v in data)
    return False


CASES = {
    "cast of phrases": (
        "plot",
        "characters",
        ["A lighthouse keeper", "a bottle written by her future self"],
        "not a name",
    ),
    "a structure type of debris": ("plot", "structure_type", "][", "JSON syntax"),
    "a summary cut off": ("scene", "summary", "Mara lights the fire in the fm", "cut off mid-word"),
    "a setting ending in a brace": ("scene", "setting", "The lighthouse at night }", "JSON syntax"),
    "a list as dialogue": (
        "dialogue",
        "text",
        "NAME: Sarah, the lighthouse keeper. NAME: John, her brother.",
        "list of labels",
    ),
    "a stage direction as dialogue": (
        "dialogue",
        "text",
        "(the keeper of the glass door)",
        "stage direction",
    ),
    "a looping enhancement": ("enhancement", "summary", "No no no nah naw no yes no no no no.", "loop"),
}


@pytest.mark.parametrize("in_parts", [False, True], ids=["one-shot", "in-parts"])
@pytest.mark.parametrize(("component", "key", "bad", "reason"), CASES.values(), ids=CASES.keys())
async def test_an_adversarial_answer_is_re_asked_with_its_reason(
    component: str, key: str, bad: Any, reason: str, in_parts: bool
) -> None:
    if in_parts and key in ("characters", "structure_type"):
        # in parts a name is one capitalised word by its pattern and the type an enum; the rule is
        # checked where the part's answer is validated all the same
        key = "name" if key == "characters" else key
        bad = "A lighthouse keeper" if key == "name" else bad
        reason = "is a description, not a name" if key == "name" else reason
    script, reasks = adversary(component, key, bad, reason, alone=in_parts and key == "name")
    engine, _ = engine_for(script, in_parts=in_parts)
    async with engine:
        story = await engine.generate(PREMISE, scenes=1, seed=3)
    assert reasks, f"the re-ask never showed the model {reason!r}"
    dumped = json.dumps(story.model_dump(mode="json")["scenes"]) + json.dumps(
        {k: v for k, v in story.model_dump(mode="json").items() if k in ("plot", "enhancement")}
    )
    assert json.dumps(bad)[1:-1] not in dumped
    Story.model_validate(story.model_dump(mode="json"))
