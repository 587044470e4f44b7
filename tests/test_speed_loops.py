"""Issue 17 (speed), thrown-away tokens: a runaway loop is stopped while it is generated, a draft
merely cut off at max_tokens is kept, and the bench counts every draft thrown away. Each test
fails if its feature breaks; none times anything and none needs the real model."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from draft_requests import cut_off, draft_request
from storyengine.bench.story import token_accounting
from storyengine.config import EmbeddedProviderSettings
from storyengine.pipeline.engine import StoryEngine
from storyengine.providers.base import LOOP_STOP
from storyengine.providers.embedded import (
    EmbeddedProvider,
    LoadedModel,
    LoopWatch,
    _prefix_reusing,
    stop_at_loop,
)
from storyengine.providers.fake_story import story_script
from storyengine.providers.scripted import ScriptedProvider
from storyengine.routing.retry import Retrying
from storyengine.text.loops import loop_start
from storyengine.types import Completion, CompletionRequest

LOOP = "Mara climbs the tower. The lamp is dark. " + "She lights the lamp and waits for the ship. " * 3
PAIR = "The storm rises over the sea. Mara holds the rope. " * 2 + "The storm rises"
PAIR_OPEN = "The storm rises over the sea. Mara holds the rope. The storm rises over the sea. Mara holds"
PROSE = (
    "Mara climbs the tower at dusk. The lamp is dark and the storm is rising. She strikes a match, "
    "shields it with her hand, and the wick catches. Far out, a ship answers with its lantern. "
    '"We have to hurry," Tom says. Mara nods. "We have to hurry," she says again, softer now.'
)

# -- the loop detector ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "head"),
    [
        # a sentence said a third time: the loop starts at its second time
        (LOOP, "Mara climbs the tower. The lamp is dark. She lights the lamp and waits for the ship. "),
        # two sentences said again in order, the second one finished
        (PAIR + " over the sea. Mara", "The storm rises over the sea. Mara holds the rope. "),
        # a phrase in a row, no full stops
        ("and then the sea rose and then the sea rose and then the sea rose", "and then the sea rose "),
        ("She said no no no no to the sea", "She said no "),
        # a run of six words said a third time, not in a row
        (
            "the ship sails into the dark bay, the ship sails into the dark bay and "
            "slowly the ship sails into the dark bay",
            "the ship sails into the dark bay, ",
        ),
    ],
)
def test_loop_start_finds_where_a_loop_begins(text: str, head: str) -> None:
    start = loop_start(text)
    assert start is not None
    assert text[:start] == head


@pytest.mark.parametrize(
    "text",
    [
        PROSE,  # a line of dialogue said twice is not a loop
        PAIR_OPEN,  # the repeated pair's second sentence is not finished yet: not a loop yet
        "She lights the lamp and waits. She lights the lamp and waits. She lights the la",
        "Yes. No. Yes. No. Yes. No.",  # refrains of short sentences
        "1. Arrival: she lands.\n2. Storm: the lamp fails.\n3. Rescue: the ship turns home.",
        "",
    ],
)
def test_loop_start_leaves_prose_and_unfinished_repeats_alone(text: str) -> None:
    assert loop_start(text) is None


SENTENCES = [
    "The storm rises over the sea.",
    "Mara holds the rope.",
    "Tom runs to the lamp room.",
    "A ship answers with its lantern.",
    "Nobody speaks.",
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(SENTENCES), max_size=14), st.sampled_from(["", " The sto", "\n"]))
def test_what_comes_before_a_loop_does_not_loop(picked: list[str], tail: str) -> None:
    text = " ".join(picked) + tail
    start = loop_start(text)
    if start is not None:
        assert loop_start(text[:start]) is None


# -- the watch that stops generation -------------------------------------------------------------

WORDS = ["She", " lights", " the", " lamp", ".", " Tom", " waits", " by", " door", "\n"]


def _tokens(text_pieces: list[str]) -> list[int]:
    return [WORDS.index(p) for p in text_pieces]


def _detokenize(tokens: list[int]) -> bytes:
    return "".join(WORDS[t] for t in tokens).encode()


def _looping_tokens(times: int) -> list[int]:
    sentence = ["She", " lights", " the", " lamp", "."]
    return _tokens(sentence * times)


def test_the_watch_stops_at_the_token_that_confirms_a_loop() -> None:
    watch = LoopWatch(_detokenize)
    stops = [watch.stop_after(t) for t in _looping_tokens(4)]
    # "She lights the lamp." said a third time confirms the loop (at its full stop), not before
    assert stops.index(True) == 3 * 5 - 1
    assert watch.stopped


def test_the_watch_lets_prose_run() -> None:
    watch = LoopWatch(_detokenize)
    prose = _tokens(["She", " lights", " the", " lamp", ".", " Tom", " waits", " by", " the", " door", "."])
    assert not any(watch.stop_after(t) for t in prose)
    assert not watch.stopped


class _Sampler:
    """A llama_cpp.Llama stand-in whose generate samples a fixed list of tokens, counting them."""

    def __init__(self, tokens: list[int]) -> None:
        self.script = tokens
        self.sampled = 0
        self.snapshots = None

    def generate(self, tokens: Any, *args: Any, **kwargs: Any) -> Iterator[int]:
        for token in self.script:
            self.sampled += 1
            yield token

    def token_eos(self) -> int:
        return 99


def test_generation_ends_at_the_first_loop_and_samples_no_further() -> None:
    llama = _prefix_reusing(_Sampler)(_looping_tokens(30))
    llama.loop_watch = LoopWatch(_detokenize)
    out = list(llama.generate([1, 2, 3]))
    assert out[-1] == 99  # an end-of-generation token: llama-cpp-python ends the answer there
    assert out[:-1] == _looping_tokens(3)
    assert llama.sampled == 15  # of 150 tokens the runaway would have taken
    unwatched = _prefix_reusing(_Sampler)(_looping_tokens(30))
    assert list(unwatched.generate([1, 2, 3])) == _looping_tokens(30)


def test_a_stopped_answer_loses_its_loop_and_says_loop() -> None:
    answer = {"choices": [{"message": {"content": LOOP}, "finish_reason": "stop"}]}
    stopped = stop_at_loop(answer)["choices"][0]
    assert stopped["finish_reason"] == LOOP_STOP == "loop"
    assert stopped["message"]["content"] == (
        "Mara climbs the tower. The lamp is dark. She lights the lamp and waits for the ship."
    )


class _Writer:
    """A llama_cpp.Llama stand-in for `LoadedModel.chat`: notes whether a LoopWatch followed each call."""

    loop_watch: LoopWatch | None = None

    def __init__(self) -> None:
        self.watched: list[bool] = []

    def detokenize(self, tokens: list[int]) -> bytes:
        return _detokenize(tokens)

    def create_chat_completion(self, **kwargs: Any) -> dict[str, Any]:
        self.watched.append(self.loop_watch is not None)
        return {"choices": [{"message": {"content": PROSE}, "finish_reason": "stop"}], "usage": {}}


@pytest.mark.parametrize(
    ("settings", "watched"),
    [
        ({}, True),  # the packaged SmolLM2: tiny
        ({"profile": "tiny", "model_path": Path("~/models/other.gguf")}, True),
        ({"profile": "standard"}, False),  # the packaged file, configured standard
        ({"model_path": Path("~/models/qwen2.5-7b-instruct-q4_k_m.gguf")}, False),  # standard by default
    ],
    ids=["packaged", "other-as-tiny", "packaged-as-standard", "other"],
)
async def test_only_a_profile_that_stops_loops_watches_free_writing(
    settings: dict[str, Any], watched: bool
) -> None:
    llama = _Writer()
    provider = EmbeddedProvider("embedded", EmbeddedProviderSettings(type="embedded", **settings))
    provider._loaded = LoadedModel(llama=llama, path=Path("stand-in.gguf"), n_ctx=2048, snapshots=None)
    assert provider.profile.stops_loops is watched
    await provider.complete(draft_request())
    await provider.complete(draft_request(stage="structuring"))  # JSON is never watched
    assert llama.watched == [watched, False]


# -- a draft cut off at max_tokens is kept, not drawn again with twice the room ------------------


async def test_a_cut_off_draft_that_does_not_loop_is_kept_at_once() -> None:
    draft = "The night is loud.\n\n" + PROSE
    provider = ScriptedProvider(lambda r: cut_off(draft + " Then she wal"))
    completion = await Retrying(provider, attempts=3).generate(draft_request())
    assert provider.calls == 1
    assert completion.text == draft  # its unfinished last sentence dropped, its paragraphs kept
    assert completion.truncated  # the metadata still says it was cut off


async def test_only_a_draft_is_kept_at_once() -> None:
    # a cut-off draft that loops is still redrawn; so is one with no finished sentence
    for text in (LOOP + "She li", "She walks to the lamp and"):
        replies = iter([cut_off(text), "Mara lights the lamp."])
        provider = ScriptedProvider(lambda r, replies=replies: next(replies))
        completion = await Retrying(provider, attempts=3).generate(draft_request())
        assert provider.calls == 2 and completion.text == "Mara lights the lamp.", text
    # a summary cut off still gets more room; a structuring answer is never kept
    for stage in ("summarize", "structuring"):
        replies = iter([cut_off(PROSE + " Then"), "Done."])
        provider = ScriptedProvider(lambda r, replies=replies: next(replies))
        await Retrying(provider, attempts=3).generate(draft_request(stage=stage))
        assert [r.max_tokens for r in provider.requests] == [400, 800], stage


def _engine(script: Any) -> tuple[StoryEngine, ScriptedProvider]:
    from storyengine.config import parse_settings

    settings = parse_settings(
        "providers:\n  embedded: {type: embedded, context_window: 8192, profile: tiny}\n"
        "retry: {attempts: 3, backoff_initial: 0, backoff_max: 0}\n",
        source="test.yaml",
    )
    provider = ScriptedProvider(script, name="embedded", context_window=8192, structured_mode="grammar")
    return StoryEngine.from_config(settings=settings, providers={"embedded": provider}), provider


async def test_a_story_keeps_each_cut_off_scene_draft_the_first_time() -> None:
    def script(request: CompletionRequest) -> Any:
        if request.component == "scene" and request.stage == "freeform":
            # the fake's first paragraph (its whole draft repeats a clause: a loop), then a cut
            text = str(story_script(request)).split("\n\n")[0] + "\n\nThen the door opens and"
            return Completion(text=text, finish_reason="length", model="fake", provider="embedded")
        return story_script(request)

    engine, provider = _engine(script)
    async with engine:
        story = await engine.generate("A lighthouse keeper finds a message in a bottle.", scenes=3, seed=4)
    drafts = [r for r in provider.requests if r.component == "scene" and r.stage == "freeform"]
    assert len(drafts) == 3  # one draw per scene: none thrown away
    assert {r.max_tokens for r in drafts} == {drafts[0].max_tokens}  # none with doubled room
    for index in range(3):
        meta = story.meta["steps"][f"scene.{index}.draft"]
        assert meta["stage1_cut_off"] is True and meta["redraws"] == 0
        assert not meta["stage1_text"].endswith("and")


async def test_a_draft_stopped_in_a_loop_is_used_and_marked_cut_off() -> None:
    def script(request: CompletionRequest) -> Any:
        if request.component == "scene" and request.stage == "freeform":
            return Completion(
                text=str(story_script(request)), finish_reason=LOOP_STOP, model="fake", provider="embedded"
            )
        return story_script(request)

    engine, provider = _engine(script)
    async with engine:
        story = await engine.generate("A lighthouse keeper finds a message in a bottle.", scenes=2, seed=4)
    assert sum(1 for r in provider.requests if r.component == "scene" and r.stage == "freeform") == 2
    assert story.meta["steps"]["scene.0.draft"]["stage1_cut_off"] is True
    assert story.meta["steps"]["plot.draft"]["stage1_cut_off"] is False


# -- the bench counts every draft thrown away ----------------------------------------------------


def test_drafts_a_check_drew_again_are_thrown_away_tokens() -> None:
    def call(call_id: str, seed: int, kind: str, outcome: str = "ok", tokens: int = 0) -> dict[str, Any]:
        return {
            "call_id": call_id,
            "kind": kind,
            "component": "scene",
            "stage": "freeform",
            "outcome": outcome,
            "params_snapshot": {"seed": seed},
            "completion_tokens": tokens,
            "prompt_tokens": 10,
            "finish_reason": LOOP_STOP if call_id == "a" else "stop",
        }

    calls = [
        call("a", 5, "attempt", tokens=30),  # drawn first; the check found problems
        call("a", 5, "call", tokens=30),
        call("b", 6, "attempt", outcome="retry", tokens=400),  # retried inside the second draw
        call("b", 6, "attempt", tokens=250),  # the draft the step kept
        call("b", 6, "call", tokens=250),
    ]
    steps = {"scene.0.draft": {"component": "scene", "seed": 6, "stage1_text": "Mara lights the lamp."}}
    tokens = token_accounting(calls, steps)
    assert tokens["drafts_redrawn_by_check"] == 1 and tokens["redrawn_by_check_tokens"] == 30
    assert tokens["thrown_away_tokens"] == 430 and tokens["attempts_thrown_away"] == 2
    assert tokens["attempts_stopped_in_loop"] == 1
    assert Counter(c["kind"] for c in calls)["attempt"] == tokens["attempts"] == 3
    # without the steps only the retried attempt is known to be thrown away
    assert token_accounting(calls)["thrown_away_tokens"] == 400


# -- a redraw that is no better ends the drawing ---------------------------------------------------


def _scene_drafts(drafts: list[str]) -> tuple[Any, list[str]]:
    """A story script whose scene drafts are `drafts` in turn (the fake's own text for "{fake}")."""
    asked: list[str] = []

    def script(request: CompletionRequest) -> Any:
        if request.component == "scene" and request.stage == "freeform":
            fake = str(story_script(request)).split("\n\n")[0]
            text = drafts[min(len(asked), len(drafts) - 1)].format(fake=fake)
            asked.append(text)
            return text
        return story_script(request)

    return script, asked


async def test_a_redraw_no_better_than_the_draft_before_ends_the_drawing() -> None:
    # every draw names a stranger (one problem each): the first redraw is no better, so no third
    script, asked = _scene_drafts(["{fake} Then Zorbek waves."])
    engine, _ = _engine(script)
    async with engine:
        story = await engine.generate("A lighthouse keeper finds a message in a bottle.", scenes=1, seed=4)
    assert len(asked) == 2
    meta = story.meta["steps"]["scene.0.draft"]
    assert meta["redraws"] == 1 and "Zorbek" in meta["draft_problems"][0]
    # of drafts with as many problems, the one with the higher score by code is kept
    scores = [d["score"] for d in meta["drafts"]]
    assert meta["stage1_text"] == asked[scores.index(max(scores))]


async def test_redraws_go_on_while_each_is_better() -> None:
    # two problems (one line, a stranger), then one (a stranger), then none: three draws
    script, asked = _scene_drafts(
        ["Then Zorbek waves at the keeper.", "{fake} Then Zorbek waves.", "{fake}", "{fake} Zorbek."]
    )
    engine, _ = _engine(script)
    async with engine:
        story = await engine.generate("A lighthouse keeper finds a message in a bottle.", scenes=1, seed=4)
    assert len(asked) == 3
    meta = story.meta["steps"]["scene.0.draft"]
    assert meta["redraws"] == 2 and meta["draft_problems"] == [] and meta["stage1_text"] == asked[2]


def test_the_embedded_model_evaluates_prompts_on_as_many_threads_as_it_decodes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    from storyengine.providers import embedded

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert embedded.model_threads(None) == 1  # not both of 2 cores (llama-cpp-python's own default)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert embedded.model_threads(None) == 4
    assert embedded.model_threads(3) == 3


# -- the cast check does not send a draft back for places and possessives -------------------------


def test_places_and_possessives_are_not_people_outside_the_cast() -> None:
    from storyengine.drafts import cast_problems, names_in

    prose = (
        "They moved to New York City, where Ava met Theresa at Westminster Palace in the fabled City "
        "of Light. In the sleepy town of Ashwood, Theresa's bread rose."
    )
    # SmolLM2 names New York City in 5 of 10 scene drafts of one bench story; such a
    # "stranger" sent a whole draft back to be drawn again
    assert cast_problems(["Theresa", "Ava"], prose) == []
    assert names_in("Then Aria's bread rose while Aria sang.") == ["Aria"]  # one name, not two
    assert names_in(prose + " Then Tom waved.", frozenset({"ava", "theresa"})) == ["Tom"]
    assert names_in("Then John Hall and Kim Park waved.") == ["Hall", "John", "Kim", "Park"]  # surnames


def test_things_after_the_and_places_named_once_are_not_people() -> None:
    from storyengine.drafts import cast_problems, names_in

    # SmolLM2's scene draft (bench story --seed 5), drawn again for "Ashwood, Council, Royal, Wedding"
    prose = (
        "In a bustling city of Ashwood, the royal wedding is about to take place. The Royal Council "
        "has assembled a team of bakers. Sophia walks in, greeted by the Royal Council's team, who "
        "bake in Ashwood for the Royal Wedding."
    )
    assert cast_problems(["Sophia"], prose) == []
    assert names_in(prose + " Then Marco waved.", frozenset({"sophia"})) == ["Marco"]
