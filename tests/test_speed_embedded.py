"""KV reuse on the real embedded model (issue 17): interleaved calls keep their shared prefixes.

Counts come from llama.cpp's own counters (prompt tokens it really evaluated); nothing is timed.
"""

from __future__ import annotations

import json

import pytest

from storyengine.bench.story import probe_embedded
from storyengine.pipeline import parts as P
from storyengine.prompts.render import render
from storyengine.providers.embedded import EmbeddedProvider, LoadedModel
from storyengine.types import CompletionRequest

pytestmark = pytest.mark.model

LIGHTHOUSE = "Mara keeps the lighthouse on a rocky island. One stormy night she finds a bottle. " * 5
BAKERY = "Two bakers argue in a palace kitchen while the wedding cake slowly collapses. " * 5


def _request(draft: str, part: P.Part) -> CompletionRequest:
    schema = json.dumps(part.schema, separators=(",", ":"))
    prompt = render("part_structuring", {"draft": draft, "earlier": "", "what": part.what, "schema": schema})
    return CompletionRequest(
        messages=prompt.messages,
        temperature=0,
        seed=0,
        max_tokens=60,
        stop=tuple(prompt.params["stop"]),
        json_schema=part.schema,
        stage="structuring",
    )


async def _interleaved(provider: EmbeddedProvider, model: LoadedModel) -> list[tuple[str, int, int]]:
    scene = P.scene_parts(["Mara", "Tom"])
    model.llama.reset()  # start from nothing loaded
    out = []
    for draft, part in [
        (LIGHTHOUSE, scene[0]),
        (BAKERY, scene[0]),
        (LIGHTHOUSE, scene[1]),
        (BAKERY, scene[1]),
    ]:
        before = model.stats.prompt_tokens_evaluated
        completion = await provider.complete(_request(draft, part))
        out.append(
            (completion.text, completion.usage.prompt_tokens, model.stats.prompt_tokens_evaluated - before)
        )
    return out


async def test_interleaved_parts_reuse_their_drafts_kv_and_answer_the_same() -> None:
    provider = EmbeddedProvider()
    model = await provider.load()
    snapshots = model.snapshots
    assert snapshots is not None
    try:
        model.snapshots = model.llama.snapshots = None  # llama-cpp-python's one-slot prefix match only
        plain = await _interleaved(provider, model)
    finally:
        model.snapshots = model.llama.snapshots = snapshots
    snapshots.snapshots.clear()
    reused = await _interleaved(provider, model)
    # the same answers, greedy, with and without the snapshots
    assert [text for text, _, _ in reused] == [text for text, _, _ in plain]
    # each draft is evaluated once: the second part of each scene re-reads only its own tail
    for (_, sent, evaluated), (_, _, evaluated_plain) in zip(reused[2:], plain[2:], strict=True):
        assert evaluated < sent // 2
        assert evaluated < evaluated_plain
    assert all(evaluated <= sent for _, sent, evaluated in reused)


async def test_the_probe_measures_both_rates_and_leaves_the_model_clean() -> None:
    provider = EmbeddedProvider()
    model = await provider.load()
    rates = probe_embedded(model, runs=1)
    assert rates["prefill_tps"] > 0 and rates["decode_tps"] > 0
    assert rates["prompt_tokens"] == 256 and rates["decode_tokens"] == 64
    assert model.llama.n_tokens == 0
