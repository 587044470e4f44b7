"""The OpenAI-compatible provider against a real `llama_cpp.server` serving SmolLM2 on 127.0.0.1.

Which structured-output modes llama_cpp.server 0.3 speaks: `json_object_schema` (a grammar
from the schema) and `tool_call` (a forced function call, also grammar-constrained);
`json_schema` is rejected (with HTTP 500 and a validation message); `none` is plain text.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from llama_server import LlamaServer, start_llama_server
from storyengine import streaming
from storyengine.config import OpenAIProviderSettings
from storyengine.errors import AuthenticationError, ProviderHTTPError
from storyengine.providers.embedded import default_model_path
from storyengine.providers.openai_compat import OpenAICompatProvider
from storyengine.types import CompletionRequest, Message

pytestmark = [pytest.mark.server, pytest.mark.model]

SERVER_KEY = "local-test-key-7f3a9c"
KEY_ENV = "STORYENGINE_TEST_LLAMA_KEY"
SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 40},
        "mood": {"type": "string", "enum": ["calm", "tense", "joyful"]},
    },
    "required": ["title", "mood"],
}


class Scene(BaseModel):
    title: str
    mood: Literal["calm", "tense", "joyful"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    running = start_llama_server(default_model_path(), log, api_key=SERVER_KEY)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(autouse=True)
def _server_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SERVER_KEY)


def provider(server: LlamaServer, mode: str, **settings: Any) -> OpenAICompatProvider:
    config = OpenAIProviderSettings(
        type="openai",
        base_url=server.base_url,
        model="smollm2",
        api_key_env=KEY_ENV,
        structured_output=mode,  # type: ignore[arg-type]
        context_window=2048,
        **settings,
    )
    return OpenAICompatProvider("llamacpp", config)


def scene_request(**kwargs: Any) -> CompletionRequest:
    return CompletionRequest(
        messages=(
            Message(role="system", content="You describe story scenes as JSON."),
            Message(
                role="user", content="A lighthouse keeper sees a ship in a storm. Give a title and mood."
            ),
        ),
        temperature=0.0,
        seed=0,
        max_tokens=64,
        json_schema=SCHEMA,
        schema_name="scene",
        **kwargs,
    )


@pytest.mark.parametrize("mode", ["json_object_schema", "tool_call"])
async def test_structured_modes_the_server_honours(server: LlamaServer, mode: str) -> None:
    llamacpp = provider(server, mode)
    try:
        completion = await llamacpp.complete(scene_request())
    finally:
        await llamacpp.aclose()
    scene = Scene.model_validate(json.loads(completion.text))
    assert len(scene.title) <= 40
    assert completion.structured_mode == mode
    assert completion.provider == "llamacpp"
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens > 0
    assert completion.finish_reason == ("tool_calls" if mode == "tool_call" else "stop")


async def test_json_schema_mode_is_rejected_clearly(server: LlamaServer) -> None:
    llamacpp = provider(server, "json_schema")
    try:
        with pytest.raises(ProviderHTTPError) as caught:
            await llamacpp.complete(scene_request())
    finally:
        await llamacpp.aclose()
    message = str(caught.value)
    # llama_cpp.server 0.3 turns its request-validation error into HTTP 500.
    assert caught.value.status == 500
    assert "Input should be 'text' or 'json_object'" in message
    assert "structured_output 'json_schema'" in message
    assert len(message) < 600


async def test_plain_text_and_length_cut_off(server: LlamaServer) -> None:
    llamacpp = provider(server, "none")
    try:
        plain = await llamacpp.complete(
            CompletionRequest(
                messages=(Message(role="user", content="Name a colour."),), temperature=0.0, max_tokens=16
            )
        )
        cut = await llamacpp.complete(
            CompletionRequest(
                messages=(Message(role="user", content="Tell me a long story about a dragon."),), max_tokens=3
            )
        )
    finally:
        await llamacpp.aclose()
    assert plain.text.strip()
    assert plain.structured_mode == "none"
    assert cut.finish_reason == "length"
    assert cut.usage.completion_tokens == 3


async def test_a_free_text_answer_streams_from_the_server(server: LlamaServer) -> None:
    deltas: list[str] = []
    llamacpp = provider(server, "none")
    request = CompletionRequest(
        messages=(Message(role="user", content="Tell me a short story about a lighthouse keeper."),),
        temperature=0.0,
        seed=0,
        max_tokens=48,
        component="scene",
        stage="freeform",
    )
    try:
        with streaming.listening(streaming.Listener(on_delta=deltas.append)):
            completion = await llamacpp.complete(request)
    finally:
        await llamacpp.aclose()
    assert llamacpp.streamed_answers == 1  # server-sent events, not one JSON body
    assert len(deltas) > 1 and "".join(deltas) == completion.text and completion.text.strip()
    assert completion.finish_reason in ("stop", "length")
    # llama_cpp.server 0.3 sends no usage in a stream: it is estimated, and says so
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    assert completion.usage_estimated


async def test_wrong_key_is_an_authentication_error(
    server: LlamaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "wrong-key-123")
    llamacpp = provider(server, "none")
    try:
        with pytest.raises(AuthenticationError) as caught:
            await llamacpp.complete(scene_request())
    finally:
        await llamacpp.aclose()
    assert caught.value.status == 401
    assert KEY_ENV in str(caught.value)
    assert "wrong-key-123" not in str(caught.value)
    assert SERVER_KEY not in str(caught.value)


def write_config(path: Path, server: LlamaServer, mode: str) -> Path:
    path.write_text(
        "narrative:\n  providers: {plot: local, scene: local, dialogue: local, evaluation: local,\n"
        "              enhancement: local, summarize: local}\n"
        f"providers:\n  local:\n    type: openai\n    base_url: {server.base_url}\n    model: smollm2\n"
        f"    api_key_env: {KEY_ENV}\n    structured_output: {mode}\n"
    )
    return path


def run_check(config: Path, *options: str) -> Any:
    from storyengine.cli import main  # imported here: it pulls in every command module

    return CliRunner().invoke(main, ["providers", "check", "--config", str(config), *options])


def test_providers_check_reports_honoured_and_not_honoured(server: LlamaServer, tmp_path: Path) -> None:
    honoured = run_check(write_config(tmp_path / "good.yaml", server, "json_object_schema"), "--json")
    assert honoured.exit_code == 0, honoured.output
    [good] = json.loads(honoured.stdout)
    assert (good["reachable"], good["ok"], good["structured_honoured"]) == (True, True, True)
    assert good["streaming"] == "yes"
    assert good["latency_s"] > 0

    bad_config = write_config(tmp_path / "bad.yaml", server, "json_schema")
    rejected = run_check(bad_config, "--json")
    assert rejected.exit_code == 0, rejected.output  # reachable and usable, only its mode is wrong
    [bad] = json.loads(rejected.stdout)
    assert (bad["reachable"], bad["ok"], bad["structured_honoured"]) == (True, True, False)
    assert "structured request rejected" in bad["detail"]
    assert "'json_object'" in bad["detail"]
    assert SERVER_KEY not in rejected.output

    table = run_check(bad_config)
    assert table.exit_code == 0
    assert "json_schema: not honoured" in table.output
    [problem] = [line for line in table.output.splitlines() if line.startswith("! ")]
    assert problem.startswith("! local: structured request rejected: http://127.0.0.1:")


def test_providers_check_fails_on_a_missing_key(
    server: LlamaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV)
    result = run_check(write_config(tmp_path / "nokey.yaml", server, "json_object_schema"))
    assert result.exit_code == 1
    [problem] = [line for line in result.output.splitlines() if line.startswith("✗ ")]
    assert f"the env var {KEY_ENV} is not set" in problem
    assert "Traceback" not in result.output


async def test_the_server_reads_a_next_turn_prefix_once_and_bench_story_counts_it(
    server: LlamaServer,
) -> None:
    """Stage 2 as the next turn of stage 1 on a real llama_cpp.server: the server's own log says it
    found the draft's prompt in its cache (what `bench story --server-log` counts); a fresh prompt
    with other first bytes finds nothing."""
    from storyengine.bench.story import server_prefix_hits

    llm = provider(server, "none")
    draft_request = CompletionRequest(
        messages=(
            Message(role="system", content="You are a novelist. Write vivid, concrete prose."),
            Message(role="user", content="Write a short scene: a keeper sees a ship in a storm."),
        ),
        temperature=0.0,
        seed=0,
        max_tokens=48,
    )
    draft = await llm.complete(draft_request)
    offset = server.log_path.stat().st_size
    ask = Message(role="user", content="Give the scene above a title of three words.")
    next_turn = CompletionRequest(
        messages=(*draft_request.messages, Message(role="assistant", content=draft.text), ask),
        temperature=0.0,
        seed=0,
        max_tokens=16,
    )
    answer = await llm.complete(next_turn)
    log = server.log_path.read_bytes()[offset:].decode("utf-8", "replace")
    hits = server_prefix_hits(log)
    assert hits["requests_with_prefix_hit"] == 1
    # it held at least the draft's own prompt: tokens it did not evaluate again
    assert hits["cached_prompt_tokens"] >= draft.usage.prompt_tokens - 1
    assert hits["cached_prompt_tokens"] + hits["evaluated_after_hit"] == answer.usage.prompt_tokens

    offset = server.log_path.stat().st_size
    fresh = CompletionRequest(
        messages=(
            Message(role="system", content="Return a title of three words for this scene."),
            Message(role="user", content=draft.text),
        ),
        temperature=0.0,
        seed=0,
        max_tokens=16,
    )
    await llm.complete(fresh)
    log = server.log_path.read_bytes()[offset:].decode("utf-8", "replace")
    assert server_prefix_hits(log)["cached_prompt_tokens"] <= 8  # at most the chat template's opening


async def test_two_streamed_answers_at_once_both_arrive_whole(server: LlamaServer) -> None:
    """llama_cpp.server ends a streamed answer ([DONE], no finish_reason) when another request
    arrives: two scenes drafted at once must still both arrive, whole (the cut one read again)."""
    llm = provider(server, "none", max_parallel=2)
    heard: list[str] = []
    with streaming.listening(streaming.Listener(on_delta=heard.append)):
        answers = await asyncio.gather(
            *(
                llm.complete(scene_request().model_copy(update={"json_schema": None, "seed": seed}))
                for seed in (0, 1)
            )
        )
    await llm.aclose()
    assert all(a.text.strip() and a.finish_reason in ("stop", "length") for a in answers)
    assert heard  # it streamed until the server cut a stream


async def test_bench_story_probes_a_caching_server_s_prefill_and_decode(server: LlamaServer) -> None:
    """llama_cpp.server keeps the last prompt: the probe must still see its real prefill (a new
    prompt each run) and a decode rate (the same prompt twice, short and long)."""
    from storyengine.bench.story import probe_server

    rates = await probe_server(provider(server, "none"), runs=2)
    assert rates["prompt_tokens"] > 200
    assert rates["decode_tps"] is not None and rates["decode_tps"] > 0
    assert rates["prefill_tps"] is not None and rates["prefill_tps"] > 0
