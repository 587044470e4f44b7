"""Contract tests: adversarial model output through extract -> parse -> validate -> repair.

Every case asserts exact acceptance or rejection. Also: the decoding schema's shape, and
that an instance dumped from a valid model conforms to it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from storyengine.errors import SchemaValidationError
from storyengine.schemas import (
    EVALUATION_CRITERIA,
    Dialogue,
    Enhancement,
    Evaluation,
    PlotStructure,
    Scene,
    Story,
)
from storyengine.structuring import decoding_schema, extract_json, format_errors, validate_json_payload
from storyengine.text.review import Finding
from storyengine.text.rules import Context

BEATS = [
    {"name": "Arrival", "purpose": "Ana reaches the island", "tension": 2},
    {"name": "Storm", "purpose": "The storm cuts them off", "tension": 6},
    {"name": "Betrayal", "purpose": "Bo hides the radio", "tension": 8},
    {"name": "Climax", "purpose": "Ana confronts Bo at the lamp", "tension": 10},
    {"name": "Dawn", "purpose": "The ferry returns", "tension": 3},
]
GOOD = json.dumps({"structure_type": "three-act", "title": "The Lamp", "beats": BEATS}, indent=2)


def plot_json(**changes: Any) -> str:
    beats = [dict(b) for b in BEATS]
    for key, value in changes.items():
        index, field = key.split("_", 1)
        beats[int(index.removeprefix("b"))][field] = value
    return json.dumps({"structure_type": "three-act", "title": "The Lamp", "beats": beats})


def same_tensions() -> str:
    return json.dumps({"structure_type": "x", "title": "T", "beats": [{**b, "tension": 5} for b in BEATS]})


def copied_purposes() -> str:
    beats = [{**b, "purpose": "Things happen"} if i < 3 else b for i, b in enumerate(BEATS)]
    return json.dumps({"structure_type": "x", "title": "T", "beats": beats})


ACCEPTED = {
    "plain": GOOD,
    "compact": json.dumps(json.loads(GOOD)),
    "json fence": f"```json\n{GOOD}\n```",
    "bare fence": f"```\n{GOOD}\n```",
    "fence with prose around": f"Here you go:\n```JSON\n{GOOD}\n```\nAnything else?",
    "closed think block": f"<think>The user wants {{beats}}. Let me plan.</think>\n{GOOD}",
    "think block holding a draft object": '<think>{"structure_type": "draft"}</think>' + GOOD,
    "orphan closing think tag": f"so I will answer now.</think>\n\n{GOOD}",
    "prose before and after": f"Sure! Here is the plot:\n{GOOD}\nI hope this helps.",
    "prose with braces before": f"I used {{curly braces}} and [brackets] as asked: {GOOD}",
    "short example object before the answer": 'Format: {"name": "..."}\nAnswer: ' + GOOD,
    "BOM": "\ufeff" + GOOD,
    "BOM and whitespace": "\ufeff  \n" + GOOD + "\n\n",
    "trailing commas": GOOD.replace("2\n    }", "2,\n    }").replace("}\n  ]", "},\n  ]"),
    "single quotes": GOOD.replace('"', "'"),
    "missing comma between members": GOOD.replace('"tension": 2', '"tension": 2 "description": "calm"'),
    "unquoted keys": GOOD.replace('"structure_type"', "structure_type"),
    "line comments": GOOD.replace('"beats": [', '"beats": [ // five beats\n'),
    "python literals": GOOD.replace('"', "'").replace("'tension': 2", "'tension': 2, 'description': None"),
    "strings needing a strip": plot_json(b0_name="  Arrival  "),
    "tension at bounds": plot_json(b0_tension=1, b3_tension=10),
    "unknown extra key": plot_json(b0_mood="calm"),
}

REJECTED = {
    # (text, substring expected in format_errors)
    "empty": ("", "empty output"),
    "whitespace only": ("  \n\t ", "empty output"),
    "BOM only": ("\ufeff", "empty output"),
    "unclosed think block": (f"<think>Let me think about {GOOD[:80]}", "unfinished <think>"),
    "truncated object": (GOOD[: len(GOOD) // 2], "cut off"),
    "truncated mid string": (GOOD[: GOOD.index("confronts") + 4], "cut off"),
    "truncated inside a fence": ("```json\n" + GOOD[:-40] + "\n```", "cut off"),
    "top-level array": (f"[{GOOD}]", "must be one JSON object"),
    "array in a fence": (f"```json\n[{GOOD}, {GOOD}]\n```", "must be one JSON object"),
    "prose only": ("I am sorry, I cannot write that story.", "not valid JSON"),
    "empty object": ("{}", "beats: is required but missing"),
    "wrapped in another key": (json.dumps({"plot": json.loads(GOOD)}), "structure_type: is required"),
    "tension 0": (plot_json(b2_tension=0), "beats[2].tension"),
    "tension 11": (plot_json(b2_tension=11), "beats[2].tension"),
    "tension as string": (plot_json(b2_tension="7"), 'valid integer (got "7")'),
    "tension as float": (plot_json(b2_tension=7.0), "beats[2].tension"),
    "tension as word": (plot_json(b2_tension="high"), "beats[2].tension"),
    "name as number": (plot_json(b1_name=42), "beats[1].name"),
    "beats as object": (json.dumps({"structure_type": "x", "beats": BEATS[0]}), "beats"),
    "blank name": (plot_json(b1_name="   "), "beats[1].name: must not be blank"),
    "empty purpose": (plot_json(b4_purpose=""), "beats[4].purpose: must not be blank"),
    "duplicate beat names": (plot_json(b4_name="STORM"), "beats[1] and beats[4]"),
    "all-equal tensions": (same_tensions(), "a plot needs an arc"),
    "copied purposes": (copied_purposes(), "3 of 5 beats have the same purpose"),
    "duplicate key": (plot_json().replace('"tension": 2', '"tension": 2, "tension": 9'), "appears twice"),
    "too few beats": (json.dumps({"structure_type": "x", "beats": BEATS[:2]}), "at least 3"),
}


@pytest.mark.parametrize("text", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted(text: str) -> None:
    plot = validate_json_payload(text, PlotStructure)
    assert [b.name for b in plot.beats] == [b["name"] for b in BEATS]
    assert [b.tension for b in plot.beats][1:3] == [6, 8]
    assert plot.structure_type == "three-act"


@pytest.mark.parametrize(("text", "expected"), REJECTED.values(), ids=REJECTED.keys())
def test_rejected(text: str, expected: str) -> None:
    with pytest.raises(SchemaValidationError) as exc:
        validate_json_payload(text, PlotStructure)
    error = exc.value
    assert isinstance(error, ValueError)
    assert error.raw_text == text
    assert expected in format_errors(error), format_errors(error)
    json.dumps(error.validation_errors)  # JSON-safe


def test_repair_false_skips_the_repair_pass() -> None:
    text = ACCEPTED["trailing commas"]
    with pytest.raises(SchemaValidationError) as exc:
        validate_json_payload(text, PlotStructure, repair=False)
    assert exc.value.parse_error and "not valid JSON" in exc.value.parse_error
    assert exc.value.repaired_text is None
    assert len(validate_json_payload(text, PlotStructure).beats) == 5


def test_a_failed_repair_reports_the_repaired_text_and_its_errors() -> None:
    beats = "{'name': 'A', 'purpose': 'Ana.', 'tension': 1}, {'name': 'B', 'purpose': 'Bo.', 'tension': 99}"
    text = (
        "{'structure_type': 'x', 'title': 'T', 'beats': ["
        + beats
        + ", {'name': 'C', 'purpose': 'Cy.', 'tension': 3},]}"
    )
    with pytest.raises(SchemaValidationError) as exc:
        validate_json_payload(text, PlotStructure)
    error = exc.value
    assert error.parse_error is not None
    assert error.repaired_text is not None and json.loads(error.repaired_text)["structure_type"] == "x"
    assert [tuple(e["loc"]) for e in error.validation_errors] == [("beats", 1, "tension")]
    assert "after one repair pass" in str(error)


def test_valid_json_that_fails_validation_is_not_repaired() -> None:
    with pytest.raises(SchemaValidationError) as exc:
        validate_json_payload(plot_json(b0_tension=0), PlotStructure)
    assert exc.value.parse_error is None and exc.value.repaired_text is None


# -- other components, with validation context --

DIALOGUE = {"lines": [{"speaker": "Ana", "text": "Where is it?"}, {"speaker": "bo", "text": "Gone."}]}


def test_dialogue_speakers_checked_against_cast_from_context() -> None:
    text = f"```json\n{json.dumps(DIALOGUE)}\n```"
    dialogue = validate_json_payload(text, Dialogue, context={"cast": ["Ana", "Bo"]})
    assert [ln.speaker for ln in dialogue.lines] == ["Ana", "Bo"]
    with pytest.raises(SchemaValidationError) as exc:
        validate_json_payload(text, Dialogue, context={"cast": ["Ana", "Cy"]})
    assert "lines: speaker(s) 'bo' are not in this scene's cast" in format_errors(exc.value)
    # reviewed first, a line by someone outside the cast is dropped while another line remains
    findings: list[Finding] = []
    cast = {"cast": ["Ana", "Cy"]}
    reviewing = Context(language="en", cast=("Ana", "Cy"))
    kept = validate_json_payload(text, Dialogue, context=cast, reviewing=reviewing, findings=findings)
    assert [ln.speaker for ln in kept.lines] == ["Ana"]
    assert ("speaker_outside_cast", "dropped") in [(f.rule, f.action) for f in findings]


def test_dialogue_line_repeated_five_times_keeps_two() -> None:
    lines = [{"speaker": "Ana", "text": "No."}, *[{"speaker": "Bo", "text": "I said no."}] * 5]
    findings: list[Finding] = []
    kept = validate_json_payload(
        json.dumps({"lines": lines}), Dialogue, reviewing=Context(language="en"), findings=findings
    )
    assert [ln.text for ln in kept.lines] == ["No.", "I said no.", "I said no."]
    assert [f.rule for f in findings] == ["repeated_line"] * 3


def test_a_long_dialogue_line_said_again_is_dropped_while_two_lines_remain() -> None:
    """The fourth novella: "The new one is Ethan." twice in one scene's dialogue."""
    said = {"speaker": "Bo", "text": "The new one is Ethan."}
    lines = [said, {"speaker": "Ana", "text": "Who?"}, said, {"speaker": "Ana", "text": "Who?"}]
    findings: list[Finding] = []
    kept = validate_json_payload(
        json.dumps({"lines": lines}), Dialogue, reviewing=Context(language="en"), findings=findings
    )
    assert [ln.text for ln in kept.lines] == ["The new one is Ethan.", "Who?", "Who?"]  # short: twice
    assert [(f.rule, f.field, f.action) for f in findings] == [("repeated_line", "lines[2]", "dropped")]


def test_a_long_sentence_said_again_is_cut_from_its_line() -> None:
    """The fourth novella's last chapter: the line after "The new one is Ethan." began with it."""
    lines = [
        {"speaker": "Bo", "text": "The new one is Ethan."},
        {"speaker": "Ana", "text": "The new one is Ethan. He's a great person. Yes."},
        {"speaker": "Bo", "text": "Yes."},
    ]
    findings: list[Finding] = []
    kept = validate_json_payload(
        json.dumps({"lines": lines}), Dialogue, reviewing=Context(language="en"), findings=findings
    )
    assert [ln.text for ln in kept.lines] == ["The new one is Ethan.", "He's a great person. Yes.", "Yes."]
    assert [(f.rule, f.field, f.action) for f in findings] == [("repeated_line", "lines[1].text", "repaired")]


def test_a_line_that_only_talks_about_json_is_dropped_from_a_dialogue_that_can_spare_it() -> None:
    """The fifth novella's last chapter kept this line in two scenes after its re-ask."""
    junk = "This is a JSON object that I am not able to access. Please provide the JSON data you need."
    lines = [{"speaker": "Bo", "text": junk}, {"speaker": "Ana", "text": "The lamp is out."}]
    findings: list[Finding] = []
    kept = validate_json_payload(
        json.dumps({"lines": lines}), Dialogue, reviewing=Context(language="en"), findings=findings
    )
    assert [ln.text for ln in kept.lines] == ["The lamp is out."]
    assert ("debris", "lines[0]", "dropped") in [(f.rule, f.field, f.action) for f in findings]
    alone = validate_json_payload(
        json.dumps({"lines": lines[:1]}), Dialogue, reviewing=Context(language="en")
    )
    assert [ln.text for ln in alone.lines] == [junk]  # nothing to spare: kept, with its finding


def test_evaluation_missing_a_criterion_is_rejected() -> None:
    scores = [{"criterion": c, "score": 6, "rationale": f"{c} is fine"} for c in EVALUATION_CRITERIA[:4]]
    text = json.dumps({"scores": scores, "overall": 6, "summary": "ok"})
    with pytest.raises(SchemaValidationError) as exc:
        validate_json_payload(text, Evaluation)
    assert "scores: " in format_errors(exc.value)
    scores.append({"criterion": "Originality", "score": 7, "rationale": "fresh"})
    text = json.dumps({"scores": scores, "overall": 6, "summary": "ok"})
    assert validate_json_payload(text, Evaluation).scores[-1].criterion == "originality"


# -- format_errors --


def test_format_errors_is_short_even_with_many_errors() -> None:
    beats = [{"name": "", "purpose": "", "tension": 0} for _ in range(24)]
    with pytest.raises(SchemaValidationError) as exc:
        validate_json_payload(json.dumps({"structure_type": "", "beats": beats}), PlotStructure)
    text = format_errors(exc.value)
    assert len(text) <= 1200
    assert text.startswith("- structure_type: must not be blank\n- beats[0].name: must not be blank")
    assert text.splitlines()[-1].startswith("- … and ") and text.endswith(" more")


# -- extraction --


def test_extract_json_leaves_arrays_alone_and_strips_wrappers() -> None:
    assert extract_json('Here: [{"a": 1}] done') == '[{"a": 1}]'
    assert extract_json('\ufeff<think>x</think>```json\n{"a": "}"}\n```') == '{"a": "}"}'
    assert extract_json('{"a": "quote \\" and { brace"} tail {"b": 2}') == '{"a": "quote \\" and { brace"}'
    assert extract_json("no json here") == "no json here"


def test_think_tags_inside_the_payload_are_content() -> None:
    inner = '{"a": "</think> and <think>", "b": [1]}'
    assert extract_json(inner) == inner
    assert extract_json(f"<think>plan {{x}}</think>{inner}") == inner
    assert extract_json(f'reasoning {{"draft": "a much longer draft object"}} </think> {inner}') == inner
    assert extract_json(f'Okay. <think>{{"draft": "a much longer draft object"}}</think>\n{inner}') == inner


# -- property tests --

SAFE_PROSE = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters='{}[]"`<>\ufeff', exclude_categories=("Cs",)),
    max_size=60,
)
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=40) | (
    st.sampled_from(["</think>", "<think>", "```json", "{", '"}', "[", "\\", "{'a': 1}"])
)


@st.composite
def valid_plots(draw: st.DrawFn) -> PlotStructure:
    count = draw(st.integers(3, 8))
    # Every field holds a letter (a field of symbols only is debris); the rest is arbitrary text.
    names = draw(
        st.lists(
            TEXT.map(lambda s: "B" + s),
            min_size=count,
            max_size=count,
            unique_by=lambda s: " ".join(s.split()).casefold(),
        )
    )
    beats = [
        {
            "name": name,
            "purpose": f"P {draw(TEXT)} ({i})",
            "tension": draw(st.integers(1, 10)),
            **({"description": f"D {draw(TEXT)}."} if draw(st.booleans()) else {}),
        }
        for i, name in enumerate(names)
    ]
    data = {"structure_type": "S" + draw(TEXT), "beats": beats, "title": "T" + draw(TEXT)}
    try:
        return PlotStructure.model_validate(data)
    except ValidationError:
        assume(False)
        raise


WRAPPERS = [
    lambda j, p: j,
    lambda j, p: f"```json\n{j}\n```",
    lambda j, p: f"{p}\n{j}\n{p}",
    lambda j, p: f"<think>{p} {{plan}} </think>{j}",
    lambda j, p: f"\ufeff{p}</think>\n```\n{j}\n```\n{p}",
]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    plot=valid_plots(), prose=SAFE_PROSE, wrap=st.sampled_from(WRAPPERS), indent=st.sampled_from([None, 2])
)
def test_any_valid_plot_round_trips_through_wrappers(
    plot: PlotStructure, prose: str, wrap: Any, indent: Any
) -> None:
    dumped = json.dumps(plot.model_dump(mode="json"), indent=indent, ensure_ascii=indent is None)
    assert validate_json_payload(wrap(dumped, prose), PlotStructure) == plot


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(max_size=200) | st.builds(lambda a, b: a + GOOD[: len(GOOD) // 3] + b, st.text(), st.text())
)
def test_arbitrary_text_is_rejected_cleanly(text: str) -> None:
    with pytest.raises(SchemaValidationError):
        validate_json_payload(text, PlotStructure)


# -- the decoding schema --

ALL_MODELS: list[type[BaseModel]] = [PlotStructure, Scene, Dialogue, Evaluation, Enhancement, Story]
SUPPORTED = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "enum",
}


def walk(schema: Any) -> list[dict[str, Any]]:
    nodes = []
    if isinstance(schema, dict):
        nodes.append(schema)
        for value in schema.values():
            nodes += walk(value)
    elif isinstance(schema, list):
        for value in schema:
            nodes += walk(value)
    return nodes


def conform(instance: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """A small JSON Schema checker for exactly the keywords decoding_schema may emit."""
    assert set(schema) <= SUPPORTED, f"unsupported keywords at {path}: {set(schema) - SUPPORTED}"
    kinds = {"object": dict, "array": list, "string": str, "integer": int}
    kind = schema["type"]
    if not isinstance(instance, kinds[kind]) or (kind == "integer" and isinstance(instance, bool)):
        return [f"{path}: not {kind}"]
    problems = []
    if "enum" in schema and instance not in schema["enum"]:
        problems.append(f"{path}: {instance!r} not in enum")
    if kind == "string" and not schema.get("minLength", 0) <= len(instance) <= schema.get("maxLength", 1e9):
        problems.append(f"{path}: length {len(instance)}")
    if kind == "array":
        if not schema.get("minItems", 0) <= len(instance) <= schema.get("maxItems", 1e9):
            problems.append(f"{path}: {len(instance)} items")
        for i, item in enumerate(instance):
            problems += conform(item, schema["items"], f"{path}[{i}]")
    if kind == "object":
        missing = set(schema.get("required", [])) - set(instance)
        extra = (
            set(instance) - set(schema["properties"])
            if schema.get("additionalProperties") is False
            else set()
        )
        problems += [f"{path}: missing {m}" for m in missing] + [f"{path}: extra {e}" for e in extra]
        for key, value in instance.items():
            if key in schema["properties"]:
                problems += conform(value, schema["properties"][key], f"{path}.{key}")
    return problems


def required_only(plot: PlotStructure) -> dict[str, Any]:
    return plot.model_dump(exclude={"characters": True, "beats": {"__all__": {"description"}}})


def test_plot_schema_with_fixed_beat_count_validates_a_dumped_instance() -> None:
    schema = decoding_schema(PlotStructure, counts={"beats": (5, 5)})
    plot = validate_json_payload(GOOD, PlotStructure)
    assert conform(required_only(plot), schema) == []
    try:
        import jsonschema
    except ImportError:
        pass
    else:
        jsonschema.validate(required_only(plot), schema)
    four = PlotStructure.model_validate({"structure_type": "x", "title": "T", "beats": BEATS[:4]})
    assert conform(required_only(four), schema) == ["$.beats: 4 items"]
    # an optional field is not in the decoding schema: a model that writes it breaks the schema
    assert conform({**required_only(plot), "characters": ["Ana"]}, schema) == ["$: extra characters"]
    wrong = required_only(plot)
    wrong["beats"][0]["tension"] = 11
    assert conform(wrong, schema) == ["$.beats[0].tension: 11 not in enum"]


def test_plot_schema_shape() -> None:
    schema = decoding_schema(PlotStructure, counts={"beats": (5, 5), "characters": (2, 5)})
    beats = schema["properties"]["beats"]
    assert schema["required"] == ["structure_type", "beats", "title", "characters"]
    assert (beats["minItems"], beats["maxItems"]) == (5, 5)
    assert beats["items"]["required"] == ["name", "purpose", "tension"]
    assert beats["items"]["properties"]["tension"] == {"type": "integer", "enum": list(range(1, 11))}
    assert beats["items"]["properties"]["purpose"]["maxLength"] == 300
    assert beats["items"]["properties"]["name"]["maxLength"] == 80  # the field's own, smaller max
    assert schema["properties"]["title"]["maxLength"] == 200  # a story has a title: it is asked for
    assert "characters" not in decoding_schema(PlotStructure)["properties"]


def test_enums_restrict_strings_and_string_items_at_any_depth() -> None:
    dialogue = decoding_schema(Dialogue, enums={"speaker": ["Ana", "Bo"]}, counts={"lines": (2, 10)})
    line = dialogue["properties"]["lines"]["items"]
    assert line["properties"]["speaker"]["enum"] == ["Ana", "Bo"]
    assert set(line["properties"]) == {"speaker", "text"}
    scene = decoding_schema(Scene, enums={"characters": ["Ana", "Bo"]})
    assert scene["properties"]["characters"]["items"]["enum"] == ["Ana", "Bo"]
    evaluation = decoding_schema(Evaluation, enums={"criterion": list(EVALUATION_CRITERIA)})
    assert evaluation["properties"]["scores"]["items"]["properties"]["criterion"]["enum"] == list(
        EVALUATION_CRITERIA
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"counts": {"beat": (5, 5)}}, "beat"),
        ({"counts": {"structure_type": (1, 2)}}, "structure_type"),
        ({"counts": {"beats": (6, 5)}}, "min <= max"),
        ({"enums": {"speaker": []}}, "non-empty"),
        ({"enums": {"tension": ["1"]}}, "tension"),
    ],
)
def test_decoding_schema_rejects_options_that_name_no_field(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decoding_schema(PlotStructure, **options)


@settings(max_examples=60, deadline=None)
@given(model=st.sampled_from(ALL_MODELS), max_string=st.integers(1, 3000))
def test_decoding_schema_is_grammar_friendly(model: type[BaseModel], max_string: int) -> None:
    schema = decoding_schema(model, max_string=max_string)
    text = json.dumps(schema)
    assert "$ref" not in text and "$defs" not in text and "anyOf" not in text
    for node in walk(schema):
        if "type" not in node:
            continue
        assert set(node) <= SUPPORTED
        if node["type"] == "integer":
            assert node["enum"] and all(isinstance(v, int) for v in node["enum"])
        elif node["type"] == "array":
            assert isinstance(node["maxItems"], int) and node["maxItems"] >= node.get("minItems", 0)
        elif node["type"] == "string":
            assert node["minLength"] >= 1 and node["maxLength"] <= max(max_string, 11)
        elif node["type"] == "object" and "properties" in node:
            assert node["additionalProperties"] is False
            assert node["required"] == list(node["properties"])
