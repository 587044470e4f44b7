"""The invalid-output log: one JSON file per failure, rotation by count and size, secrets scrubbed."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from storyengine.errors import SchemaValidationError
from storyengine.failures import REDACTED, InvalidOutputLog, secret_values_in

SECRET = "sk-test-0123456789abcdef"


def record(log: InvalidOutputLog, **changes: Any) -> Path | None:
    fields: dict[str, Any] = {
        "component": "plot",
        "stage": "structuring",
        "attempt": 1,
        "prompt_hash": "ab" * 32,
        "provider": "local",
        "model": "smollm2",
        "errors": "- beats[2].tension: Input should be less than or equal to 10 (got 11)",
        "raw_text": '{"beats": [}',
        "repaired_text": '{"beats": []}',
    }
    return log.record(**{**fields, **changes})


def test_record_writes_one_readable_json_file(tmp_path: Path) -> None:
    directory = tmp_path / "logs" / "invalid_json"
    log = InvalidOutputLog(directory, max_files=10, max_bytes=100_000)
    path = record(log, raw_text="Résumé: {bad", attempt=2)
    assert path is not None and path.parent == directory
    entry = json.loads(path.read_text(encoding="utf-8"))
    assert entry["component"] == "plot" and entry["attempt"] == 2
    assert entry["raw_text"] == "Résumé: {bad"
    assert entry["repaired_text"] == '{"beats": []}'
    assert entry["errors"].startswith("- beats[2].tension")
    assert "plot" in path.name and path.suffix == ".json"
    assert log.files() == [path]
    assert not list(directory.glob("*.part"))


def test_file_names_sort_by_time(tmp_path: Path) -> None:
    log = InvalidOutputLog(tmp_path, max_files=100, max_bytes=10_000_000)
    written = [record(log, attempt=i) for i in range(30)]
    assert sorted(p.name for p in written if p) == [p.name for p in written if p]
    assert len({p.name for p in written if p}) == 30
    assert log.files() == written


def test_rotation_keeps_at_most_max_files_dropping_the_oldest(tmp_path: Path) -> None:
    log = InvalidOutputLog(tmp_path, max_files=3, max_bytes=10_000_000)
    written = [record(log, attempt=i) for i in range(7)]
    assert log.files() == written[-3:]
    attempts = [json.loads(p.read_text())["attempt"] for p in log.files()]
    assert attempts == [4, 5, 6]


def test_rotation_keeps_total_bytes_under_the_cap(tmp_path: Path) -> None:
    log = InvalidOutputLog(tmp_path, max_files=1000, max_bytes=6000)
    written = [record(log, raw_text="x" * 500, attempt=i) for i in range(20)]
    files = log.files()
    assert sum(p.stat().st_size for p in files) <= 6000
    assert files == written[-len(files) :]
    assert 3 <= len(files) < 20


def test_the_newest_record_survives_even_when_large_and_big_texts_are_clipped(tmp_path: Path) -> None:
    log = InvalidOutputLog(tmp_path, max_files=10, max_bytes=2048)
    record(log)
    clipped = record(log, raw_text="start " + "y" * 50_000 + " end")
    assert clipped is not None and len(log.files()) == 2
    raw = json.loads(clipped.read_text())["raw_text"]
    assert raw.startswith("start ") and raw.endswith(" end") and "characters cut" in raw
    assert len(raw) < 1000
    newest = record(log, errors="e" * 5000)  # errors are not clipped: this file alone is over the cap
    assert newest is not None and log.files() == [newest]


def test_other_files_in_the_directory_are_never_rotated(tmp_path: Path) -> None:
    keep = tmp_path / "notes.json"
    keep.write_text("{}")
    log = InvalidOutputLog(tmp_path, max_files=1, max_bytes=10_000)
    for i in range(3):
        record(log, attempt=i)
    assert keep.exists() and len(log.files()) == 1


def test_secrets_are_redacted_everywhere(tmp_path: Path) -> None:
    log = InvalidOutputLog(tmp_path, max_files=10, max_bytes=100_000, secrets=[SECRET, "short"])
    path = record(
        log,
        raw_text=f"Authorization: Bearer {SECRET}",
        repaired_text=f'{{"key": "{SECRET}"}}',
        errors=[{"loc": ["x"], "msg": f"bad {SECRET}", SECRET: "as key"}],
        model=f"model-{SECRET}",
    )
    assert path is not None
    text = path.read_text(encoding="utf-8")
    assert SECRET not in text
    entry = json.loads(text)
    assert entry["raw_text"] == f"Authorization: Bearer {REDACTED}"
    assert entry["errors"][0]["msg"] == f"bad {REDACTED}"
    assert entry["model"] == f"model-{REDACTED}"
    assert REDACTED in entry["errors"][0]
    # values shorter than 8 characters are not treated as secrets
    assert "short" in json.dumps(json.loads(record(log, raw_text="short text").read_text()))  # type: ignore[union-attr]


def test_secret_values_in_picks_key_token_and_secret_variables() -> None:
    environ = {
        "OPENAI_API_KEY": "sk-abcdefgh123",
        "HF_TOKEN": "hf_zyxwvuts9876\n",
        "APP_SECRET": "correct horse battery",
        "SHORT_KEY": "1234567",
        "KEYBOARD": "a value that is long",
        "HOME": "/home/someone/long/path",
        "github_token": "ghp_lowercase_name",
    }
    assert sorted(secret_values_in(environ)) == sorted(
        ["sk-abcdefgh123", "hf_zyxwvuts9876", "correct horse battery", "ghp_lowercase_name"]
    )


def test_an_unwritable_directory_warns_once_and_returns_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    log = InvalidOutputLog(blocker / "invalid_json", max_files=5, max_bytes=10_000, secrets=[SECRET])
    with caplog.at_level(logging.WARNING, logger="storyengine"):
        assert record(log, raw_text=SECRET) is None
        assert record(log) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "invalid_json" in warnings[0].getMessage() and SECRET not in warnings[0].getMessage()
    assert log.files() == []


def kept_files(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in directory.glob("*.json")]


async def test_the_instrumentation_keeps_every_answer_a_check_refused(tmp_path: Path) -> None:
    """The router's instrumentation, not the pipeline, writes invalid_json/: one file an attempt."""
    from storyengine.providers.scripted import ScriptedProvider
    from storyengine.routing.instrument import Instrumentation
    from storyengine.routing.retry import Asked
    from storyengine.schemas import PlotStructure
    from storyengine.structuring import validate_json_payload
    from storyengine.types import CompletionRequest, Message

    log = InvalidOutputLog(tmp_path, max_files=10, max_bytes=100_000)
    provider = ScriptedProvider(lambda request: '{"title": "half a plot"', name="local", model="smollm2")
    attempt = Instrumentation(invalid_outputs=log).attempts(
        Asked(provider), provider="local", model="smollm2"
    )
    request = CompletionRequest(
        messages=(Message(role="user", content="the plot as JSON"),),
        component="plot",
        stage="structuring",
        attempt=2,
    )
    with pytest.raises(SchemaValidationError):
        await attempt.generate(request, lambda c: validate_json_payload(c.text, PlotStructure))
    (data,) = kept_files(tmp_path)
    assert data["raw_text"] == '{"title": "half a plot"' and data["errors"]
    assert (data["component"], data["attempt"], data["provider"]) == ("plot", 2, "local")
    await attempt.generate(request, None)  # an answer no check refuses is not kept
    assert len(kept_files(tmp_path)) == 1
