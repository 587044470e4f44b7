"""The SQLite run log and `storyengine logs`, on real files."""

from __future__ import annotations

import json
import logging
import multiprocessing
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

from storyengine import runlog as runlog_module
from storyengine.cli import main
from storyengine.errors import ProviderUnavailable
from storyengine.providers.scripted import ScriptedProvider
from storyengine.routing.instrument import CallRecord, Instrumented, RecordedAttempts, RunRecorder
from storyengine.routing.retry import Asked, Retrying
from storyengine.runlog import MIGRATIONS, RunLog
from storyengine.types import CompletionRequest, Message


def record(run_id: str = "run-1", **fields: object) -> CallRecord:
    values: dict[str, object] = {
        "run_id": run_id,
        "component": "plot",
        "stage": "freeform",
        "attempt": 1,
        "provider": "lmstudio",
        "model": "qwen",
        "prompt_hash": "ab" * 32,
        "params_snapshot": {"temperature": 0.8, "json_schema": None},
        "latency_s": 0.25,
        "prompt_tokens": 12,
        "completion_tokens": 30,
        "finish_reason": "stop",
        "outcome": "ok",
    }
    values.update(fields)
    return CallRecord(**values)  # type: ignore[arg-type]


def _write_many(path: str, worker: int, count: int) -> None:
    log = RunLog(path)
    for index in range(count):
        log.record_call(record(f"proc-{worker}", attempt=index + 1))
    assert log.available, log.problem
    log.close()


# -- schema and storage --


def test_a_new_log_is_migrated_to_the_latest_version_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "runs.sqlite3"
    RunLog(path).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"runs", "calls"} <= tables
    columns = {row[1] for row in db.execute("PRAGMA table_info(calls)")}
    assert set(CallRecord.model_fields) <= columns


def test_new_migrations_run_once_in_order_on_an_existing_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "runs.sqlite3"
    log = RunLog(path)
    log.record_call(record())
    log.close()

    applied: list[str] = []

    def add_notes(db: sqlite3.Connection) -> None:
        applied.append("notes")
        db.execute("ALTER TABLE runs ADD COLUMN notes TEXT")

    monkeypatch.setattr(runlog_module, "MIGRATIONS", [*MIGRATIONS, add_notes])
    RunLog(path).close()
    reopened = RunLog(path)
    assert applied == ["notes"]
    assert len(reopened.calls()) == 1  # the data survived
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) + 1
    assert "notes" in {row[1] for row in db.execute("PRAGMA table_info(runs)")}


def test_a_log_from_a_newer_storyengine_is_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "runs.sqlite3"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    db.close()
    log = RunLog(path)
    assert not log.available and "newer" in (log.problem or "")
    log.record_call(record())  # no error
    assert "upgrade storyengine" in caplog.text


def test_calls_round_trip_and_filter(tmp_path: Path) -> None:
    log = RunLog(tmp_path / "runs.sqlite3")
    written = [
        record("r1", attempt=1, outcome="retry", error="ProviderTimeout: slow"),
        record("r1", attempt=2, prompt_tokens_reused=9),
        record("r1", component="scene", kind="call", attempt=2, cache_hit=True),
        record("r2", outcome="fallback", kind="switch"),
        record("r2", outcome="invalid", stage="structuring", finish_reason=None),
    ]
    for item in written:
        log.record_call(item)
    assert log.calls() == written
    assert log.calls(run_id="r2") == written[3:]
    assert log.calls(component="scene") == [written[2]]
    assert log.calls(failed=True) == [written[0], written[3], written[4]]
    assert log.calls(run_id="r1", failed=True) == [written[0]]
    assert log.calls(limit=2) == written[3:]  # the latest two, oldest first


def test_an_older_log_keeps_its_calls_and_reads_them_as_reusing_nothing(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    db = sqlite3.connect(path)
    for migration in MIGRATIONS[:2]:  # a log written before prompt_tokens_reused
        migration(db)
    db.execute("PRAGMA user_version = 2")
    old = record("r0").model_dump(mode="json", exclude={"prompt_tokens_reused"})
    db.execute(
        f"INSERT INTO calls ({', '.join(old)}) VALUES ({', '.join('?' for _ in old)})",
        [json.dumps(v) if isinstance(v, dict) else v for v in old.values()],
    )
    db.commit()
    db.close()
    log = RunLog(path)
    log.record_call(record("r1", prompt_tokens_reused=7))
    assert [(c.run_id, c.prompt_tokens_reused) for c in log.calls()] == [("r0", 0), ("r1", 7)]


def test_runs_are_started_and_finished(tmp_path: Path) -> None:
    log = RunLog(tmp_path / "runs.sqlite3")
    log.start_run("r1", "A lighthouse keeper", {"scenes": 3}, config_source="/etc/se.yaml")
    log.start_run("r2", "A heist")
    log.finish_run("r1", "done")
    log.finish_run("r2", "failed", error="AllProvidersFailed: every provider failed for plot")
    runs = {run.id: run for run in log.runs()}
    assert runs["r1"].status == "done" and runs["r1"].finished_at is not None
    assert runs["r1"].meta == {"scenes": 3} and runs["r1"].config_source == "/etc/se.yaml"
    assert runs["r2"].status == "failed" and "plot" in (runs["r2"].error or "")
    assert [run.id for run in log.runs(limit=1)] == ["r2"]


async def test_a_recorder_writes_every_attempt_of_a_run_to_the_log(tmp_path: Path) -> None:
    log = RunLog(tmp_path / "runs.sqlite3")
    replies = iter([ProviderUnavailable("refused"), "text"])
    provider = ScriptedProvider(lambda r: next(replies))
    ask = RecordedAttempts(Asked(provider), provider=provider.name, model=provider.model)
    generator = Instrumented(Retrying(provider, attempts=2, backoff_initial=0, backoff_max=0, ask=ask))
    recorder = RunRecorder("run-7", log)
    with recorder.active():
        request = CompletionRequest(messages=(Message(role="user", content="hi"),), component="scene")
        await generator.generate(request)
    stored = log.calls(run_id="run-7")
    assert stored == recorder.records
    assert [(r.kind, r.outcome) for r in stored] == [("attempt", "retry"), ("attempt", "ok"), ("call", "ok")]


# -- concurrency --


def test_many_threads_write_to_one_log(tmp_path: Path) -> None:
    log = RunLog(tmp_path / "runs.sqlite3")
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: log.record_call(record(f"t{i % 4}", attempt=i + 1)), range(200)))
    assert log.available
    assert len(log.calls(limit=1000)) == 200
    assert sorted(r.attempt for r in log.calls(run_id="t1", limit=1000)) == list(range(2, 201, 4))


def test_two_processes_write_to_one_log_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "runs.sqlite3")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_many, args=(path, n, 150)) for n in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    log = RunLog(path)
    for n in range(2):
        attempts = [r.attempt for r in log.calls(run_id=f"proc-{n}", limit=1000)]
        assert attempts == list(range(1, 151))


# -- a broken log never breaks a run --


def test_a_corrupt_log_warns_once_and_drops_records(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "runs.sqlite3"
    path.write_bytes(b"this is not a database, just bytes " * 200)
    with caplog.at_level(logging.WARNING, logger="storyengine"):
        log = RunLog(path)
        for _ in range(3):
            log.record_call(record())
        log.start_run("r", "p")
        log.finish_run("r", "done")
    assert not log.available
    assert log.calls() == [] and log.runs() == []
    warnings = [r for r in caplog.records if r.name == "storyengine"]
    assert len(warnings) == 1 and "goes on without logging" in warnings[0].getMessage()


def test_a_locked_log_warns_once_and_the_run_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "runs.sqlite3"
    log = RunLog(path, busy_timeout=0.05)
    log.record_call(record())
    log.flush()  # rows are written by the log's writer thread
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with caplog.at_level(logging.WARNING, logger="storyengine"):
            log.record_call(record(attempt=2))
            log.record_call(record(attempt=3))
            log.flush()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert not log.available and "locked" in (log.problem or "")
    assert len([r for r in caplog.records if r.name == "storyengine"]) == 1
    assert [r.attempt for r in RunLog(path).calls()] == [1]


# -- storyengine logs --


@pytest.fixture
def config_with_log(tmp_path: Path) -> tuple[Path, Path]:
    log_path = tmp_path / "logs" / "runs.sqlite3"
    config = tmp_path / "config.yaml"
    config.write_text(f"logging:\n  runlog: {log_path}\n", encoding="utf-8")
    return config, log_path


def test_logs_prints_one_json_object_a_line(config_with_log: tuple[Path, Path]) -> None:
    config, log_path = config_with_log
    log = RunLog(log_path)
    log.record_call(record("r1", outcome="retry", error="ProviderTimeout: slow"))
    log.record_call(record("r1", attempt=2))
    log.record_call(record("r2", component="scene", provider="embedded"))
    log.close()

    result = CliRunner().invoke(main, ["logs", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [(line["run_id"], line["attempt"], line["outcome"]) for line in lines] == [
        ("r1", 1, "retry"),
        ("r1", 2, "ok"),
        ("r2", 1, "ok"),
    ]
    assert set(lines[0]) == set(CallRecord.model_fields)

    def ids(*args: str) -> list[tuple[str, int]]:
        out = CliRunner().invoke(main, ["logs", "--config", str(config), "--json", *args]).output
        return [(json.loads(line)["run_id"], json.loads(line)["attempt"]) for line in out.splitlines()]

    assert ids("--run", "r2") == [("r2", 1)]
    assert ids("--component", "plot", "--failed") == [("r1", 1)]
    assert ids("--limit", "1") == [("r2", 1)]


def test_logs_prints_a_table(config_with_log: tuple[Path, Path]) -> None:
    config, log_path = config_with_log
    log = RunLog(log_path)
    log.record_call(
        record("run-table", provider="lmstudio", outcome="fallback", kind="switch", error="[x] down")
    )
    log.close()
    result = CliRunner().invoke(main, ["logs", "--config", str(config)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "run-table" in result.output and "lmstudio" in result.output and "fallback" in result.output
    assert "[x] down" in result.output


def test_logs_without_a_log_file_says_so_in_one_line(config_with_log: tuple[Path, Path]) -> None:
    config, log_path = config_with_log
    result = CliRunner().invoke(main, ["logs", "--config", str(config)])
    assert result.exit_code == 0
    assert (
        result.output.strip() == f"No run log yet at {log_path}: nothing has been generated with this config."
    )
    assert not log_path.exists()


def test_logs_on_a_corrupt_file_is_a_one_line_error(config_with_log: tuple[Path, Path]) -> None:
    config, log_path = config_with_log
    log_path.parent.mkdir(parents=True)
    log_path.write_bytes(b"garbage " * 500)
    result = CliRunner().invoke(main, ["logs", "--config", str(config)])
    assert result.exit_code == 2
    assert result.output.startswith("storyengine: error: cannot read the run log")
    assert len(result.output.strip().splitlines()) == 1


def test_a_logged_invalid_answer_says_which_rule_it_broke() -> None:
    from storyengine.errors import SchemaValidationError
    from storyengine.routing.instrument import short_error

    error = SchemaValidationError(
        "the output is not a valid PlotBeat: 1 validation error(s)",
        raw_text="{}",
        validation_errors=[
            {"loc": ["purpose"], "msg": "the purpose only repeats its name", "type": "value_error"}
        ],
    )
    text = short_error(error)
    assert text is not None and text.endswith("(the purpose only repeats its name)")
    assert short_error("plain") == "plain"
