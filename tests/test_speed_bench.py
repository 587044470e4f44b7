"""`storyengine bench story`: the story's wall time against the model's own rates (issue 17).

Run against the local slow server (it answers with `story_script`); assertions are on what the
report must say and on sums that must add up, never on how fast anything was.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from storyengine.bench.slow_server import SlowServer
from storyengine.bench.story import bounds, reading_by_component, thrown_away_by_component, token_accounting
from storyengine.cli import main


@pytest.fixture
def server_config(tmp_path: Path) -> Iterator[Path]:
    with SlowServer(latency=0.02, slots=4) as server:
        path = tmp_path / "config.yaml"
        path.write_text(
            f"""
retry: {{attempts: 2, backoff_initial: 0, backoff_max: 0}}
providers:
  embedded: {{type: embedded}}
  srv:
    type: openai
    base_url: {server.base_url}
    model: slow-story
    structured_output: json_schema
    max_parallel: 4
""",
            encoding="utf-8",
        )
        yield path


def run_story_bench(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["bench", "story", *args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, result.stdout
    report: dict[str, Any] = json.loads(lines[0])
    return report


def test_story_bench_reports_wall_time_bounds_and_thrown_away_tokens(server_config: Path) -> None:
    report = run_story_bench("--scenes", "2", "--provider", "srv", "--config", str(server_config))
    assert report["bench"] == "story" and report["command"].startswith("storyengine bench story")
    assert report["machine"]["cores"] and report["machine"]["load_average_end"] is not None
    assert report["provider"] == "srv" and report["scenes"] == 2
    assert report["story"]["valid"] is True and "failed" not in report
    tokens = report["tokens"]
    assert tokens["attempts"] > 0 and tokens["completion_tokens"] > 0
    assert 0 <= tokens["thrown_away_tokens"] <= tokens["completion_tokens"]
    # the pipeline's own time is what the model did not take
    assert report["pipeline_own_s"] == pytest.approx(report["wall_s"] - report["model_s"], abs=0.02)
    assert 0 < report["model_s"] <= report["wall_s"]
    names = {m["name"] for m in report["measures"]}
    for wanted in (
        "story wall time",
        "pipeline's own time (wall − model)",
        "thrown away",
        "decode rate (probe)",
    ):
        assert wanted in names
    # every attempt reached the provider once (cache off), and the probe's calls are not the story's
    assert tokens["attempts"] == report["provider_calls"]
    assert report["probe"]["prompt_tokens"] > 0
    # when the words became visible: the story's first, and each draft's after its call started
    first = report["first_words"]
    assert 0 < first["first_word_of_story_s"] <= report["wall_s"]
    assert {"plot.draft", "scene.0.draft", "scene.1.draft"} <= set(first["first_word_per_draft_s"])
    assert 0 < first["first_word_of_scene_median_s"] <= first["first_word_of_scene_max_s"] <= report["wall_s"]
    assert "first visible word of the story (after the run starts)" in names
    # what the story cost against what a reader gets (a server: prompt tokens sent, no KV known)
    spent = report["spending"]
    assert spent["delivered_words"] > 0 and spent["prefix_hit_pct"] is None
    processed = tokens["prompt_tokens"] + tokens["completion_tokens"]
    assert spent["tokens_processed_per_word"] == pytest.approx(processed / spent["delivered_words"], abs=0.01)
    # where it went: every attempt's tokens, per component and stage
    reading = report["reading_by_component"]
    assert {"plot/freeform", "scene/structuring"} <= set(reading)
    assert sum(e["prompt_sent"] for e in reading.values()) == tokens["prompt_tokens"]
    assert sum(e["written"] for e in reading.values()) == tokens["completion_tokens"]


def test_story_bench_table_names_machine_and_command(server_config: Path) -> None:
    result = CliRunner().invoke(
        main, ["bench", "story", "--scenes", "1", "--provider", "srv", "--config", str(server_config)]
    )
    assert result.exit_code == 0, result.output
    for text in (
        "bench",
        "story",
        "command",
        "storyengine bench story --scenes 1",
        "machine",
        "decode bound",
    ):
        assert text in result.stdout


def test_thrown_away_tokens_are_those_of_unused_attempts() -> None:
    calls = [
        {"kind": "attempt", "outcome": "retry", "completion_tokens": 100, "prompt_tokens": 10,
         "finish_reason": "length"},
        {"kind": "attempt", "outcome": "ok", "completion_tokens": 40, "prompt_tokens": 10,
         "finish_reason": "stop"},
        {"kind": "attempt", "outcome": "invalid", "completion_tokens": 7, "prompt_tokens": 10},
        {"kind": "attempt", "outcome": "error", "completion_tokens": 3, "prompt_tokens": 10},
        {"kind": "call", "outcome": "ok", "completion_tokens": 40, "prompt_tokens": 10},
        {"kind": "switch", "outcome": "fallback", "completion_tokens": 0, "prompt_tokens": 0},
    ]  # fmt: skip
    tokens = token_accounting(calls)
    assert tokens == {
        "attempts": 4,
        "attempts_thrown_away": 3,
        "drafts_redrawn_by_check": 0,
        "attempts_cut_off": 1,
        "attempts_stopped_in_loop": 0,
        "prompt_tokens": 40,
        "completion_tokens": 150,
        "thrown_away_tokens": 110,
        "redrawn_by_check_tokens": 0,
    }
    headline = bounds(tokens, {"decode_tps": 50.0, "prefill_tps": 400.0}, evaluated=20, wall=6.0, busy=5.0)
    assert headline["decode_bound_s"] == 3.0  # 150 tokens at 50 tok/s
    assert headline["prefill_bound_s"] == 0.05  # the 20 evaluated prompt tokens, not the 40 sent
    assert headline["wall_over_decode_bound"] == 2.0
    assert headline["pipeline_own_s"] == 1.0
    assert headline["thrown_away_pct"] == pytest.approx(73.3)
    unknown = bounds(tokens, {"decode_tps": None, "prefill_tps": None}, evaluated=None, wall=6.0, busy=5.0)
    assert unknown["decode_bound_s"] is None and unknown["wall_over_decode_bound"] is None


def test_thrown_away_tokens_are_told_per_component_with_their_reasons() -> None:
    calls = [
        {"kind": "attempt", "component": "scene", "stage": "freeform", "outcome": "ok", "call_id": "a",
         "completion_tokens": 300, "params_snapshot": {"seed": 1}},  # redrawn: the step kept seed 2
        {"kind": "attempt", "component": "scene", "stage": "freeform", "outcome": "ok", "call_id": "b",
         "completion_tokens": 280, "params_snapshot": {"seed": 2}},
        {"kind": "call", "component": "scene", "stage": "freeform", "outcome": "ok", "call_id": "a",
         "params_snapshot": {"seed": 1}},
        {"kind": "attempt", "component": "dialogue", "stage": "structuring", "outcome": "retry",
         "completion_tokens": 30, "error": "SchemaValidationError: … (a repeated line)"},
        {"kind": "attempt", "component": "dialogue", "stage": "structuring", "outcome": "ok",
         "completion_tokens": 25},
    ]  # fmt: skip
    steps = {"scene.0.draft": {"component": "scene", "seed": 2, "stage1_text": "kept"}}
    wasted = thrown_away_by_component(calls, steps)
    assert list(wasted) == ["scene/freeform", "dialogue/structuring"]  # most tokens first
    assert wasted["scene/freeform"] == {
        "attempts": 1,
        "tokens": 300,
        "reasons": ["drawn again by a draft check"],
    }
    assert wasted["dialogue/structuring"]["reasons"] == ["SchemaValidationError: … (a repeated line)"]


def test_reading_is_told_per_component_with_what_a_cache_held() -> None:
    calls = [
        {"kind": "attempt", "component": "scene", "stage": "freeform", "prompt_tokens": 900,
         "prompt_tokens_reused": 600, "completion_tokens": 400},
        {"kind": "attempt", "component": "scene", "stage": "structuring", "prompt_tokens": 1300,
         "prompt_tokens_reused": 1200, "completion_tokens": 60},
        {"kind": "attempt", "component": "evaluation", "stage": "structuring", "prompt_tokens": 1000,
         "completion_tokens": 90},  # an older record: nothing said of a cache
        {"kind": "call", "component": "evaluation", "stage": "structuring", "prompt_tokens": 1000},
    ]  # fmt: skip
    reading = reading_by_component(calls)
    assert list(reading) == [
        "evaluation/structuring",
        "scene/freeform",
        "scene/structuring",
    ]  # costliest first
    assert reading["scene/freeform"] == {
        "attempts": 1, "prompt_sent": 900, "prompt_reused": 600, "prompt_evaluated": 300, "written": 400,
    }  # fmt: skip
    assert reading["evaluation/structuring"]["prompt_evaluated"] == 1000
