"""Stage 2 as the next turn of stage 1 (issue 28): the structuring request begins with exactly the
messages the kept draft was written from, the draft as the model's answer, then the JSON asked for
(the guardrails in that last turn), so a server's prompt cache and the embedded KV read the shared
prefix once. `structuring.layout` (auto: the profile's) chooses; a resumed run whose draft's
messages are not known, or a conversation that leaves no room for the answer, is laid out fresh."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from storyengine.config import parse_settings
from storyengine.pipeline.engine import StoryEngine
from storyengine.pipeline.twostage import NEXT_TURN_DRAFT
from storyengine.providers.embedded import EmbeddedProvider
from storyengine.providers.fake_story import story_script
from storyengine.providers.scripted import ScriptedProvider
from storyengine.types import CompletionRequest, Message

PREMISE = "A keeper finds a bottle written by her future self."


def engine(profile: str, layout: str = "auto", tmp: Path | None = None, script: Any = story_script) -> Any:
    logging = f"logging: {{runlog: {tmp / 'runs.sqlite3'}, dir: {tmp / 'logs'}}}\n" if tmp else ""
    settings = parse_settings(
        f"providers:\n  embedded: {{type: embedded, profile: {profile}}}\n"
        f"structuring: {{layout: {layout}}}\ncache: {{enabled: false}}\n"
        f"retry: {{attempts: 2, backoff_initial: 0, backoff_max: 0}}\n{logging}"
    )
    provider = ScriptedProvider(script, name="embedded", structured_mode="grammar", profile=profile)  # type: ignore[arg-type]
    return StoryEngine.from_config(settings=settings, providers={"embedded": provider}), provider


def first(provider: ScriptedProvider, component: str, stage: str) -> CompletionRequest:
    return next(r for r in provider.requests if (r.component, r.stage) == (component, stage))


async def test_stage_2_continues_the_drafts_conversation_on_the_standard_profile() -> None:
    made, provider = engine("standard")
    async with made:
        story = await made.generate(PREMISE, scenes=2, seed=4)
    steps = story.meta["steps"]
    for component in ("plot", "bible", "scene", "dialogue", "evaluation"):
        draft = first(provider, component, "freeform")
        structuring = first(provider, component, "structuring")
        n = len(draft.messages)
        assert structuring.messages[:n] == draft.messages, component  # the same bytes: a shared prefix
        answer, ask = structuring.messages[n], structuring.messages[n + 1]
        key = {"scene": "scene.0", "dialogue": "dialogue.0"}.get(component, component)
        assert answer == Message(role="assistant", content=steps[f"{key}.draft"]["stage1_text"]), component
        assert ask.role == "user" and "outputs only JSON" in ask.content and NEXT_TURN_DRAFT in ask.content
        assert answer.content not in ask.content  # the draft is not sent twice
        assert steps[key]["layout"] == "next_turn"


async def test_fresh_layout_and_the_tiny_profile_keep_a_prompt_of_their_own() -> None:
    made, provider = engine("standard", layout="fresh")
    async with made:
        story = await made.generate(PREMISE, scenes=1, seed=4)
    scene = first(provider, "scene", "structuring")
    assert scene.messages[0].role == "system" and "outputs only JSON" in scene.messages[0].content
    assert all(m.role != "assistant" for m in scene.messages)
    assert story.meta["steps"]["scene.0"]["layout"] == "fresh"
    made, provider = engine("tiny")  # structures in parts, each with its slice of the notes
    async with made:
        await made.generate(PREMISE, scenes=1, seed=4)
    # every part has a prompt of its own (a re-ask then shows its answer back: not the draft's turn)
    structuring = [r for r in provider.requests if r.stage == "structuring"]
    assert structuring and all(
        r.messages[0].role == "system" and "outputs only JSON" in r.messages[0].content for r in structuring
    )


async def test_a_draft_whose_messages_are_unknown_or_too_long_is_structured_fresh() -> None:
    """A draft from a checkpoint (an interrupted run resumed in a new process) has no conversation
    to go on with; a conversation that leaves less room than the answer's budget is not used."""
    from storyengine.config import StageDefaults
    from storyengine.pipeline.stepmeta import StepMeta

    made, _ = engine("standard")
    async with made:
        stages, route = made.stages, made.router.routes("scene")[0]
        defaults: StageDefaults = made.settings.narrative.defaults.structuring
        context = {"draft": "Mara lit the lamp.", "beat_name": "Dawn", "cast": "Mara", "schema": "{}"}
        unknown = await stages.next_turn_request(
            "scene_structuring", "scene", context, defaults, StepMeta("scene"), route
        )
        assert unknown is None  # then the fresh layout (fitted_request) is used
        asked = (Message(role="user", content="Write the scene. " * 20),)
        stages.conversations[("scene", "Mara lit the lamp.")] = asked
        fits = await stages.next_turn_request(
            "scene_structuring", "scene", context, defaults, StepMeta("scene"), route
        )
        assert fits is not None and fits.messages[0] == asked[0]
        stages.conversations[("scene", "Mara lit the lamp.")] = (
            Message(role="user", content="word " * 9000),
        )
        over = await stages.next_turn_request(
            "scene_structuring", "scene", context, defaults, StepMeta("scene"), route
        )
        assert over is None


@pytest.mark.model
async def test_the_embedded_model_reads_the_shared_prefix_once() -> None:
    """The next turn's prompt begins with the draft's request and answer: llama.cpp evaluates only
    what follows them (KV reuse), far fewer tokens than the prompt sent."""
    smol = EmbeddedProvider()
    draft_request = CompletionRequest(
        messages=(
            Message(role="system", content="You are a storyteller."),
            Message(role="user", content=f"Premise: {PREMISE}\nWrite the first scene in three sentences."),
        ),
        temperature=0.0,
        max_tokens=48,
    )
    draft = await smol.complete(draft_request)
    model = await smol.load()
    before = model.stats.prompt_tokens_evaluated
    turn = CompletionRequest(
        messages=(
            *draft_request.messages,
            Message(role="assistant", content=draft.text),
            Message(role="user", content="Give the scene a title of three words."),
        ),
        temperature=0.0,
        max_tokens=12,
    )
    answer = await smol.complete(turn)
    evaluated = model.stats.prompt_tokens_evaluated - before
    assert answer.usage.prompt_tokens > draft.usage.prompt_tokens + draft.usage.completion_tokens
    assert 0 < evaluated < answer.usage.prompt_tokens - draft.usage.prompt_tokens


def kept_scene_request(provider: ScriptedProvider, steps: dict[str, Any], index: int) -> CompletionRequest:
    """The scene draft request whose answer was kept (a standard scene draws three drafts)."""
    seed = steps[f"scene.{index}.draft"]["seed"]
    return next(r for r in provider.requests if (r.component, r.stage, r.seed) == ("scene", "freeform", seed))


@pytest.mark.parametrize(("profile", "layout"), [("standard", "auto"), ("tiny", "next_turn")])
async def test_a_dialogue_is_drafted_as_the_next_turn_of_its_scene(profile: str, layout: str) -> None:
    """The dialogue's draft request is its scene draft's request, that draft as the model's answer,
    then one user turn with the cast and the ask: the premise, plan, bible and the scene are read
    once (the prompt cache and the KV hold them), and the dialogue sees the scene's own prose."""
    made, provider = engine(profile, layout=layout)
    async with made:
        story = await made.generate(PREMISE, scenes=2, seed=4)
    steps = story.meta["steps"]
    dialogues = [r for r in provider.requests if (r.component, r.stage) == ("dialogue", "freeform")]
    assert len(dialogues) == 2
    for index, dialogue in enumerate(dialogues):
        scene = kept_scene_request(provider, steps, index)
        n = len(scene.messages)
        assert dialogue.messages[:n] == scene.messages
        answer, ask = dialogue.messages[n], dialogue.messages[n + 1]
        assert answer == Message(role="assistant", content=steps[f"scene.{index}.draft"]["stage1_text"])
        cast = ", ".join(story.scenes[index].scene.characters)
        assert (
            ask.role == "user"
            and f"Characters: {cast}" in ask.content
            and "NAME: what they say" in ask.content
        )
        assert "Scene:" not in ask.content and "Story bible" not in ask.content  # not sent twice
        assert steps[f"dialogue.{index}.draft"]["layout"] == "next_turn"


@pytest.mark.parametrize(("profile", "layout"), [("standard", "fresh"), ("tiny", "auto")])
async def test_a_fresh_layout_or_an_unknown_scene_conversation_drafts_the_dialogue_from_its_own_prompt(
    tmp_path: Path, profile: str, layout: str
) -> None:
    """`fresh`, and the tiny profile's own layout (SmolLM2's next turn goes on with the scene's
    prose), ask the dialogue from its own prompt: the scene's title, setting and summary."""
    made, provider = engine(profile, layout=layout)
    async with made:
        story = await made.generate(PREMISE, scenes=1, seed=4)
    dialogue = first(provider, "dialogue", "freeform")
    assert all(m.role != "assistant" for m in dialogue.messages)
    assert (
        "Scene:" in dialogue.messages[-1].content
        and story.scenes[0].scene.title in dialogue.messages[-1].content
    )
    assert story.meta["steps"]["dialogue.0.draft"]["layout"] == "fresh"
    # A resumed run: the scene's draft is in the checkpoint, its conversation is not in this process.
    made, provider = engine("tiny", tmp=tmp_path)
    async with made:
        stages = made.stages
        from storyengine.pipeline.twostage import Continuation

        after = Continuation(
            "scene", "Mara lit the lamp.", {"scene": "", "cast": "Mara", "bible": "", "previous": ""}
        )
        route = made.router.routes("dialogue")[0]
        defaults = made.settings.narrative.defaults.freeform
        assert await stages.continued_request("dialogue_freeform", "dialogue", after, defaults, route) is None
        asked = (Message(role="user", content="Write the scene."),)
        stages.conversations[("scene", "Mara lit the lamp.")] = asked
        stages.keep_conversation("scene", "Mara lit the lamp.")
        stages.conversations.clear()  # structured: the scene's own entry is gone, the kept one stays
        request = await stages.continued_request("dialogue_freeform", "dialogue", after, defaults, route)
        assert request is not None and request.messages[:2] == (
            *asked,
            Message(role="assistant", content="Mara lit the lamp."),
        )
        for i in range(40):  # only the last few scenes' conversations are kept
            stages.conversations[("scene", f"draft {i}")] = asked
            stages.keep_conversation("scene", f"draft {i}")
        assert len(stages.kept_conversations) <= 16 and ("scene", "draft 39") in stages.kept_conversations


@pytest.mark.model
async def test_the_embedded_model_reads_a_scene_once_for_its_dialogue(tmp_path: Path) -> None:
    """A real story on SmolLM2 with the next-turn layout: between the scene's draft and its dialogue
    come the scene's parts (other prompts), yet the dialogue's prompt is read from the scene draft's
    KV snapshot: llama.cpp reuses at least the scene's whole prompt."""
    settings = parse_settings(
        "providers:\n  embedded: {type: embedded}\nstructuring: {layout: next_turn}\n"
        "cache: {enabled: false}\n"
        f"logging: {{runlog: {tmp_path / 'runs.sqlite3'}, dir: {tmp_path / 'logs'}}}\n"
    )
    async with StoryEngine.from_config(settings=settings) as made:
        story = await made.generate(PREMISE, scenes=1, seed=3)
    steps, calls = story.meta["steps"], story.meta["calls"]
    assert steps["dialogue.0.draft"]["layout"] == "next_turn"
    kept = steps["scene.0.draft"]["stage1_text"]
    scene = [c for c in calls if (c["component"], c["stage"], c["kind"]) == ("scene", "freeform", "attempt")]
    dialogue = [
        c for c in calls if (c["component"], c["stage"], c["kind"]) == ("dialogue", "freeform", "attempt")
    ]
    assert kept and scene and dialogue
    first_dialogue = dialogue[0]
    assert (
        first_dialogue["prompt_tokens"] > scene[-1]["prompt_tokens"]
    )  # it holds the scene's prompt and draft
    assert first_dialogue["prompt_tokens_reused"] >= scene[-1]["prompt_tokens"]
