"""Model profiles and routes: the answering provider decides how it is asked; config wins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from draft_requests import cut_off, draft_request
from storyengine.config import parse_settings
from storyengine.errors import BadResponse, ConfigError, ProviderUnavailable
from storyengine.pipeline.engine import StoryEngine
from storyengine.pipeline.steps import Inputs
from storyengine.providers.fake_story import story_script
from storyengine.providers.profiles import PROFILES, STANDARD, TINY, profile_for, profile_of
from storyengine.providers.scripted import ScriptedProvider
from storyengine.routing.instrument import RunRecorder
from storyengine.routing.retry import Retrying, looping
from storyengine.routing.router import Router
from storyengine.schemas import PlotStructure
from storyengine.seeds import StepSeeds
from storyengine.types import CompletionRequest

PREMISE = "A cartographer discovers that her maps redraw themselves overnight."


def settings(extra: str = "") -> Any:
    return parse_settings(
        f"""
narrative:
  providers: {{plot: [server, embedded], scene: embedded, dialogue: embedded, evaluation: embedded,
              enhancement: embedded, summarize: embedded}}
providers:
  server: {{type: openai, base_url: "http://127.0.0.1:9/v1", model: big, profile: standard}}
  embedded: {{type: embedded, profile: tiny}}
retry: {{attempts: 2, backoff_initial: 0, backoff_max: 0}}
cache: {{enabled: false}}
{extra}
""",
        source="test.yaml",
    )


def failing_server(kinds: list[str]) -> ScriptedProvider:
    """A server that fails in turn in each of `kinds` ways, then keeps answering prose."""
    replies = iter(kinds)

    def answer(request: CompletionRequest) -> Any:
        kind = next(replies, "prose")
        if kind == "down":
            return ProviderUnavailable("connection refused", provider="server")
        if kind == "garbage":
            return BadResponse("the server's answer is not JSON: <html>", provider="server")
        if kind == "debris":  # valid-looking JSON of the wrong shape
            return '{"title": "][", "structure_type": "][", "beats": [{"name": "1"}]}'
        return "Once upon a time there was a plot, but I will not write JSON."

    return ScriptedProvider(answer, name="server", model="big", structured_mode="json_schema")


@pytest.mark.parametrize(
    "kinds", [["down", "down"], ["prose"], ["garbage", "debris", "prose"], ["debris"] * 6], ids=str
)
async def test_a_fallback_from_a_standard_server_to_the_tiny_model_is_asked_in_parts(
    kinds: list[str],
) -> None:
    server = failing_server(kinds)
    tiny = ScriptedProvider(story_script, name="embedded", model="smol", structured_mode="grammar")
    engine = StoryEngine.from_config(settings=settings(), providers={"server": server, "embedded": tiny})
    recorder = RunRecorder("r")
    async with engine:
        with recorder.active():
            made = await engine.step("plot", Inputs(premise=PREMISE, beats=3), seed=4)
        plot, meta = made.value, made.meta["plot"]
    assert isinstance(plot, PlotStructure) and len(plot.beats) == 3
    assert meta["provider"] == "embedded" and meta["profile"] == "tiny"
    assert meta["structured_mode"] == "grammar (in parts)"
    assert meta["fallbacks"] and meta["fallbacks"][0]["from"] == ["server"]
    # Every structuring request the tiny model got was one part, not the whole plot.
    parts = [r for r in tiny.requests if r.stage == "structuring"]
    assert parts and all(r.json_schema and "beats" not in r.json_schema["properties"] for r in parts)
    assert all(b.name != "1" for b in plot.beats) and plot.structure_type != "]["


async def test_a_route_of_standard_providers_is_asked_for_whole_objects() -> None:
    big = ScriptedProvider(story_script, name="server", model="big", structured_mode="json_schema")
    tiny = ScriptedProvider(story_script, name="embedded", model="smol", structured_mode="grammar")
    engine = StoryEngine.from_config(settings=settings(), providers={"server": big, "embedded": tiny})
    async with engine:
        made = await engine.step("plot", Inputs(premise=PREMISE, beats=3), seed=4)
        plot, meta = made.value, made.meta["plot"]
    assert meta["provider"] == "server" and meta["profile"] == "standard" and not meta["fallbacks"]
    assert meta["structured_mode"] == "json_schema"
    structuring = [r for r in big.requests if r.stage == "structuring"]
    assert len(structuring) == 1 and "beats" in (structuring[0].json_schema or {})["properties"]
    assert tiny.requests == [] and len(plot.beats) == 3


def test_the_default_profile_is_tiny_only_for_the_packaged_model() -> None:
    s = parse_settings(
        """
providers:
  packaged: {type: embedded}
  other_gguf: {type: embedded, model_path: ~/models/qwen2.5-7b-instruct-q4_k_m.gguf}
  forced: {type: embedded, model_path: ~/models/tiny.gguf, profile: tiny}
  server: {type: openai, base_url: "http://127.0.0.1:9/v1", model: m}
narrative: {providers: {plot: packaged, scene: packaged, dialogue: packaged, evaluation: packaged,
            enhancement: packaged, summarize: packaged}}
"""
    )
    names = {name: entry.profile_name() for name, entry in s.providers.items()}
    assert names == {"packaged": "tiny", "other_gguf": "standard", "forced": "tiny", "server": "standard"}


def test_config_stores_the_choice_and_profiles_py_decides_the_default() -> None:
    s = parse_settings(
        """
providers:
  packaged: {type: embedded}
  named_packaged: {type: embedded, model_path: ~/m/SmolLM2-135M-Instruct.Q4_1.gguf}
  packaged_standard: {type: embedded, profile: standard}
  other_gguf: {type: embedded, model_path: ~/models/qwen2.5-7b-instruct-q4_k_m.gguf}
  server: {type: openai, base_url: "http://127.0.0.1:9/v1", model: m}
  tiny_server: {type: openai, base_url: "http://127.0.0.1:9/v1", model: m, profile: tiny}
narrative: {providers: {plot: packaged, scene: packaged, dialogue: packaged, evaluation: packaged,
            enhancement: packaged, summarize: packaged}}
"""
    )
    stored = {name: entry.profile for name, entry in s.providers.items()}
    assert stored == {
        "packaged": None,
        "named_packaged": None,
        "packaged_standard": "standard",
        "other_gguf": None,
        "server": None,
        "tiny_server": "tiny",
    }
    decided = {name: profile_for(entry) for name, entry in s.providers.items()}
    assert decided == {
        "packaged": TINY,
        "named_packaged": TINY,
        "packaged_standard": STANDARD,  # an explicit profile wins over the packaged file
        "other_gguf": STANDARD,
        "server": STANDARD,
        "tiny_server": TINY,
    }
    assert all(entry.profile_name() == decided[name].name for name, entry in s.providers.items())
    assert profile_for(None) is STANDARD  # a provider with no config entry


QUIRKS = ("structure_in_parts", "stops_loops", "keeps_cut_off_drafts", "redraws_loops", "drops_bible_echo")


def test_the_standard_profile_has_none_of_the_tiny_models_quirks() -> None:
    assert set(PROFILES) == {"tiny", "standard"}
    assert all(getattr(TINY, quirk) for quirk in QUIRKS)
    assert not any(getattr(STANDARD, quirk) for quirk in QUIRKS)
    assert (TINY.checks_facts, TINY.scene_drafts) == (False, 1)
    assert (STANDARD.checks_facts, STANDARD.scene_drafts) == (True, 3)


@pytest.mark.parametrize("profile", ["tiny", "standard"])
async def test_sentences_copied_from_the_bible_leave_the_prose_only_for_a_tiny_writer(profile: str) -> None:
    """SmolLM2 copies its prompt's "Name (she/her): ..." bible lines into a scene: the tiny profile
    leaves them out of the prose; a standard model's sentence that reads like one is its own."""
    echo = "Mara (she/her): the keeper of the light."

    def script(request: CompletionRequest) -> Any:
        answer = story_script(request)
        if request.component == "scene" and request.stage == "freeform":
            return f"{echo} {answer}"
        return answer

    provider = ScriptedProvider(script, name="embedded", structured_mode="grammar")
    extra = f"providers: {{embedded: {{type: embedded, profile: {profile}}}}}\ncache: {{enabled: false}}"
    engine = StoryEngine.from_config(settings=parse_settings(extra), providers={"embedded": provider})
    async with engine:
        story = await engine.generate(PREMISE, scenes=1, seed=2)
    assert story.meta["steps"]["scene.0.draft"]["profile"] == profile
    assert story.meta["steps"]["scene.0.draft"]["stage1_text"].startswith(echo)  # the draft keeps it
    assert ("she/her" in story.scenes[0].prose) == (profile == "standard")


def one_provider(profile: str) -> Any:
    """Settings whose every component asks one server, configured with `profile`."""
    return parse_settings(
        f"""
narrative:
  providers: {{plot: m, scene: m, dialogue: m, evaluation: m, enhancement: m, summarize: m}}
providers:
  m: {{type: openai, base_url: "http://127.0.0.1:9/v1", model: m, profile: {profile}}}
retry: {{attempts: 3, backoff_initial: 0, backoff_max: 0}}
cache: {{enabled: false}}
""",
        source="test.yaml",
    )


PROSE = (
    "Mara climbs the tower at dusk. The lamp is dark and the storm is rising. "
    "She strikes a match, shields it with her hand, and the wick catches at la"
)
LOOP = (
    "Mara climbs the tower. "
    + "She lights the lamp and waits for the ship. " * 4
    + "She lights the lamp and wai"
)
# A loop that starts late: most of the draft is writing worth keeping.
LATE_LOOP = (
    "Mara climbs the tower at dusk. The lamp is dark and the storm is rising. She strikes a match "
    "and shields it with her hand. The wick catches at last and the light turns over the water. Far "
    "out, a ship answers with its horn. The ship turns home. The ship turns home. The ship tu"
)


async def ask_route(profile: str, first: str) -> ScriptedProvider:
    """A scene draft asked of a route of `profile` whose first answer is `first`, cut off."""
    replies = iter([cut_off(first), "Mara lights the lamp. The ship turns home."])
    # The scripted provider plays `tiny` on its own: the route's profile (from config) wins.
    provider = ScriptedProvider(lambda r: next(replies), name="m", model="m")
    async with Router(one_provider(profile), {"m": provider}) as router:
        await router.generate(draft_request())
    return provider


async def test_a_cut_off_draft_is_kept_at_once_only_on_a_tiny_route() -> None:
    tiny = await ask_route("tiny", PROSE)
    assert tiny.calls == 1  # kept as far as it goes
    standard = await ask_route("standard", PROSE)
    first, second = standard.requests  # asked again, with twice the room and the same seed
    assert (second.max_tokens, second.seed, second.temperature) == (800, first.seed, first.temperature)


async def test_a_looping_cut_off_draft_is_redrawn_at_the_same_budget_only_on_a_tiny_route() -> None:
    tiny = await ask_route("tiny", LOOP)
    first, second = tiny.requests
    assert second.max_tokens == first.max_tokens == 400 and second.seed != first.seed
    standard = await ask_route("standard", LOOP)
    first, second = standard.requests
    assert second.max_tokens == 800 and second.seed == first.seed


async def test_a_cut_off_draft_whose_loop_starts_late_is_kept_up_to_it_only_on_a_tiny_route() -> None:
    """Repair, not redraw: a 400-token draft that says one sentence twice near its end keeps its
    writing (each sentence once); drawing it again would throw all of it away."""
    assert looping(LATE_LOOP)
    replies = iter([cut_off(LATE_LOOP)])
    provider = ScriptedProvider(lambda r: next(replies), name="m", model="m")
    async with Router(one_provider("tiny"), {"m": provider}) as router:
        kept = await router.generate(draft_request())
    assert provider.calls == 1 and kept.truncated
    assert kept.text.count("The ship turns home.") == 1 and kept.text.startswith(
        "Mara climbs the tower at dusk."
    )
    assert not kept.text.endswith("tu")
    standard = await ask_route("standard", LATE_LOOP)
    assert standard.calls == 2  # a standard model is asked again with more room


async def test_retrying_alone_asks_as_the_providers_own_profile_says() -> None:
    class Bare:  # a provider that declares no profile
        name = model = "bare"
        context_window = 8192
        structured_mode = "none"

        async def complete(self, request: Any) -> Any:
            return cut_off(PROSE)

        def count_tokens(self, text: str) -> int:
            return len(text) // 4

        async def aclose(self) -> None:
            return None

    assert profile_of(Bare()) is STANDARD and Retrying(Bare()).profile is STANDARD  # type: ignore[arg-type]
    assert Retrying(ScriptedProvider(story_script)).profile is TINY
    standard = ScriptedProvider(lambda r: cut_off(PROSE), profile="standard")
    assert Retrying(standard).profile is STANDARD
    completion = await Retrying(standard, attempts=2).generate(draft_request())
    assert standard.calls == 2 and completion.truncated  # not kept at once; kept after the last attempt


def test_a_misspelt_profile_is_rejected_naming_the_key_and_the_file() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_settings("providers:\n  embedded: {type: embedded, profile: tinny}\n", source="my.yaml")
    message = str(raised.value)
    assert "my.yaml" in message and "providers.embedded.profile" in message and "tiny" in message


async def test_structuring_settings_in_config_reach_the_request_and_its_seed_follows_the_scheme() -> None:
    extra = "narrative: {defaults: {structuring: {temperature: 0.3, seed: 99, max_tokens: 500}}}"
    s = parse_settings(
        f"""
providers:
  embedded: {{type: embedded, profile: standard}}
cache: {{enabled: false}}
{extra}
"""
    )
    provider = ScriptedProvider(story_script, name="embedded", structured_mode="grammar")
    engine = StoryEngine.from_config(settings=s, providers={"embedded": provider})
    async with engine:
        await engine.plot(PREMISE, beats=3, seed=1)
        seeded = [r for r in provider.requests if r.stage == "structuring"]
        provider.requests.clear()
        await engine.plot(PREMISE, beats=3)  # no run seed: the config's seed is the base
        unseeded = [r for r in provider.requests if r.stage == "structuring"]
    # stage 2 sees the run's seed (seeds.py), and the config's seed when the run has none
    assert seeded and all(
        (r.temperature, r.seed) == (0.3, StepSeeds(1, "plot").structuring(99)) for r in seeded
    )
    assert unseeded and all(r.seed == StepSeeds(None, "plot").structuring(99) for r in unseeded)
    assert seeded[0].seed != unseeded[0].seed
    assert all(r.max_tokens <= 500 for r in seeded + unseeded)


def test_building_an_engine_loads_no_model() -> None:
    """`from_config` on the packaged config builds providers, never a model (that waits for a call)."""
    from storyengine.providers import embedded

    before = dict(embedded._models)
    engine = StoryEngine.from_config(settings=parse_settings("cache: {enabled: false}\n"))
    assert engine.router.routes("plot")[0].profile.name == "tiny"
    assert embedded._models == before


async def test_engine_plot_from_the_api_writes_its_calls_to_the_run_log(tmp_path: Path) -> None:
    from storyengine.runlog import RunLog

    s = parse_settings(
        f"providers:\n  embedded: {{type: embedded, profile: tiny}}\ncache: {{enabled: false}}\n"
        f"logging: {{runlog: {tmp_path / 'runs.sqlite3'}, dir: {tmp_path / 'logs'}}}\n"
    )
    provider = ScriptedProvider(story_script, name="embedded", structured_mode="grammar")
    async with StoryEngine.from_config(settings=s, providers={"embedded": provider}) as engine:
        await engine.plot(PREMISE, beats=3, seed=2)
    rows = RunLog(tmp_path / "runs.sqlite3").calls(limit=1000)
    calls = [r for r in rows if r.kind == "call"]
    assert len(calls) == len(provider.requests) > 3
    assert {r.component for r in calls} == {"plot"} and all(r.outcome == "ok" for r in calls)


async def test_calls_become_opentelemetry_spans_with_genai_attributes() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from storyengine.routing.router import Router
    from storyengine.routing.telemetry import OpenTelemetrySink

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    replies = iter(["", "a story"])  # an empty answer, then a good one: two attempts
    provider = ScriptedProvider(lambda r: next(replies), name="embedded", model="smol")
    s = parse_settings("providers:\n  embedded: {type: embedded}\nretry: {backoff_initial: 0}\n")
    router = Router(s, {"embedded": provider}, sinks=[OpenTelemetrySink(tracer_provider)])
    request = CompletionRequest(messages=({"role": "user", "content": "hi"},), component="scene", seed=3)  # type: ignore[arg-type]
    await router.generate(request)
    (span,) = exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert span.name == "chat smol"
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "smol" and attributes["gen_ai.provider.name"] == "embedded"
    assert attributes["gen_ai.usage.output_tokens"] == provider.count_tokens("a story") > 0
    assert attributes["storyengine.attempts"] == 2 and attributes["storyengine.outcome"] == "ok"
    assert attributes["gen_ai.request.seed"] == 3 and attributes["storyengine.component"] == "scene"
    assert [e.attributes["storyengine.outcome"] for e in span.events] == ["retry", "ok"]  # type: ignore[index]
