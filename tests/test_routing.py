"""Retry, fallback, instrumentation and the router, driven by ScriptedProvider."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from storyengine.config import COMPONENTS, Settings, parse_settings
from storyengine.errors import (
    AllProvidersFailed,
    AuthenticationError,
    BadResponse,
    ConfigError,
    EmptyOutput,
    ModelLoadError,
    ProviderBusy,
    ProviderHTTPError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    SchemaValidationError,
    TruncatedOutput,
)
from storyengine.providers.base import Provider
from storyengine.providers.scripted import Reply, ScriptedProvider
from storyengine.routing.base import Check, Generator
from storyengine.routing.cache import Cached, cache_key
from storyengine.routing.fallback import Fallback
from storyengine.routing.instrument import (
    CallRecord,
    Instrumented,
    RecordedAttempts,
    RecordedLink,
    RunRecorder,
    current_recorder,
    params_snapshot,
    prompt_hash,
)
from storyengine.routing.retry import JSON_CLAMP, Asked, Retrying
from storyengine.routing.router import Router
from storyengine.runlog import RunLog
from storyengine.types import Completion, CompletionRequest, Message, Usage


class FixedRandom(random.Random):
    def random(self) -> float:
        return 0.5


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def play(replies: Iterable[Reply], **kwargs: object) -> ScriptedProvider:
    """A provider that answers with `replies` in order."""
    queue = iter(replies)
    return ScriptedProvider(lambda request: next(queue), **kwargs)  # type: ignore[arg-type]


def answer(text: str, finish: str = "stop", provider: str = "scripted") -> Completion:
    return Completion(
        text=text,
        finish_reason=finish,
        usage=Usage(prompt_tokens=5, completion_tokens=3),
        model="m",
        provider=provider,
    )


def request(**kwargs: object) -> CompletionRequest:
    fields: dict[str, object] = {
        "messages": (
            Message(role="system", content="You write."),
            Message(role="user", content="A premise."),
        ),
        "component": "plot",
        "temperature": 0.8,
        "max_tokens": 100,
    }
    fields.update(kwargs)
    return CompletionRequest(**fields)  # type: ignore[arg-type]


def retrying(provider: ScriptedProvider, sleeps: Sleeps | None = None, attempts: int = 3) -> Retrying:
    """Retrying over `provider`, each attempt recorded (as the router composes it)."""
    return Retrying(
        provider,
        attempts=attempts,
        backoff_initial=0.5,
        backoff_max=20.0,
        sleep=sleeps if sleeps is not None else Sleeps(),
        rng=FixedRandom(),
        ask=RecordedAttempts(Asked(provider), provider=provider.name, model=provider.model),
    )


def must_parse(completion: Completion) -> None:
    if not completion.text.startswith("{"):
        raise SchemaValidationError("not JSON", raw_text=completion.text)


# -- Retrying --


async def test_a_first_good_answer_is_returned_after_one_call() -> None:
    provider = play(["Once upon a time."])
    completion = await retrying(provider).generate(request())
    assert completion.text == "Once upon a time."
    assert [r.attempt for r in provider.requests] == [1]


async def test_transport_errors_are_retried_with_exponential_backoff_and_jitter() -> None:
    provider = play([ProviderUnavailable("refused"), ProviderTimeout("slow"), BadResponse("garbage"), "ok"])
    sleeps = Sleeps()
    completion = await retrying(provider, sleeps, attempts=4).generate(request())
    assert completion.text == "ok"
    assert [r.attempt for r in provider.requests] == [1, 2, 3, 4]
    # base 0.5, 1.0, 2.0, each times the jitter factor 0.5 + 0.5 * 0.5
    assert sleeps == [0.375, 0.75, 1.5]
    # a transport failure leaves the request as it was
    assert {(r.temperature, r.max_tokens, r.messages) for r in provider.requests} == {
        (0.8, 100, request().messages)
    }


async def test_jitter_stays_within_half_and_whole_of_the_capped_backoff() -> None:
    retry = Retrying(play([]), attempts=10, backoff_initial=1.0, backoff_max=5.0, rng=random.Random(7))
    for number in range(1, 10):
        base = min(5.0, 2.0 ** (number - 1))
        delay = retry.backoff(number, ProviderUnavailable("x"))
        assert base / 2 <= delay <= base


async def test_a_server_error_is_retried_but_a_client_error_is_not() -> None:
    provider = play([ProviderHTTPError("boom", status=503), "ok"])
    assert (await retrying(provider).generate(request())).text == "ok"
    assert provider.calls == 2

    bad_request = ProviderHTTPError("bad", status=400)
    provider = play([bad_request, "never"])
    with pytest.raises(ProviderHTTPError) as raised:
        await retrying(provider).generate(request())
    assert raised.value is bad_request
    assert provider.calls == 1


@pytest.mark.parametrize(
    "error",
    [AuthenticationError("no key", status=401), ModelLoadError("corrupt gguf")],
    ids=["auth", "model"],
)
async def test_errors_a_retry_cannot_fix_propagate_at_once(error: Exception) -> None:
    provider = play([error, "never"])
    sleeps = Sleeps()
    with pytest.raises(type(error)):
        await retrying(provider, sleeps).generate(request())
    assert provider.calls == 1
    assert sleeps == []


async def test_retry_after_is_honoured_and_a_longer_one_than_backoff_max_ends_the_attempts() -> None:
    provider = play(
        [RateLimited("slow down", retry_after=7.0), RateLimited("again", retry_after=600.0), "ok"]
    )
    sleeps = Sleeps()
    with pytest.raises(ProviderBusy, match=r"longer than retry\.backoff_max"):
        await retrying(provider, sleeps).generate(request())
    assert sleeps == [7.0] and len(provider.requests) == 2


async def test_a_rate_limit_without_retry_after_backs_off_like_a_server_error() -> None:
    provider = play([RateLimited("slow down"), "ok"])
    sleeps = Sleeps()
    await retrying(provider, sleeps).generate(request())
    assert sleeps == [0.375]


async def test_empty_answers_are_retried_at_once_with_lower_temperature() -> None:
    provider = play(["", "   \n", "Finally."])
    sleeps = Sleeps()
    completion = await retrying(provider, sleeps).generate(request(temperature=0.9))
    assert completion.text == "Finally."
    assert [r.temperature for r in provider.requests] == [0.9, 0.2, 0.0]
    assert [r.attempt for r in provider.requests] == [1, 2, 3]
    assert sleeps == []


async def test_when_attempts_run_out_the_last_error_is_raised_and_nothing_returned() -> None:
    last = EmptyOutput("third")
    provider = play([ProviderUnavailable("first"), "", last])
    with pytest.raises(EmptyOutput) as raised:
        await retrying(provider).generate(request())
    assert raised.value is last
    assert provider.calls == 3


async def test_an_invalid_structuring_answer_is_retried_with_a_json_clamped_system_prompt() -> None:
    provider = play(["Sure! Here is the JSON:", "```json", '{"beats": []}'])
    sleeps = Sleeps()
    completion = await retrying(provider, sleeps).generate(
        request(stage="structuring", temperature=0.5), must_parse
    )
    assert completion.text == '{"beats": []}'
    first, second, third = provider.requests
    assert first.messages[0].content == "You write."
    assert second.messages[0].content == f"{JSON_CLAMP}\n\nYou write."
    assert third.messages == second.messages  # the clamp is added once
    assert [r.temperature for r in provider.requests] == [0.5, 0.2, 0.0]
    assert sleeps == []


async def test_the_clamp_becomes_the_system_prompt_when_there_is_none() -> None:
    provider = play(["prose", "{}"])
    req = request(stage="structuring", messages=(Message(role="user", content="Structure this."),))
    await retrying(provider).generate(req, must_parse)
    assert [m.role for m in provider.requests[1].messages] == ["system", "user"]
    assert provider.requests[1].messages[0].content == JSON_CLAMP


async def test_freeform_answers_that_fail_the_check_keep_their_prompt() -> None:
    provider = play(["prose", "{}"])
    await retrying(provider).generate(request(stage="freeform"), must_parse)
    assert provider.requests[1].messages == request().messages


async def test_a_check_that_never_passes_raises_the_validation_error() -> None:
    provider = ScriptedProvider(lambda r: "no json here")
    with pytest.raises(SchemaValidationError):
        await retrying(provider).generate(request(stage="structuring"), must_parse)
    assert provider.calls == 3


async def test_a_truncated_answer_is_never_a_success_and_max_tokens_doubles() -> None:
    provider = play([answer("The hero wal", finish="length"), answer("x" * 10, finish="length"), "Done."])
    completion = await retrying(provider).generate(request(max_tokens=100))
    assert completion.text == "Done."
    assert [r.max_tokens for r in provider.requests] == [100, 200, 400]

    always_cut = ScriptedProvider(lambda r: answer('{"name": "cut', finish="length"))
    with pytest.raises(TruncatedOutput):
        await retrying(always_cut).generate(request(stage="structuring"))
    assert always_cut.calls == 3


async def test_a_draft_cut_off_on_every_attempt_is_kept_as_far_as_it_goes() -> None:
    looping = "1. Arrival: she lands.\n2. Storm: the lamp fails." + " The sea rises high." * 5 + "\n3. Th"
    provider = ScriptedProvider(lambda r: answer(looping, finish="length"))
    completion = await retrying(provider).generate(request(stage="freeform"))
    # mostly loop: redrawn first (a draft that does not loop, or loops only late, is kept at once)
    assert provider.calls == 3
    assert completion.text == "1. Arrival: she lands.\n2. Storm: the lamp fails. The sea rises high."
    assert completion.truncated  # the metadata still says it was cut off
    # nothing usable (no finished sentence) is still an error, and a structuring answer always is
    unfinished = ScriptedProvider(lambda r: answer("The hero wal", finish="length"))
    with pytest.raises(TruncatedOutput):
        await retrying(unfinished).generate(request(stage="freeform"))
    cut_json = ScriptedProvider(lambda r: answer('{"title": "A."} {"title": "A."}', finish="length"))
    with pytest.raises(TruncatedOutput):
        await retrying(cut_json).generate(request(stage="structuring"))


async def test_a_truncated_sampled_answer_is_redrawn_with_another_seed() -> None:
    provider = play([answer("on and on", finish="length"), "Done."])
    await retrying(provider).generate(request(seed=7, temperature=0.8))
    first, second = provider.requests
    assert second.seed is not None and second.seed != first.seed
    assert second.temperature == first.temperature and second.max_tokens == 2 * first.max_tokens
    # reproducible: the same failure gives the same next request
    again = play([answer("on and on", finish="length"), "Done."])
    await retrying(again).generate(request(seed=7, temperature=0.8))
    assert again.requests[1] == second

    greedy = play([answer("{", finish="length"), "{}"])
    await retrying(greedy).generate(request(seed=7, temperature=0.0, stage="structuring"))
    assert greedy.requests[1].seed == 7 and greedy.requests[1].temperature == 0.0


async def test_max_tokens_grows_only_within_the_context_window() -> None:
    provider = play([answer("a", finish="length"), "b"], context_window=1000)
    req = request(max_tokens=600, messages=(Message(role="user", content="p" * 360),))  # ~101 tokens
    await retrying(provider).generate(req)
    prompt_tokens = provider.count_tokens("p" * 360)
    assert provider.requests[1].max_tokens == 1000 - prompt_tokens


async def test_when_max_tokens_cannot_grow_the_longest_user_message_is_shortened() -> None:
    head, middle, tail = "BEGINNING " * 40, "middle " * 300, " THE END" * 40
    long_text = head + middle + tail
    messages = (
        Message(role="system", content="s" * 50),
        Message(role="user", content="short question"),
        Message(role="user", content=long_text),
    )
    provider = play([answer("a", finish="length"), "b"], context_window=1000)
    prompt_tokens = sum(provider.count_tokens(m.content) for m in messages)
    req = request(messages=messages, max_tokens=1000 - prompt_tokens)
    await retrying(provider).generate(req)

    sent = provider.requests[1]
    shortened = sent.messages[2].content
    assert sent.messages[:2] == messages[:2]
    assert len(long_text) // 2 <= len(shortened) < len(long_text)
    assert shortened.startswith("BEGINNING BEGINNING") and shortened.endswith("THE END THE END")
    new_prompt = sum(provider.count_tokens(m.content) for m in sent.messages)
    assert sent.max_tokens > req.max_tokens
    assert new_prompt + sent.max_tokens <= 1000


async def test_every_attempt_is_recorded_with_its_outcome() -> None:
    provider = play([ProviderUnavailable("refused"), "", "ok"])
    recorder = RunRecorder("run-1")
    with recorder.active():
        await Instrumented(retrying(provider)).generate(request())
    assert [(r.kind, r.attempt, r.outcome) for r in recorder.records] == [
        ("attempt", 1, "retry"),
        ("attempt", 2, "retry"),
        ("attempt", 3, "ok"),
        ("call", 3, "ok"),
    ]
    assert "ProviderUnavailable: refused" in (recorder.records[0].error or "")
    assert "EmptyOutput" in (recorder.records[1].error or "")
    assert {r.run_id for r in recorder.records} == {"run-1"}
    assert len({r.call_id for r in recorder.records}) == 1
    assert recorder.records[2].params_snapshot["temperature"] == 0.2


async def test_the_final_attempt_is_recorded_as_invalid_or_error() -> None:
    recorder = RunRecorder("r")
    with recorder.active():
        with pytest.raises(SchemaValidationError):
            await Instrumented(retrying(ScriptedProvider(lambda r: "prose"), attempts=2)).generate(
                request(stage="structuring"), must_parse
            )
        with pytest.raises(AuthenticationError):
            await Instrumented(retrying(play([AuthenticationError("no", status=401)]))).generate(request())
    assert [(r.kind, r.outcome) for r in recorder.records] == [
        ("attempt", "retry"),
        ("attempt", "invalid"),
        ("call", "invalid"),
        ("attempt", "error"),
        ("call", "error"),
    ]


# -- Fallback --


async def test_fallback_moves_on_after_the_first_providers_retries() -> None:
    a = ScriptedProvider(lambda r: ProviderUnavailable("down", provider="a"), name="a")
    b = ScriptedProvider(lambda r: "from b", name="b")
    sleeps = Sleeps()
    links = [(p.name, RecordedLink(retrying(p, sleeps), provider=p.name)) for p in (a, b)]
    chain = Fallback(links)  # as the router composes it
    recorder = RunRecorder("r")
    with recorder.active():
        completion = await Instrumented(chain).generate(request())
    assert completion.text == "from b" and completion.provider == "b"
    assert (a.calls, b.calls) == (3, 1)
    assert [(r.kind, r.provider, r.outcome) for r in recorder.records] == [
        ("attempt", "a", "retry"),
        ("attempt", "a", "retry"),
        ("attempt", "a", "error"),
        ("switch", "a", "fallback"),
        ("attempt", "b", "ok"),
        ("call", "b", "ok"),
    ]
    assert "switching to b" in (recorder.records[3].error or "")
    assert recorder.records[-1].attempt == 4


async def test_fallback_skips_a_provider_with_a_bad_key_without_retrying_it() -> None:
    a = ScriptedProvider(lambda r: AuthenticationError("bad key", status=401), name="a")
    b = ScriptedProvider(lambda r: "from b", name="b")
    completion = await Fallback([("a", retrying(a)), ("b", retrying(b))]).generate(request())
    assert completion.provider == "b"
    assert a.calls == 1


async def test_when_every_provider_fails_all_failures_are_listed() -> None:
    a = ScriptedProvider(lambda r: ProviderTimeout("a timed out"), name="a")
    b = ScriptedProvider(lambda r: "prose", name="b")
    chain = Fallback([("a", retrying(a, attempts=2)), ("b", retrying(b, attempts=2))])
    with pytest.raises(AllProvidersFailed) as raised:
        await chain.generate(request(component="scene"), must_parse)
    failures = raised.value.failures
    assert [name for name, _ in failures] == ["a", "b"]
    assert isinstance(failures[0][1], ProviderTimeout) and isinstance(failures[1][1], SchemaValidationError)
    assert raised.value.component == "scene"
    assert "a timed out" in str(raised.value)
    assert (a.calls, b.calls) == (2, 2)


async def test_a_chain_of_one_re_raises_its_providers_error_unchanged() -> None:
    error = ProviderTimeout("timed out")
    a = ScriptedProvider(lambda r: error, name="a")
    with pytest.raises(ProviderTimeout) as raised:
        await Fallback([("a", retrying(a, attempts=1))]).generate(request())
    assert raised.value is error


async def test_a_bug_is_not_hidden_by_fallback() -> None:
    a = ScriptedProvider(lambda r: RuntimeError("bug"), name="a")
    b = ScriptedProvider(lambda r: "from b", name="b")
    with pytest.raises(RuntimeError):
        await Fallback([("a", retrying(a)), ("b", retrying(b))]).generate(request())
    assert (a.calls, b.calls) == (1, 0)


# -- Instrumentation --


def test_prompt_hash_is_canonical_and_params_hide_the_schema_and_secrets() -> None:
    messages = (Message(role="user", content="héllo"),)
    assert prompt_hash(messages) == prompt_hash((Message(role="user", content="héllo"),))
    assert prompt_hash(messages) != prompt_hash((Message(role="system", content="héllo"),))
    # the log and the cache hash a prompt the same way, so a log row finds its cache entry
    key = cache_key(request(messages=messages), provider="p", model="m")
    assert key.split(":")[3] == prompt_hash(messages)
    schema = {"type": "object", "properties": {"api_key": {"type": "string"}}}
    snapshot = params_snapshot(request(json_schema=schema))
    assert snapshot["json_schema"].startswith("sha256:") and len(snapshot["json_schema"]) == 71
    assert snapshot["max_tokens"] == 100


async def test_error_text_in_records_does_not_carry_a_bearer_token() -> None:
    leaky = ProviderHTTPError("server echoed Authorization: Bearer sk-abcdefghijklmnop", status=400)
    recorder = RunRecorder("r")
    with recorder.active(), pytest.raises(ProviderHTTPError):
        await Instrumented(retrying(play([leaky]))).generate(request())
    for record in recorder.records:
        assert "sk-abcdefghijklmnop" not in (record.error or "")
        assert "Bearer ***" in (record.error or "")


async def test_nothing_is_recorded_without_an_active_recorder() -> None:
    assert current_recorder.get() is None
    completion = await Instrumented(retrying(play(["", "ok"]))).generate(request())
    assert completion.text == "ok"


async def test_concurrent_runs_record_only_into_their_own_recorder(tmp_path: Path) -> None:
    async def script(req: CompletionRequest) -> Reply:
        await asyncio.sleep(0.001 * (len(req.messages[-1].content) % 5))
        return "" if req.attempt == 1 and req.messages[-1].content.endswith(" 3") else "text"

    provider = ScriptedProvider(script)
    generator = Instrumented(retrying(provider))
    log = RunLog(tmp_path / "runs.sqlite3")

    async def scene(index: int, run: str) -> None:
        await generator.generate(
            request(component="scene", messages=(Message(role="user", content=f"{run} {index}"),))
        )

    async def run(run_id: str, scenes: int) -> RunRecorder:
        recorder = RunRecorder(run_id, log)
        with recorder.active():
            await asyncio.gather(*(scene(i, run_id) for i in range(scenes)))
        return recorder

    first, second = await asyncio.gather(run("run-a", 5), run("run-b", 7))
    for recorder, scenes in ((first, 5), (second, 7)):
        calls = [r for r in recorder.records if r.kind == "call"]
        assert len(calls) == scenes
        assert {r.run_id for r in recorder.records} == {recorder.run_id}
        # scene 3 needed a second attempt; every other scene one
        assert len([r for r in recorder.records if r.kind == "attempt"]) == scenes + 1
        own = {prompt_hash((Message(role="user", content=f"{recorder.run_id} {i}"),)) for i in range(scenes)}
        assert {r.prompt_hash for r in recorder.records} == own
        assert log.calls(run_id=recorder.run_id) == recorder.records
    assert current_recorder.get() is None


# -- Router --


def routed_settings(**routes: object) -> Settings:
    providers = "\n".join(
        f"  {name}: {{type: openai, base_url: 'http://127.0.0.1:9/v1', model: m}}" for name in "abc"
    )
    route_lines = "\n".join(f"    {c}: {routes.get(c, 'a')}" for c in COMPONENTS)
    text = (
        f"narrative:\n  providers:\n{route_lines}\n"
        "retry: {attempts: 2, backoff_initial: 0.0, backoff_max: 0.0}\n"
        f"providers:\n{providers}\n"
    )
    return parse_settings(text)


def scripted_trio() -> dict[str, ScriptedProvider]:
    return {name: ScriptedProvider(lambda r, n=name: f"from {n}", name=name) for name in "abc"}


async def test_the_router_routes_each_component_to_its_chain() -> None:
    providers = scripted_trio()
    providers["a"].script = lambda r: ProviderUnavailable("a is down")
    router = Router(routed_settings(plot="[a, b]", scene="c", dialogue="[c, a]"), dict(providers))
    assert (await router.generate(request(component="plot"))).text == "from b"
    assert (await router.generate(request(component="scene"))).text == "from c"
    assert (await router.generate(request(component="dialogue"))).text == "from c"
    assert providers["a"].calls == 2  # two attempts, then the fallback to b
    with pytest.raises(ConfigError, match="no route for component 'poetry'"):
        await router.generate(request(component="poetry"))


async def test_a_provider_shared_by_components_is_one_object_with_a_retry_per_component() -> None:
    providers = scripted_trio()
    router = Router(routed_settings(plot="[a, b]", scene="[b, a]"), dict(providers))
    plot_chain = router.generators["plot"].inner.links  # type: ignore[attr-defined]
    scene_chain = router.generators["scene"].inner.links  # type: ignore[attr-defined]
    plot_a, scene_a = dict(plot_chain)["a"], dict(scene_chain)["a"]
    assert plot_a is not scene_a
    assert plot_a.provider is scene_a.provider is providers["a"]
    assert [name for name, _ in plot_chain] == ["a", "b"]
    assert plot_a.attempts == 2


async def test_the_router_composes_the_cache_inside_instrumentation() -> None:
    chains: dict[str, list[str]] = {}

    class DictCache:
        def __init__(self, inner: Generator, chain: Sequence[Provider]) -> None:
            self.inner = inner
            self.store: dict[str, Completion] = {}
            chains[",".join(p.name for p in chain)] = [p.name for p in chain]

        async def generate(self, req: CompletionRequest, check: Check | None = None) -> Completion:
            key = prompt_hash(req.messages)
            if key in self.store:
                return self.store[key].model_copy(update={"cached": True})
            self.store[key] = await self.inner.generate(req, check)
            return self.store[key]

    providers = scripted_trio()
    router = Router(routed_settings(scene="[b, c]"), dict(providers), cache=DictCache)
    assert "b,c" in chains and "a" in chains
    recorder = RunRecorder("r")
    with recorder.active():
        await router.generate(request())
        hit = await router.generate(request())
    assert hit.cached and providers["a"].calls == 1
    last: CallRecord = recorder.records[-1]
    assert (last.kind, last.cache_hit, last.attempt, last.outcome) == ("call", True, 0, "ok")


async def test_aclose_closes_each_provider_once() -> None:
    closed: list[str] = []
    providers = scripted_trio()
    for name, provider in providers.items():

        async def aclose(n: str = name) -> None:
            closed.append(n)

        provider.aclose = aclose  # type: ignore[method-assign]
    async with Router(routed_settings(plot="[a, b]", scene="[b, a]"), dict(providers)):
        pass
    assert sorted(closed) == ["a", "b", "c"]


def test_a_route_to_a_provider_that_was_not_built_is_a_config_error() -> None:
    providers = scripted_trio()
    del providers["b"]
    with pytest.raises(ConfigError, match="names provider 'b'"):
        Router(routed_settings(scene="[a, b]"), dict(providers))


async def test_from_settings_builds_the_configured_providers_and_opens_the_run_log(tmp_path: object) -> None:
    from storyengine.providers.openai_compat import OpenAICompatProvider

    router = Router.from_settings(routed_settings())
    try:
        assert isinstance(router.generators["plot"].inner, Cached)  # type: ignore[attr-defined]
        assert set(router.providers) == {"a", "b", "c"}
        assert all(isinstance(p, OpenAICompatProvider) for p in router.providers.values())
        assert router.runlog is not None and router.runlog.available
        assert router.runlog.path == router.settings.runlog_path
    finally:
        await router.aclose()


async def test_routes_from_a_later_provider_rotate_the_chain_down_to_its_providers() -> None:
    """[a, b] share a profile: one route. From provider 1 it is [b, a] (a still the fallback),
    composed once; the start wraps around, and a chain of one is never rotated."""
    providers = scripted_trio()
    router = Router(routed_settings(plot="[a, b]", scene="c"), dict(providers))
    assert [r.names for r in router.routes("plot")] == [["a", "b"]]
    rotated = router.routes("plot", start=1)
    assert [r.names for r in rotated] == [["b", "a"]] and router.routes("plot", start=1) is rotated
    assert router.routes("plot", start=2) is router.routes("plot")
    assert router.routes("scene", start=1) is router.routes("scene")
    providers["b"].script = lambda r: ProviderUnavailable("b is down")
    assert (await rotated[0].generator.generate(request(component="plot"))).text == "from a"
    assert providers["b"].calls == 2 and providers["a"].calls == 1  # b first, then its fallback
