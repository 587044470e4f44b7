"""The embedded provider's deadline and error mapping: generation stops at the request's timeout,
and anything llama.cpp raises while generating is a ProviderError subclass."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from storyengine.errors import ModelError, ProviderError, ProviderTimeout
from storyengine.providers.embedded import EmbeddedProvider, LoadedModel
from storyengine.types import CompletionRequest, Message


def ask(**kwargs: Any) -> CompletionRequest:
    return CompletionRequest(
        messages=(Message(role="user", content="Write a very long story about a lighthouse."),), **kwargs
    )


class StandIn:
    """A llama_cpp.Llama stand-in: `behaviour(kwargs, aborted)` decides what a call does."""

    def __init__(self, behaviour: Any) -> None:
        self.behaviour = behaviour
        self.aborted = threading.Event()
        self.calls = 0

    def abort(self) -> None:
        self.aborted.set()

    def create_chat_completion(self, **kwargs: Any) -> Any:
        self.calls += 1
        return self.behaviour(kwargs, self.aborted)


def provider_with(llama: StandIn) -> EmbeddedProvider:
    provider = EmbeddedProvider("embedded")
    provider._loaded = LoadedModel(llama=llama, path=Path("stand-in.gguf"), n_ctx=2048)
    return provider


def answer(text: str = "Once upon a time.") -> dict[str, Any]:
    return {
        "choices": [{"message": {"content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 4},
    }


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("llama_decode returned -3"),
        OSError("out of memory"),
        KeyError("logits"),
        AssertionError(),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_an_exception_from_llama_cpp_while_generating_is_a_model_error(exc: Exception) -> None:
    def fail(kwargs: Any, aborted: threading.Event) -> Any:
        raise exc

    with pytest.raises(ModelError) as caught:
        await provider_with(StandIn(fail)).complete(ask())
    assert caught.value.provider == "embedded" and caught.value.retryable
    assert type(exc).__name__ in str(caught.value)


async def test_a_prompt_too_long_is_still_a_non_retryable_provider_error() -> None:
    def refuse(kwargs: Any, aborted: threading.Event) -> Any:
        raise ValueError("Requested tokens (5000) exceed context window of 2048")

    with pytest.raises(ProviderError, match="context_window") as caught:
        await provider_with(StandIn(refuse)).complete(ask())
    assert not caught.value.retryable and not isinstance(caught.value, ModelError)


async def test_an_answer_of_an_unexpected_shape_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="unexpected shape"):
        await provider_with(StandIn(lambda kwargs, aborted: {"choices": []})).complete(ask())


async def test_generation_is_stopped_at_the_deadline() -> None:
    def generate_until_aborted(kwargs: Any, aborted: threading.Event) -> Any:
        if aborted.wait(30):  # llama.cpp's decode fails once the abort callback says so
            raise RuntimeError("llama_decode returned 2")
        return answer()

    llama = StandIn(generate_until_aborted)
    started = time.perf_counter()
    with pytest.raises(ProviderTimeout) as caught:
        await provider_with(llama).complete(ask(timeout=0.3, max_tokens=4000))
    assert time.perf_counter() - started < 15  # stopped, not the 30 s the generation wanted
    assert llama.aborted.is_set()
    assert "within 0.3s" in str(caught.value) and "max_tokens 4000" in str(caught.value)
    assert caught.value.retryable


async def test_a_call_that_finishes_in_time_is_never_aborted() -> None:
    llama = StandIn(lambda kwargs, aborted: answer())
    provider = provider_with(llama)
    for _ in range(3):
        completion = await provider.complete(ask(timeout=0.5))
        assert completion.text == "Once upon a time."
    await asyncio.sleep(0.7)  # past the deadlines of the finished calls: their timers were cancelled
    assert not llama.aborted.is_set()


@pytest.mark.model
async def test_the_real_model_stops_at_its_deadline_and_answers_afterwards() -> None:
    provider = EmbeddedProvider()
    await provider.load()
    started = time.perf_counter()
    with pytest.raises(ProviderTimeout):
        await provider.complete(ask(timeout=0.5, max_tokens=1500, temperature=0.8, seed=1))
    assert time.perf_counter() - started < 20  # 1500 tokens would take ~ 20 s or more on 2 cores
    completion = await provider.complete(ask(timeout=60, max_tokens=16, seed=1))
    assert completion.text.strip() and completion.usage.completion_tokens <= 16
