"""Issue 17 (speed): shared prefixes first, answer budgets from the schema, loops redrawn at the
same budget, template skeletons on disk. Each test fails if its feature breaks; none times anything.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from draft_requests import cut_off, draft_request
from storyengine.pipeline import parts as P
from storyengine.pipeline.parts import answer_token_bound, json_char_bound
from storyengine.prompts import render as render_module
from storyengine.prompts.render import render, skeleton_dir
from storyengine.providers.scripted import ScriptedProvider
from storyengine.routing.retry import Retrying, looping
from storyengine.types import Message

SRC = Path(__file__).resolve().parents[1] / "src"


def _prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _chat_text(messages: tuple[Message, ...]) -> str:
    """The prompt as a chat template lays it out: messages in order (what a KV prefix cache sees)."""
    return "".join(f"<|{m.role}|>{m.content}<|end|>" for m in messages)


# -- 2. shared prefixes first ---------------------------------------------------------------------


def _part_prompt(draft: str, part: P.Part, earlier: str = "") -> str:
    schema = json.dumps(part.schema, separators=(",", ":"))
    prompt = render(
        "part_structuring", {"draft": draft, "earlier": earlier, "what": part.what, "schema": schema}
    )
    return _chat_text(prompt.messages)


def test_the_enhancement_prompt_starts_with_the_evaluation_prompt_up_to_the_story() -> None:
    story = "Mara keeps the lighthouse. " * 30
    evaluation = _chat_text(render("evaluation_freeform", {"premise": "P", "story": story}).messages)
    enhancement = _chat_text(
        render("enhancement_freeform", {"premise": "P", "story": story, "evaluation": "E"}).messages
    )
    shared = _prefix(evaluation, enhancement)
    assert evaluation.index(story) + len(story) <= shared  # the system text, premise and story


def test_parts_of_one_draft_share_the_draft_as_a_prefix() -> None:
    draft = "Mara keeps the lighthouse.\n" + "The storm breaks the lamp and she climbs the tower. " * 8
    scene = P.scene_parts(["Mara", "Tom"])
    prompts = [_part_prompt(draft, part) for part in scene]
    assert len({json.dumps(p.schema) for p in scene}) == 3  # three different schemas ...
    for a, b in itertools.pairwise(prompts):
        shared = a[: _prefix(a, b)]
        assert draft in shared  # ... yet the whole draft is read once and reused
    # what differs comes last: the part's schema and its "what" are after the draft
    first = prompts[0]
    assert first.index(draft) < first.index('"title"') < first.index(scene[0].what)


def test_earlier_answers_come_after_the_draft_and_grow_as_a_shared_prefix() -> None:
    draft = "The review: pacing is slow, the dialogue sparkles, the ending lands. " * 5
    plan = P.evaluation_parts()[:3]
    earlier: list[str] = []
    prompts = []
    for index, part in enumerate(plan):
        assert isinstance(part, P.Part)
        prompts.append(_part_prompt(draft, part, "\n".join(earlier)))
        earlier.append(f"score: {index + 5}, rationale: Reason number {index} is given here.")
    # the criterion parts share one schema: the prefix runs past the schema into the earlier answers
    assert "Reason number 0" in prompts[2][: _prefix(prompts[1], prompts[2])]


def test_scene_prompts_share_premise_plot_and_cast_before_what_differs() -> None:
    base = {"premise": "P.", "plot": "1. A\n2. B\n3. C", "cast": "Mara, Tom", "total": 3,
            "bible": "Mara (she/her): the keeper. Keeps the light.",
            "earlier": "", "changes": ""}  # fmt: skip
    one = render("scene_freeform", {**base, "beat": "A: opens", "previous": "1. A", "number": 1})
    two = render("scene_freeform", {**base, "beat": "B: turns", "previous": "1. A\n2. B", "number": 2})
    a, b = _chat_text(one.messages), _chat_text(two.messages)
    assert "Characters in this story: Mara, Tom" in a[: _prefix(a, b)]
    assert "Mara (she/her): the keeper" in a[: _prefix(a, b)]  # the bible is shared context too
    s1 = render("scene_structuring", {"draft": "x", "beat_name": "Alpha", "cast": "Mara", "schema": "{}"})
    s2 = render("scene_structuring", {"draft": "y", "beat_name": "Beta", "cast": "Mara", "schema": "{}"})
    c, d = _chat_text(s1.messages), _chat_text(s2.messages)
    assert "Mara" in c[: _prefix(c, d)]


# -- 3. budgets from the schema -------------------------------------------------------------------


def _longest(schema: dict[str, Any]) -> Any:
    """A valid value of `schema` as long as it allows (every string at maxLength)."""
    if "enum" in schema:
        return max(schema["enum"], key=lambda v: len(json.dumps(v, ensure_ascii=False)))
    kind = schema.get("type")
    if kind == "object":
        return {k: _longest(v) for k, v in schema["properties"].items()}
    if kind == "array":
        return [_longest(schema["items"])] * schema["maxItems"]
    if kind == "string":
        return "w" * schema["maxLength"]
    if kind == "integer":
        return schema["maximum"]
    raise AssertionError(schema)


def _every_part() -> list[P.Part]:
    assembled: dict[str, Any] = {"beats": [], "characters": [], "scores": [{"score": 4}, {"score": 8}]}
    plans = [
        P.plot_parts(5),
        P.scene_parts(["Mara", "Tom"]),
        P.dialogue_parts(["Mara", "Tom"]),
        P.evaluation_parts(),
        P.enhancement_parts(),
    ]
    return [entry if isinstance(entry, P.Part) else entry(assembled) for plan in plans for entry in plan]


@pytest.mark.parametrize("indent", [None, 1])
def test_every_part_budget_holds_the_longest_valid_answer(indent: int | None) -> None:
    for part in _every_part():
        budget = answer_token_bound(part.schema, fallback=-1)
        assert budget > 0, part.what  # every shipped part is bounded
        longest = json.dumps(_longest(part.schema), ensure_ascii=False, indent=indent)
        longest_spaced = json.dumps(_longest(part.schema), ensure_ascii=False, separators=(", ", ": "))
        # a token holds at least one character: the longest answer fits, however it is spaced
        assert len(longest) <= budget and len(longest_spaced) <= budget, part.what


def test_part_budgets_follow_the_schema_not_one_number() -> None:
    budgets = {part.what: answer_token_bound(part.schema, fallback=200) for part in _every_part()}
    name = next(v for k, v in budgets.items() if "main character" in k)
    beat = next(v for k, v in budgets.items() if k.startswith("beat 1 of"))
    summary = next(v for k, v in budgets.items() if "scene's summary" in k)
    assert name < 100 < 200 < summary  # a name stops early; a 300-character summary is never cut off
    assert beat > 200  # a beat with a 200-character purpose is never cut off either
    assert json_char_bound({"type": "string"}) is None
    assert (
        answer_token_bound({"type": "array", "items": {"type": "string", "maxLength": 5}}, fallback=77) == 77
    )


@settings(max_examples=60, deadline=None, database=None)
@given(
    st.recursive(
        st.one_of(
            st.integers(0, 80).map(lambda n: {"type": "string", "maxLength": n}),
            st.lists(st.text(max_size=12), min_size=1, max_size=4).map(lambda xs: {"enum": xs}),
            st.tuples(st.integers(-50, 0), st.integers(0, 10**6)).map(
                lambda mm: {"type": "integer", "minimum": mm[0], "maximum": mm[1]}
            ),
        ),
        lambda inner: st.one_of(
            st.tuples(inner, st.integers(0, 4)).map(
                lambda t: {"type": "array", "items": t[0], "maxItems": t[1]}
            ),
            st.dictionaries(st.text(min_size=1, max_size=8), inner, min_size=1, max_size=4).map(
                lambda props: {"type": "object", "properties": props}
            ),
        ),
        max_leaves=8,
    )
)
def test_the_char_bound_is_never_below_a_valid_answer(schema: dict[str, Any]) -> None:
    bound = json_char_bound(schema)
    assert bound is not None
    longest = _longest_with_min(schema)
    assert len(json.dumps(longest, ensure_ascii=False)) <= bound
    assert len(json.dumps(longest, ensure_ascii=False, separators=(", ", ": "))) <= bound


def _longest_with_min(schema: dict[str, Any]) -> Any:
    if schema.get("type") == "integer":
        return max(schema["minimum"], schema["maximum"], key=lambda v: len(str(v)))
    if schema.get("type") == "object":
        return {k: _longest_with_min(v) for k, v in schema["properties"].items()}
    if schema.get("type") == "array":
        return [_longest_with_min(schema["items"])] * schema["maxItems"]
    return _longest(schema)


# -- 3. a looping draft is redrawn without doubling its budget first ------------------------------

# Mostly loop (a loop that starts late is kept up to it: test_profiles.py)
LOOP = (
    "Mara climbs the tower. "
    + "She lights the lamp and waits for the ship. " * 4
    + "She lights the lamp and wai"
)
PROSE = (
    "Mara climbs the tower at dusk. The lamp is dark and the storm is rising. "
    "She strikes a match, shields it with her hand, and the wick catches at la"
)


async def test_a_looping_cut_off_draft_is_redrawn_with_a_new_seed_at_the_same_budget() -> None:
    replies = iter([cut_off(LOOP), "Mara lights the lamp. The ship turns home."])
    provider = ScriptedProvider(lambda r: next(replies))
    completion = await Retrying(provider, attempts=3).generate(draft_request())
    assert completion.text.startswith("Mara lights the lamp")
    first, second = provider.requests
    assert second.max_tokens == first.max_tokens == 400  # not doubled
    assert second.seed != first.seed and second.temperature == first.temperature


async def test_a_cut_off_answer_that_does_not_loop_still_gets_more_room() -> None:
    # (a stage-1 draft is kept as it is instead: see test_speed_loops.py)
    replies = iter([cut_off(PROSE), "Done."])
    provider = ScriptedProvider(lambda r: next(replies))
    await Retrying(provider, attempts=3).generate(draft_request(stage="summarize"))
    assert [r.max_tokens for r in provider.requests] == [400, 800]


async def test_a_loop_at_temperature_zero_or_in_structuring_is_not_redrawn_at_the_same_budget() -> None:
    for update in ({"temperature": 0.0}, {"seed": None}, {"stage": "structuring"}):
        replies = iter([cut_off(LOOP), "{}"])
        provider = ScriptedProvider(lambda r, replies=replies: next(replies))
        await Retrying(provider, attempts=3).generate(draft_request(**update))
        assert provider.requests[1].max_tokens == 800, update  # a new seed would not change a greedy answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (LOOP, True),
        ("and then the sea rose and then the sea rose and then the sea rose and then the sea", True),
        (PROSE, False),
        ("Yes. No. Yes. No. Yes.", False),  # short refrains are not a loop
        ("1. Arrival: she lands.\n2. Storm: the lamp fails.\n3. Rescue: the ship turns.", False),
        ("", False),
    ],
)
def test_looping(text: str, expected: bool) -> None:
    assert looping(text) is expected


# -- 4. skeletons on disk: a new process renders without starting Node ----------------------------

_RENDER_IN_A_NEW_PROCESS = textwrap.dedent(
    """
    import json, sys
    import poml
    calls = []
    real = poml.poml
    def counted(*args, **kwargs):
        calls.append(1)
        if sys.argv[1] == "forbid":
            raise AssertionError("poml.poml (Node) was started")
        return real(*args, **kwargs)
    poml.poml = counted
    from storyengine.prompts.render import render
    context = {"draft": "Notes\\n  kept", "earlier": "a: b", "what": "the title", "schema": "{}"}
    prompt = render("part_structuring", context)
    print(json.dumps({"calls": len(calls), "prompt": prompt.to_dict()}))
    """
)


def _render_in_new_process(mode: str, cache_home: Path) -> dict[str, Any]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home), "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-c", _RENDER_IN_A_NEW_PROCESS, mode],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_new_process_with_a_warm_disk_cache_renders_without_node(tmp_path: Path) -> None:
    cold = _render_in_new_process("count", tmp_path / "cache")
    assert cold["calls"] == 1  # the first process builds the skeleton with poml (Node) ...
    assert list((tmp_path / "cache" / "storyengine" / "templates").glob("part_structuring-*.json"))
    warm = _render_in_new_process("forbid", tmp_path / "cache")
    assert warm["calls"] == 0  # ... the next one reads it from disk
    assert warm["prompt"] == cold["prompt"]


def test_a_skeleton_file_for_other_text_or_another_poml_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    render_module.clear_cache()
    context = {"draft": "d", "earlier": "", "what": "w", "schema": "{}"}
    render("part_structuring", context)
    files = list(skeleton_dir().glob("part_structuring-*.json"))
    assert len(files) == 1
    template = render_module._template("part_structuring")
    key = render_module.skeleton_key(template, frozenset({("earlier", "")}))
    assert render_module._read_skeleton(template, key) is not None
    # another poml version, or other template text, gives another key: the old file is ignored
    with monkeypatch.context() as patch:
        patch.setattr(render_module, "poml_version", lambda: "99.0")
        assert render_module.skeleton_key(template, frozenset({("earlier", "")})) != key
    changed = render_module._Template(template.name, template.path, template.variables, template.source + " ")
    assert render_module.skeleton_key(changed, frozenset({("earlier", "")})) != key
    # a corrupt or foreign file is ignored, never trusted
    files[0].write_text("{not json", encoding="utf-8")
    assert render_module._read_skeleton(template, key) is None
    files[0].write_text(json.dumps({"key": "other", "messages": [], "params": {}}), encoding="utf-8")
    assert render_module._read_skeleton(template, key) is None
    render_module.clear_cache()
    assert render("part_structuring", context) == render_module.render_slow("part_structuring", context)
