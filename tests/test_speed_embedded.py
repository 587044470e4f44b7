"""KV reuse on the real embedded model (issue 17): interleaved calls keep their shared prefixes;
free writing is stopped at its first loop.

Counts come from llama.cpp's own counters (prompt tokens it really evaluated); nothing is timed.
"""

from __future__ import annotations

import json

import pytest

from storyengine.bench.story import probe_embedded
from storyengine.config import EmbeddedProviderSettings
from storyengine.pipeline import parts as P
from storyengine.prompts.render import render
from storyengine.providers.base import LOOP_STOP
from storyengine.providers.embedded import EmbeddedProvider, LoadedModel
from storyengine.text.loops import loop_start
from storyengine.types import CompletionRequest, Message

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
        evaluated = model.stats.prompt_tokens_evaluated - before
        # the call's own record says what llama.cpp's counter says it reused
        assert completion.usage.prompt_tokens_reused == completion.usage.prompt_tokens - evaluated
        out.append((completion.text, completion.usage.prompt_tokens, evaluated))
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
    assert reused[0][1] == reused[0][2]  # nothing loaded: the first call reuses nothing
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


def _story_request(prompt: str, **update: object) -> CompletionRequest:
    return CompletionRequest(
        messages=(Message(role="user", content=prompt),), temperature=0.0, seed=0, max_tokens=300, **update
    )  # type: ignore[arg-type]


async def test_a_runaway_loop_is_stopped_where_it_starts_on_the_real_model() -> None:
    model = await EmbeddedProvider().load()
    # repeat_penalty < 1 rewards repeating: SmolLM2 then loops at once ("the market, the market, ...")
    kwargs = {
        "messages": [{"role": "user", "content": "Write a story about a baker."}],
        "temperature": 0.0,
        "seed": 0,
        "max_tokens": 300,
        "repeat_penalty": 0.6,
    }
    model.chat(dict(kwargs), None)  # from here on every call re-reads the same prompt from the KV cache
    ran_on = model.chat(dict(kwargs), None)
    stopped = model.chat(dict(kwargs), None, stop_loops=True)
    assert ran_on["choices"][0]["finish_reason"] == "length"
    assert loop_start(ran_on["choices"][0]["message"]["content"]) is not None
    choice = stopped["choices"][0]
    assert choice["finish_reason"] == LOOP_STOP
    assert stopped["usage"]["completion_tokens"] < 100  # not the 300 the loop would have taken
    assert choice["message"]["content"] and loop_start(choice["message"]["content"]) is None
    # the model is left consistent: the next call answers as it would have anyway
    again = model.chat(dict(kwargs), None)
    assert again["choices"][0]["message"]["content"] == ran_on["choices"][0]["message"]["content"]


async def test_the_provider_stops_loops_in_free_writing_only() -> None:
    provider = EmbeddedProvider("embedded", EmbeddedProviderSettings(type="embedded", repeat_penalty=1.0))
    prompts = ["Write a long story about a lighthouse.", "Describe a royal wedding cake."]
    free = [await provider.complete(_story_request(p)) for p in prompts]
    assert any(c.finish_reason == LOOP_STOP for c in free)  # SmolLM2 without its repeat penalty loops
    for completion in free:
        if completion.finish_reason == LOOP_STOP:
            assert completion.usage.completion_tokens < 300 and loop_start(completion.text) is None
    structuring = [await provider.complete(_story_request(p, stage="structuring")) for p in prompts]
    assert all(c.finish_reason != LOOP_STOP for c in structuring)  # JSON is never cut by the watch
