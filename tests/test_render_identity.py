"""`render` (skeleton + substitution) gives exactly what `poml.poml()` gives (`render_slow`).

Each slow render starts Node (about a second), so the property tests run few examples.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import poml
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from storyengine.commands.templates import fixture_context
from storyengine.pipeline.steps import CONTRACT
from storyengine.prompts import render as render_module
from storyengine.prompts.render import RenderedPrompt, render, render_slow

FREEFORM = sorted(name for name in CONTRACT if name.endswith("_freeform"))
STRUCTURING = sorted(name for name in CONTRACT if name.endswith("_structuring"))
OTHERS = sorted(set(CONTRACT) - set(FREEFORM) - set(STRUCTURING))

TRICKY = [
    '<document src="/etc/hostname"/>',
    "<p>",
    "</p>",
    "</human-msg>",
    "<system-msg>",
    "<br/>",
    "{{ 1+1 }}",
    "{{ premise }}",
    "{{",
    "}}",
    "{",
    "}",
    "{% if x %}",
    "${x}",
    "&amp;",
    "&lt;",
    "&#x41;",
    "<![CDATA[",
    "]]>",
    "<!-- c -->",
    "\\",
    "\\n",
    '"',
    "'",
    "`",
    "```",
    "# ",
    "* ",
    "1. ",
    "NAME: line",
    "---",
    "\r\n",
    "\r",
    "\n",
    "\n\n",
    "\t",
    "  ",
    " ",
    "\u00a0",
    "\u2028",
    "\ufeff",
    "\u200b",
    "é",
    "中文",
    "😀",
    "\U000f0001",
    "\ue000",
    "\ue000premise\ue002",
    "\x00",
    "\x1b[31m",
]
_piece = st.one_of(st.sampled_from(TRICKY), st.text(max_size=24))
_text = st.lists(_piece, min_size=1, max_size=10).map("".join)
_long = st.tuples(_text, st.integers(40, 300)).map(lambda pair: (pair[0] + "·") * pair[1])
# Values a skeleton cannot hold (empty, blank, lone surrogate, beyond 2**53) are rarer, so that
# most examples exercise substitution; they check the fallback to poml.
_edge_text = st.sampled_from(["", " ", "\n \t", "\ufeff", "lone \ud800 half"])
_edge_int = st.sampled_from([0, 1, 2**53 - 1, 2**53 + 1, -(2**60)])
STR_VALUES = st.one_of(_text, _text, _text, _text, _long, _edge_text)
INT_VALUES = st.one_of(st.integers(-1000, 10**6), st.integers(1, 30), st.integers(1, 30), _edge_int)

SLOW = settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def contexts(name: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {var: INT_VALUES if kind is int else STR_VALUES for var, kind in CONTRACT[name].items()}
    )


def assert_identical(fast: RenderedPrompt, slow: RenderedPrompt) -> None:
    assert [(m.role, m.content) for m in fast.messages] == [(m.role, m.content) for m in slow.messages]
    assert fast.params == slow.params
    assert [type(v) for v in fast.params.values()] == [type(v) for v in slow.params.values()]
    assert fast == slow


class PomlCalls:
    count = 0


@pytest.fixture(scope="module", autouse=True)
def _count_poml_calls() -> Iterator[None]:
    real = poml.poml

    def counting(*args: Any, **kwargs: Any) -> Any:
        PomlCalls.count += 1
        return real(*args, **kwargs)

    render_module.warm()  # the skeletons with every variable set, so the statistics show substitution
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(render_module.poml, "poml", counting)
        yield


def check_identity(data: st.DataObject, family: list[str]) -> None:
    name = data.draw(st.sampled_from(family), label="template")
    context = data.draw(contexts(name), label="context")
    before = PomlCalls.count
    fast = render(name, context)
    event("render: filled a skeleton" if PomlCalls.count == before else "render: called poml")
    assert_identical(fast, render_slow(name, context))


@SLOW
@given(data=st.data())
def test_freeform_renders_are_identical_to_poml(data: st.DataObject) -> None:
    check_identity(data, FREEFORM)


@SLOW
@given(data=st.data())
def test_structuring_renders_are_identical_to_poml(data: st.DataObject) -> None:
    check_identity(data, STRUCTURING)


@SLOW
@given(data=st.data())
def test_summarize_and_reask_renders_are_identical_to_poml(data: st.DataObject) -> None:
    check_identity(data, OTHERS)


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_adversarial_values_fill_the_skeleton_exactly(name: str) -> None:
    render(name, fixture_context(name))  # builds the skeleton
    probe = fixture_context(name, probe=True)
    before = PomlCalls.count
    fast = render(name, probe)
    assert PomlCalls.count == before, "a warm template must render without poml"
    assert_identical(fast, render_slow(name, probe))
