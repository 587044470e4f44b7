"""Secrets by name: the value of every configured `api_key_env`, whatever the variable is called,
never reaches anything storyengine writes, even when a proxy echoes the Authorization header back.

The proxy is tests/faulty_server.py (`echo`: an HTML error page listing the request's headers;
`echo_answer`: a completion whose text repeats the header). After a run, every file under the
test's directory (run log, checkpoints, cache, invalid_json/, the story and its metadata) and the
CLI's output are searched for the key.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from faulty_server import TRIAL_REQUEST, FaultyServer
from storyengine.cli import main
from storyengine.config import OpenAIProviderSettings, parse_settings, secret_values
from storyengine.errors import ProviderHTTPError
from storyengine.failures import InvalidOutputLog
from storyengine.pipeline.engine import StoryEngine
from storyengine.providers.fake_story import story_script
from storyengine.providers.openai_compat import OpenAICompatProvider
from storyengine.providers.scripted import ScriptedProvider
from storyengine.secrets import scrub, secret_values_in

KEY_ENV = "MY_LLM_CREDENTIAL"  # not *_KEY, *_TOKEN or *_SECRET: only its configuration makes it secret
KEY = "cred-7f3a9c1e5b2d8046-VERYSECRET"
PREMISE = "A lighthouse keeper finds a message in a bottle written by her future self."


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


@pytest.fixture
def servers() -> Iterator[list[FaultyServer]]:
    started: list[FaultyServer] = []
    yield started
    for server in started:
        server.stop()


def config_text(url: str, root: Path, chain: list[str]) -> str:
    routes = ", ".join(
        f"{c}: [{', '.join(chain)}]"
        for c in ("plot", "scene", "dialogue", "evaluation", "enhancement", "summarize")
    )
    return f"""
narrative:
  providers: {{{routes}}}
providers:
  embedded: {{type: embedded, context_window: 8192}}
  proxy:
    {{type: openai, base_url: "{url}", model: m, api_key_env: {KEY_ENV}, timeout: 5, context_window: 8192}}
retry: {{attempts: 2, backoff_initial: 0, backoff_max: 0}}
cache: {{enabled: true, path: "{root / "cache.sqlite3"}"}}
logging: {{dir: "{root / "logs"}", runlog: "{root / "runs.sqlite3"}"}}
"""


def files_holding(root: Path, needle: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def test_a_configured_key_env_is_secret_whatever_its_name() -> None:
    assert secret_values_in({KEY_ENV: KEY}, names=()) == []  # by suffix alone it would leak
    OpenAIProviderSettings(type="openai", base_url="http://x/v1", model="m", api_key_env=KEY_ENV)
    assert KEY in secret_values()
    assert secret_values_in({KEY_ENV: KEY, "HOME": "/home/someone/else"}) == [KEY]
    assert scrub(f"Bearer {KEY}.", secret_values()) == "Bearer [redacted]."


def test_the_invalid_output_log_scrubs_the_configured_key(tmp_path: Path) -> None:
    OpenAIProviderSettings(type="openai", base_url="http://x/v1", model="m", api_key_env=KEY_ENV)
    log = InvalidOutputLog(tmp_path, secrets=secret_values())
    path = log.record(
        component="plot", stage="structuring", attempt=1, prompt_hash="h", provider="p", model="m",
        errors=[f"echo {KEY}"], raw_text=f"Authorization: Bearer {KEY}",
    )  # fmt: skip
    assert path is not None and KEY not in path.read_text()


async def test_an_echoing_proxy_gets_a_clear_error_without_the_key(servers: list[FaultyServer]) -> None:
    server = FaultyServer([], then="echo").start()
    servers.append(server)
    settings = parse_settings(config_text(server.base_url, Path("/tmp/unused"), ["proxy"]))
    entry = settings.providers["proxy"]
    assert isinstance(entry, OpenAIProviderSettings)
    provider = OpenAICompatProvider("proxy", entry)
    with pytest.raises(ProviderHTTPError) as caught:
        await provider.complete(TRIAL_REQUEST)
    await provider.aclose()
    assert caught.value.status == 502
    assert f"Bearer {KEY}" in " ".join(server.headers[0].values())  # it was sent, and echoed
    assert "Authorization: Bearer ***" in str(caught.value)
    assert KEY not in str(caught.value)


@pytest.mark.parametrize("at", [150, 185, 195, 199])
async def test_a_key_across_the_excerpt_cut_leaves_no_part_of_it(at: int) -> None:
    """The error excerpt is 200 characters: the key is scrubbed from the whole body first, so a key
    that the cut would split leaves no prefix behind."""
    page = "x" * at + KEY + " and more text after it " * 20

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text=page)

    entry = OpenAIProviderSettings(
        type="openai", base_url="http://127.0.0.1:9/v1", model="m", api_key_env=KEY_ENV
    )
    provider = OpenAICompatProvider("proxy", entry, transport=httpx.MockTransport(handler))
    with pytest.raises(ProviderHTTPError) as caught:
        await provider.complete(TRIAL_REQUEST)
    assert KEY[:6] not in str(caught.value)


async def test_no_file_a_run_writes_holds_the_key(tmp_path: Path, servers: list[FaultyServer]) -> None:
    """A whole story through an echoing proxy (first in every chain) with a scripted fallback."""
    server = FaultyServer(["echo", "echo"], then="echo_answer").start()
    servers.append(server)
    settings = parse_settings(
        config_text(server.base_url, tmp_path, ["proxy", "embedded"]), source="test.yaml"
    )
    entry = settings.providers["proxy"]
    assert isinstance(entry, OpenAIProviderSettings)
    providers = {
        "proxy": OpenAICompatProvider("proxy", entry),
        "embedded": ScriptedProvider(story_script, name="embedded", structured_mode="grammar"),
    }
    engine = StoryEngine.from_config(settings=settings, providers=providers)  # type: ignore[arg-type]
    try:
        story = await engine.generate(PREMISE, scenes=2, seed=7)
    finally:
        await engine.aclose()
    (tmp_path / "story.json").write_text(story.model_dump_json(indent=2))

    # The proxy did echo the key, many times, as an error page and as answers.
    assert server.served.count("echo_answer") > 3
    assert all(h.get("Authorization") == f"Bearer {KEY}" for h in server.headers)
    # ... and it was written nowhere.
    assert files_holding(tmp_path, KEY) == []
    assert files_holding(tmp_path, KEY[:16]) == []
    # The places were really exercised: the run log has the echoed error, invalid_json/ has files,
    # the story's metadata holds an echoed answer, the cache has entries.
    with sqlite3.connect(tmp_path / "runs.sqlite3") as db:
        errors = " ".join(row[0] or "" for row in db.execute("SELECT error FROM calls"))
    assert "HTTP 502" in errors and "Authorization: Bearer ***" in errors
    assert list((tmp_path / "logs" / "invalid_json").glob("*.json"))
    assert "Authorization: Bearer ***" in json.dumps(story.model_dump(mode="json"))
    assert (tmp_path / "cache.sqlite3").stat().st_size > 0


def test_a_failed_cli_run_shows_and_writes_no_key(
    tmp_path: Path, servers: list[FaultyServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = FaultyServer([], then="echo").start()
    servers.append(server)
    config = tmp_path / "config.yaml"
    config.write_text(config_text(server.base_url, tmp_path, ["proxy"]))
    result = CliRunner().invoke(
        main, ["generate", PREMISE, "--config", str(config), "--scenes", "1", "--seed", "3",
               "--out", str(tmp_path / "out"), "--quiet"],
    )  # fmt: skip
    assert result.exit_code != 0
    assert server.requests >= 1 and f"Bearer {KEY}" in server.headers[0]["Authorization"]
    assert "HTTP 502" in result.output
    assert KEY not in result.output and KEY not in (result.stderr or "")
    assert files_holding(tmp_path, KEY) == []
    with sqlite3.connect(tmp_path / "runs.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM calls WHERE error LIKE '%HTTP 502%'").fetchone()[0] >= 1
