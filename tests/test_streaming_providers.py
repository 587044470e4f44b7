"""Streaming from every provider (issue 27): an OpenAI-compatible server's server-sent events, read
against a real misbehaving server on 127.0.0.1 (faulty_server.py), and the embedded model's tokens.

What is streamed is only shown: the `Completion` returned is the one the whole answer would be,
every guard of a whole answer holds for a stream, and a bad stream is a retryable error, never a
partial answer taken as whole."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from faulty_server import DEFAULT_ANSWER, FaultyServer, run_trial, trial_settings
from storyengine import config, streaming
from storyengine.commands.providers import check_provider
from storyengine.config import CacheSettings, OpenAIProviderSettings
from storyengine.errors import BadResponse, EmptyOutput, ProviderTimeout, ResponseTooLarge
from storyengine.providers.base import estimate_tokens
from storyengine.providers.embedded import EmbeddedProvider
from storyengine.providers.loop_watch import TextFeed
from storyengine.providers.openai_compat import OpenAICompatProvider
from storyengine.routing.router import Router
from storyengine.types import CompletionRequest, Message

TEXT = "The keeper climbed the stairs at dusk. The lamp was cold, and the sea was loud below."
SECRET = "sk-stream-0123456789abcdef-SECRET"
KEY_ENV = "STORYENGINE_TEST_STREAM_KEY"


class Heard:
    """A listener that keeps what it hears: the pieces of the current attempt, and the attempts."""

    def __init__(self) -> None:
        self.deltas: list[str] = []
        self.attempts = 0
        self.first = asyncio.Event()

    def listener(self) -> streaming.Listener:
        return streaming.Listener(on_delta=self._delta, on_attempt=self._attempt)

    def _delta(self, text: str) -> None:
        self.deltas.append(text)
        self.first.set()

    def _attempt(self) -> None:
        self.attempts += 1
        self.deltas = []

    @property
    def text(self) -> str:
        return "".join(self.deltas)


def draft(**kwargs: Any) -> CompletionRequest:
    """A stage-1 request: free text, the kind a listener hears."""
    fields: dict[str, Any] = {
        "messages": (Message(role="user", content="Write two sentences about a lighthouse keeper."),),
        "component": "scene",
        "stage": "freeform",
        "max_tokens": 64,
        **kwargs,
    }
    return CompletionRequest(**fields)


def provider(server: FaultyServer, **settings: Any) -> OpenAICompatProvider:
    settings = {"api_key_env": KEY_ENV, **settings}
    config = OpenAIProviderSettings(type="openai", base_url=server.base_url, model="faulty", **settings)
    return OpenAICompatProvider("faulty", config)


async def ask(server: FaultyServer, request: CompletionRequest, heard: Heard | None = None, **settings: Any):  # type: ignore[no-untyped-def]
    chat = provider(server, **settings)
    try:
        with streaming.listening(heard.listener() if heard else None):
            return await chat.complete(request)
    finally:
        await chat.aclose()


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)


@pytest.fixture
def server() -> Iterator[FaultyServer]:
    with FaultyServer(answer=TEXT, then="sse") as running:
        yield running


def served(script: list[str], **kwargs: Any) -> FaultyServer:
    return FaultyServer(script, answer=TEXT, **kwargs)


# -- a stream is the answer read whole, shown as it comes --


async def test_a_streamed_answer_is_the_answer_read_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "secret_values", lambda: [])  # no secret to hold pieces back for
    heard = Heard()
    with served(["sse", "ok"]) as server:
        streamed = await ask(server, draft(), heard, api_key_env=None)
        whole = await ask(server, draft(), api_key_env=None)  # nobody listens: not streamed
    assert server.bodies[0]["stream"] is True
    assert server.bodies[0]["stream_options"] == {"include_usage": True}
    assert server.bodies[1]["stream"] is False and "stream_options" not in server.bodies[1]
    assert streamed.text == whole.text == TEXT
    # the pieces came one by one, as sent, in order, and make the answer
    assert heard.deltas == [word + " " for word in TEXT.split()[:-1]] + ["below."]
    assert heard.text == TEXT
    assert (streamed.finish_reason, streamed.model, streamed.structured_mode) == ("stop", "faulty", "none")
    assert not streamed.truncated
    # the usage is the server's final chunk's
    assert (streamed.usage.prompt_tokens, streamed.usage.completion_tokens) == (20, len(TEXT.split()))
    assert not streamed.usage_estimated


async def test_a_stream_without_usage_has_its_usage_estimated_and_flagged() -> None:
    with served(["sse_no_usage"]) as server:
        completion = await ask(server, draft(), Heard())
    assert completion.text == TEXT and completion.usage_estimated
    assert completion.usage.completion_tokens == estimate_tokens(TEXT)
    assert completion.usage.prompt_tokens > 0


async def test_the_answer_read_whole_flags_estimated_usage_too() -> None:
    with served(["no_finish", "ok"]) as server:
        missing = await ask(server, draft())
        counted = await ask(server, draft())
    assert missing.usage_estimated and not counted.usage_estimated


async def test_a_stream_cut_off_at_max_tokens_is_truncated() -> None:
    with served(["sse_length"]) as server:
        completion = await ask(server, draft(), Heard())
    assert completion.finish_reason == "length" and completion.truncated


async def test_a_server_that_answers_a_stream_request_whole_is_read_whole_and_shown_whole() -> None:
    heard = Heard()
    with served(["ok"]) as server:
        completion = await ask(server, draft(), heard)
    assert server.bodies[0]["stream"] is True
    assert completion.text == TEXT and heard.deltas == [TEXT]


# -- when a request is streamed --


async def test_a_structured_request_streams_only_to_a_listener_of_its_json(server: FaultyServer) -> None:
    """A whole object's JSON streams when someone reads it as it grows (pipeline/growing_json.py
    sets that listener); `stream: on` alone streams free text, never a schema."""
    schema = {"type": "object", "properties": {"title": {"type": "string"}}}
    server.script = ["ok", "ok"]
    await ask(server, draft(json_schema=schema, stage="structuring"), None, stream="on")
    heard = Heard()
    await ask(server, draft(json_schema=schema, stage="structuring"), heard, stream="auto")
    assert [body["stream"] for body in server.bodies] == [False, True] and heard.deltas


@pytest.mark.parametrize(
    ("stream", "listening", "stage", "streamed"),
    [
        ("auto", True, "freeform", True),
        ("auto", False, "freeform", False),
        ("auto", True, "summarize", False),
        ("on", False, "summarize", True),
        ("off", True, "freeform", False),
    ],
)
async def test_the_stream_setting_decides(stream: str, listening: bool, stage: str, streamed: bool) -> None:
    with served([], then="ok") as server:
        await ask(server, draft(stage=stage), Heard() if listening else None, stream=stream)
    assert server.bodies[0]["stream"] is streamed


# -- every guard of a whole answer holds for a stream --

BAD_STREAMS = [
    ("sse_cut", "cut in the middle of an event"),
    ("sse_no_end", "ended before the answer did"),
    ("sse_not_json", "not JSON: {the model said: hello"),
    ("sse_bad_utf8", "not valid UTF-8 (byte 0xe2"),
    ("sse_surrogate", "lone surrogate (U+D800"),
]


@pytest.mark.parametrize(("fault", "said"), BAD_STREAMS, ids=[b[0] for b in BAD_STREAMS])
async def test_a_bad_stream_is_a_retryable_bad_response(fault: str, said: str) -> None:
    with served([fault]) as server:
        with pytest.raises(BadResponse) as caught:
            await ask(server, draft(), Heard())
    assert caught.value.retryable and caught.value.provider == "faulty"
    assert said in str(caught.value)
    assert (
        str(caught.value).startswith(f"faulty: the stream from {server.base_url}") or fault == "sse_surrogate"
    )


@pytest.mark.parametrize("fault", ["sse_done_early", "sse_done_empty"])
async def test_a_stream_the_server_ends_early_is_asked_again_whole_and_never_streamed_again(
    fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    """llama_cpp.server ends a streamed answer with [DONE] (no finish_reason) whenever another
    request arrives, so concurrent scenes cut each other on every retry (measured on a real one):
    the cut answer is void, the same request is read whole, and this server streams no more."""
    heard = Heard()
    with served([fault], then="ok") as server:
        chat = provider(server)
        try:
            with streaming.listening(heard.listener()):
                first = await chat.complete(draft())
                second = await chat.complete(draft())
        finally:
            await chat.aclose()
    assert [b["stream"] for b in server.bodies] == [True, False, False]
    assert server.bodies[1]["messages"] == server.bodies[0]["messages"]  # the same request, whole
    assert first.text == second.text == TEXT and first.finish_reason == "stop"
    assert heard.attempts == 1  # what the cut stream showed was voided once
    cut = [r for r in caplog.records if "no finish_reason" in r.getMessage()]
    assert len(cut) == 1 and "without streaming from now on" in cut[0].getMessage()


async def test_a_stream_that_never_ends_meets_the_whole_answer_deadline() -> None:
    heard = Heard()
    with served(["sse_hang"]) as server:  # keep-alive comments every 50 ms: no read ever times out
        with pytest.raises(ProviderTimeout) as caught:
            await ask(server, draft(), heard, timeout=1.0)
    assert "within 1s" in str(caught.value) and "bytes of it had arrived" in str(caught.value)
    assert "".join(heard.deltas) == "The keeper "[: len(heard.text)]  # shown as it came (or held back)


async def test_a_stream_larger_than_max_response_bytes_is_refused() -> None:
    with served(["sse"]) as server:
        with pytest.raises(ResponseTooLarge):
            await ask(server, draft(), Heard(), max_response_bytes=600)


async def test_a_streamed_tool_call_is_refused_not_taken_for_text() -> None:
    with served(["sse_tool"]) as server:
        with pytest.raises(EmptyOutput) as caught:
            await ask(server, draft(), Heard())
    assert not caught.value.retryable and "tool call" in str(caught.value)


async def test_a_secret_split_across_pieces_is_never_shown() -> None:
    heard = Heard()
    with served(["sse_secret"]) as server:
        completion = await ask(server, draft(), heard)
    assert SECRET not in completion.text and "Authorization: Bearer ***." in completion.text
    assert heard.text == completion.text and len(heard.deltas) > 1
    shown = ""
    for piece in heard.deltas:  # no prefix of what was shown ends in a piece of the key
        shown += piece
        assert not any(shown.endswith(SECRET[:n]) for n in range(4, len(SECRET) + 1)), shown


# -- a bad stream through the router: retried, and nothing of it kept --


async def test_a_bad_stream_is_retried_and_the_retry_is_shown_afresh() -> None:
    heard = Heard()
    request = draft(temperature=0.3)
    with FaultyServer(["sse_cut"], then="sse") as server:  # the answer is the Title JSON the check wants
        with streaming.listening(heard.listener()):
            trial = await run_trial({"a": server.base_url}, ["a"], request=request)
    assert trial.error is None and trial.completion is not None
    assert trial.completion.text == DEFAULT_ANSWER
    assert [r.outcome for r in trial.attempts] == ["retry", "ok"]
    assert (trial.attempts[0].error or "").startswith("BadResponse")
    assert heard.attempts == 2 and heard.text == DEFAULT_ANSWER  # the cut attempt's pieces were dropped


async def test_nothing_of_a_failed_stream_is_cached() -> None:
    request = draft(seed=7, temperature=0.3)
    with FaultyServer(["sse_cut", "sse_cut", "sse"]) as server:
        settings = trial_settings({"a": server.base_url}, ["a"], attempts=1, backoff=0)
        settings = settings.model_copy(update={"cache": CacheSettings()})

        async def no_sleep(_seconds: float) -> None:
            return None

        for expected in ("error", "error", DEFAULT_ANSWER, DEFAULT_ANSWER):
            router = Router.from_settings(settings, sleep=no_sleep)
            try:
                with streaming.listening(Heard().listener()):
                    answer = (await router.generate(request)).text
            except BadResponse as exc:  # a single provider that keeps failing raises its own error
                assert "cut in the middle of an event" in str(exc)
                answer = "error"
            finally:
                await router.aclose()
            assert answer == expected
    assert server.served == ["sse_cut", "sse_cut", "sse"]  # the last answer came from the cache


# -- `providers check` says whether a server streams --


@pytest.mark.parametrize(
    ("script", "stream", "says"),
    [
        (["ok", "sse"], "auto", "yes"),
        (["ok", "ok"], "auto", "no"),
        (["ok"], "off", "off"),
        (["ok", "sse_cut"], "on", "no"),
    ],
)
async def test_providers_check_says_whether_the_server_streams(
    script: list[str], stream: str, says: str
) -> None:
    with served(script) as server:
        chat = provider(server, structured_output="none", stream=stream)
        try:
            result = await check_provider(chat, 10.0)
        finally:
            await chat.aclose()
    assert (result.ok, result.streaming) == (True, says)
    assert server.served == script  # one small request more, and only when streaming is not off
    if len(script) > 1:
        assert server.bodies[1]["stream"] is True and server.bodies[1]["max_tokens"] <= 16
    assert ("streamed probe failed" in result.detail) is (script[-1] == "sse_cut")


# -- stop: a cancelled call ends its stream --


async def test_cancelling_a_streamed_call_closes_its_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "secret_values", lambda: [])
    heard = Heard()
    with served(["sse_hang"]) as server:
        call = asyncio.create_task(ask(server, draft(), heard, api_key_env=None, timeout=60.0))
        await asyncio.wait_for(heard.first.wait(), 30)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        # the server's next keep-alive finds the connection closed (it would write for 60 s otherwise)
        assert await asyncio.to_thread(server.client_gone.wait, 30)
    assert heard.deltas[0] == "The "


# -- the embedded model: its tokens as they are sampled --


def story_request(max_tokens: int, seed: int = 11) -> CompletionRequest:
    return draft(
        messages=(
            Message(role="user", content="Write a short story about a lighthouse keeper and a storm."),
        ),
        max_tokens=max_tokens,
        seed=seed,
        temperature=0.8,
        timeout=600.0,
    )


@pytest.fixture(scope="module")
def smol() -> EmbeddedProvider:
    return EmbeddedProvider()


@pytest.mark.model
async def test_the_embedded_model_streams_the_same_answer_it_writes_unheard(smol: EmbeddedProvider) -> None:
    heard = Heard()
    with streaming.listening(heard.listener()):
        streamed = await smol.complete(story_request(24))
    quiet = await smol.complete(story_request(24))
    assert streamed.text == quiet.text and streamed.text.strip()
    counts = ("prompt_tokens", "completion_tokens")  # (the second reuses the first's KV)
    assert [getattr(streamed.usage, c) for c in counts] == [getattr(quiet.usage, c) for c in counts]
    assert streamed.finish_reason == quiet.finish_reason
    assert len(heard.deltas) > 5 and heard.text == streamed.text  # token by token, and the answer
    # JSON streams only to whoever reads it as it grows, and is the same answer
    heard.deltas.clear()
    asked = story_request(24).model_copy(update={"json_schema": {"type": "object"}, "stage": "structuring"})
    with streaming.listening(heard.listener()):
        streamed_json = await smol.complete(asked)
    assert heard.text == streamed_json.text == (await smol.complete(asked)).text


@pytest.mark.model
async def test_cancelling_an_embedded_call_stops_its_generation_and_frees_the_model(
    smol: EmbeddedProvider,
) -> None:
    model = await smol.load()
    calls = model.stats.calls
    heard = Heard()

    async def listened() -> Any:
        with streaming.listening(heard.listener()):
            return await smol.complete(story_request(1500, seed=3))

    call = asyncio.create_task(listened())
    await asyncio.wait_for(heard.first.wait(), 120)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    after = await smol.complete(story_request(8))  # waits for the model: the worker let it go
    assert after.text.strip()
    assert model.stats.calls == calls + 1  # the cancelled generation was aborted, never finished
    assert not model.thread_lock.locked()


def test_a_token_feed_shows_whole_characters_and_nothing_from_a_stop_sequence_on() -> None:
    pieces = {
        1: b"The ",
        2: b"caf",
        3: b"\xc3",
        4: b"\xa9 ",
        5: b"clo",
        6: b"sed",
        7: b"\n#",
        8: b"#",
        9: b"x",
    }
    shown: list[str] = []
    feed = TextFeed(lambda tokens: b"".join(pieces[t] for t in tokens), shown.append, stop=("\n##",))
    for token in (1, 2, 3):
        feed.token(token)
    assert shown == ["The ", "caf"]  # half a character is held back
    for token in (4, 5, 6, 7):
        feed.token(token)
    assert "".join(shown) == "The café closed"  # "\n#" may begin the stop sequence: held back
    feed.token(8)
    feed.token(9)
    assert feed.ended and feed.shown == "".join(shown) == "The café closed"
