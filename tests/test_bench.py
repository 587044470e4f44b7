"""`storyengine bench NAME`: each bench run through the CLI with tiny parameters, and its parts.

The benches run against the local slow server (an OpenAI-compatible server on 127.0.0.1 that
answers with `story_script`) or the scripted provider. Assertions are on the JSON shape and
on properties that must hold (counts add up, a warm cache makes no provider calls, wall time
never beats the lower bound), never on how fast anything was.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from rich.console import Console

from storyengine.bench.critical_path import greedy_steps, lower_bound_steps, story_graph
from storyengine.bench.harness import MeteredProvider, ProviderCall, busy_seconds, scratch_settings
from storyengine.bench.premises import PREMISES
from storyengine.bench.slow_server import SlowServer
from storyengine.bench.table import Measure, Report, machine
from storyengine.bench.validity import CATEGORIES, ModeRunner, needed_repair, revalidate
from storyengine.cli import main
from storyengine.config import parse_settings
from storyengine.pipeline.engine import StoryEngine
from storyengine.providers.fake_story import story_script
from storyengine.providers.scripted import ScriptedProvider
from storyengine.schemas import PlotBeat, PlotStructure
from storyengine.structuring import decoding_schema
from storyengine.types import CompletionRequest, Message

# -- helpers --


@pytest.fixture
def server() -> Iterator[SlowServer]:
    with SlowServer(latency=0.02, slots=4) as running:
        yield running


@pytest.fixture
def server_config(server: SlowServer, tmp_path: Path) -> Path:
    """A config whose provider `srv` is the slow server (fast retries, so failures show quickly)."""
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
    return path


def run_bench(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["bench", *args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, result.stdout
    report: dict[str, Any] = json.loads(lines[0])
    assert report["machine"]["cores"] and report["machine"]["python"]
    assert report["command"].startswith(f"storyengine bench {args[0]}") and "--json" in report["command"]
    for measure in report["measures"]:
        runs = measure["runs"]
        if runs:
            assert measure["min"] == min(runs) <= measure["median"] <= max(runs) == measure["max"]
        else:
            assert measure["median"] is None
    return report


def measure(report: dict[str, Any], name_part: str) -> dict[str, Any]:
    found = [m for m in report["measures"] if name_part in m["name"]]
    assert len(found) == 1, [m["name"] for m in report["measures"]]
    return found[0]


# -- the report --


def test_long_bench_reports_costs_per_scene_and_measures_per_chapter_on_the_scripted_model() -> None:
    report = run_bench("long", "--scripted", "--chapters", "4", "--scenes-per-chapter", "3")
    assert report["provider"] == "scripted" and report["chapters"] == 4 and report["scenes"] == 12
    rows = list(report["per_scene"].values())
    assert [r["chapter"] for r in rows] == [c for c in range(1, 5) for _ in range(3)]
    assert all(r["prompt"] > 0 and r["completion"] > 0 and r["words"] > 0 for r in rows)
    assert measure(report, "prompt tokens per scene")["runs"] == [r["prompt"] for r in rows]
    assert report["words"] == sum(r["words"] for r in rows) and not report["gaps"]
    spent = sum(r["prompt"] + r["completion"] for r in rows)
    assert report["tokens_per_word"] == round(spent / report["words"], 2)
    assert report["story_tokens_per_word"] > report["tokens_per_word"]  # the plan and the evaluation too
    flat = report["prompt_flat"]
    assert flat["late_over_early"] == round(flat["late_median"] / flat["early_median"], 3)


def test_long_bench_measures_a_story_file_a_long_generate_wrote(tmp_path: Path) -> None:
    from test_chapters_read import chaptered_data

    path = tmp_path / "story.json"
    path.write_text(json.dumps(chaptered_data()), encoding="utf-8")
    report = run_bench("long", "--story", str(path))
    assert report["chapters"] == 3 and report["scenes"] == 6 and report["wall_seconds"] is None
    assert [r["chapter"] for r in report["per_scene"].values()] == [1, 1, 2, 2, 3, 3]
    path.write_text('{"not": "a story"}', encoding="utf-8")
    result = CliRunner().invoke(main, ["bench", "long", "--story", str(path)])
    assert result.exit_code == 2 and "is not a storyengine story" in result.output


def test_long_bench_refuses_a_bad_length_before_any_model_loads() -> None:
    result = CliRunner().invoke(main, ["bench", "long", "--scripted", "--chapters", "0"])
    assert result.exit_code == 2 and "chapters must be between 1 and 24" in result.output


def test_report_table_shows_machine_command_and_spread() -> None:
    report = Report(bench="demo", command="storyengine bench demo --runs 3", machine=machine())
    timing = report.measure("step time", "ms")
    for value in (3.0, 1.0, 2.0):
        timing.add(value)
    report.summary["answer"] = 42
    console = Console(record=True, width=120)
    report.finish().print(console)
    text = console.export_text()
    assert "storyengine bench demo --runs 3" in text and "Python" in text and "load average" in text
    row = next(line for line in text.splitlines() if "step time" in line)
    assert [cell.strip() for cell in row.split("│")[3:7]] == ["3", "2", "1", "3"]
    assert "answer" in text and "42" in text
    assert report.as_dict()["answer"] == 42 and report.as_dict()["measures"][0]["median"] == 2.0


def test_measure_median_of_even_runs() -> None:
    m = Measure("x", "s", runs=[4.0, 1.0, 3.0, 2.0])
    assert (m.median, m.min, m.max) == (2.5, 1.0, 4.0)


def test_busy_seconds_is_the_union_of_overlapping_calls() -> None:
    request = CompletionRequest(messages=(Message(role="user", content="x"),))
    calls = [ProviderCall(request, None, start, end) for start, end in [(0, 2), (1, 3), (5, 6), (5.5, 5.7)]]
    assert busy_seconds(calls) == pytest.approx(4.0)
    assert busy_seconds(calls, since=4) == pytest.approx(1.0)


# -- the lower bound --


def exhaustive_optimum(scenes: int, slots: int) -> int:
    """The true shortest schedule, by breadth-first search over the sets of finished calls."""
    graph = story_graph(scenes)
    tasks = list(graph.needs)
    frontier: set[frozenset[str]] = {frozenset()}
    steps = 0
    while True:
        if any(len(done) == len(tasks) for done in frontier):
            return steps
        following: set[frozenset[str]] = set()
        for done in frontier:
            ready = [t for t in tasks if t not in done and all(b in done for b in graph.needs[t])]
            for chosen in itertools.combinations(ready, min(slots, len(ready))):
                following.add(done | set(chosen))
        frontier, steps = following, steps + 1


@pytest.mark.parametrize(("scenes", "slots"), [(1, 1), (1, 2), (2, 1), (2, 2), (2, 3), (3, 2)])
def test_lower_bound_is_the_true_optimum_on_small_stories(scenes: int, slots: int) -> None:
    assert lower_bound_steps(story_graph(scenes), slots) == exhaustive_optimum(scenes, slots)


def test_lower_bound_known_cases_and_never_above_a_real_schedule() -> None:
    assert len(story_graph(6).needs) == 4 + 4 * 6 + 4  # plot, bible, 6 × (scene, dialogue), after
    assert lower_bound_steps(story_graph(6), 4) == 14  # 4 + ceil(24 / 4) + 4
    assert lower_bound_steps(story_graph(6), 1) == 32  # one slot: every call in turn
    assert lower_bound_steps(story_graph(6), 12) == 12  # unlimited: the longest path
    for scenes, slots in itertools.product(range(1, 9), range(1, 7)):
        graph = story_graph(scenes)
        bound = lower_bound_steps(graph, slots)
        assert bound <= greedy_steps(graph, slots)
        assert bound >= math.ceil(len(graph.needs) / slots)


# -- the slow server --


def test_slow_server_runs_at_most_k_calls_at_once_and_answers_the_schema() -> None:
    schema = decoding_schema(PlotStructure, counts={"beats": (3, 3), "characters": (2, 5)})
    body = {
        "model": "slow-story",
        "messages": [{"role": "user", "content": "Outline a plot."}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "PlotStructure", "schema": schema},
        },
    }
    answers: list[dict[str, Any]] = []
    with SlowServer(latency=0.05, slots=2) as server:
        url = server.base_url + "/chat/completions"

        def ask() -> None:
            answers.append(httpx.post(url, json=body, timeout=10).json())

        threads = [threading.Thread(target=ask) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert httpx.get(server.base_url + "/models").json()["data"][0]["id"] == "slow-story"
        assert httpx.post(server.base_url + "/nope", json={}).status_code == 404
    assert server.max_in_flight == 2 and len(server.timings) == 5
    for answer in answers:
        plot = PlotStructure.model_validate_json(answer["choices"][0]["message"]["content"])
        assert len(plot.beats) == 3


# -- the benches through the CLI --


def test_render_bench_reports_both_costs_and_identical_output() -> None:
    report = run_bench("render", "--runs", "2", "--repeat", "3")
    assert report["identical"] is True
    assert report["naive_ms"] > 0 and report["ours_ms"] > 0 and report["ours_cold_ms"] > 0
    assert measure(report, "render_slow")["runs"].__len__() == 2
    assert "--runs 2 --repeat 3" in report["command"]


def test_concurrency_bench_reports_wall_time_against_the_lower_bound() -> None:
    report = run_bench("concurrency", "--scenes", "3", "--latency", "0.05", "--slots", "2", "--runs", "2")
    graph = story_graph(3)
    assert report["graph_calls"] == len(graph.needs) == 20
    assert report["calls_per_run"] == [20, 20]
    assert report["lower_bound_steps"] == lower_bound_steps(graph, 2) == 14
    assert report["lower_bound_s"] == pytest.approx(14 * 0.05)
    # Each call sleeps the latency on the server, on at most 2 slots: nothing beats the bound.
    assert report["server_max_in_flight"] <= 2
    assert report["wall_s"] >= report["lower_bound_s"]
    assert report["ratio"] == pytest.approx(report["wall_s"] / report["lower_bound_s"], rel=0.02)
    assert report["server_requests"] == 3 * 20  # the warm-up run and two measured runs
    assert len(measure(report, "wall time")["runs"]) == 2


def test_concurrency_bench_on_a_configured_provider_measures_the_latency(server_config: Path) -> None:
    report = run_bench(
        "concurrency", "--scenes", "2", "--runs", "1", "--provider", "srv", "--config", str(server_config)
    )  # fmt: skip
    assert report["latency_measured"] is True and report["latency_s"] >= 0.02  # the server sleeps 0.02 s
    assert report["slots"] == 4  # the provider's max_parallel
    assert report["lower_bound_steps"] == lower_bound_steps(story_graph(2), 4)
    assert "server_max_in_flight" not in report  # no bench server was started


def test_cache_bench_warm_run_makes_no_provider_calls(server_config: Path, tmp_path: Path) -> None:
    report = run_bench("cache", "--scenes", "2", "--provider", "srv", "--config", str(server_config))
    assert report["cold_calls"] == len(story_graph(2).needs)
    assert report["warm_calls"] == 0
    assert report["warm_cache_hits"] == report["cold_calls"]
    assert report["same_story"] is True
    # the user's own cache (XDG, private to this test) was not touched
    assert not list((tmp_path / "xdg").rglob("cache.sqlite3"))


def test_cache_bench_uses_the_given_cache_path(server_config: Path, tmp_path: Path) -> None:
    path = tmp_path / "mine.sqlite3"
    args = ("--scenes", "1", "--provider", "srv", "--config", str(server_config), "--cache-path", str(path))
    first = run_bench("cache", *args)
    assert first["warm_calls"] == 0 and path.is_file()
    again = run_bench("cache", *args)  # the file is warm already: even the "cold" run is served
    assert again["cold_calls"] == 0 and again["warm_calls"] == 0


def test_overhead_bench_scripted_and_configured_provider(server_config: Path) -> None:
    report = run_bench(
        "overhead", "--scenes", "2", "--scripted-runs", "2", "--runs", "1",
        "--provider", "srv", "--config", str(server_config),
    )  # fmt: skip
    calls = len(story_graph(2).needs)
    assert report["scripted_calls_per_story"] == calls
    assert report["pipeline_ms_per_call"] > 0
    assert len(measure(report, "pipeline cost per call")["runs"]) == 2
    assert measure(report, "srv: provider calls")["runs"] == [calls]
    wall, busy = measure(report, "srv: story wall time"), measure(report, "srv: provider busy")
    assert 0 < busy["median"] <= wall["median"]
    assert 0 <= report["overhead_share_pct"] < 100
    # the server sleeps 0.02 s per call and the calls of a story partly overlap
    assert busy["median"] >= 0.02 * (2 + 2 + 4)


def test_overhead_bench_reports_a_story_the_provider_failed(tmp_path: Path) -> None:
    config = tmp_path / "down.yaml"
    config.write_text(
        """
retry: {attempts: 1, backoff_initial: 0, backoff_max: 0}
providers:
  down: {type: openai, base_url: "http://127.0.0.1:9/v1", model: m}
narrative:
  providers: {plot: down, scene: down, dialogue: down, evaluation: down, enhancement: down, summarize: down}
""",
        encoding="utf-8",
    )
    report = run_bench("overhead", "--scenes", "1", "--scripted-runs", "1", "--config", str(config))
    assert report["scripted_calls_per_story"] == len(story_graph(1).needs)  # the scripted part ran
    assert len(report["failed_runs"]) == 1 and "cannot reach" in report["failed_runs"][0]
    assert measure(report, "down: provider calls")["runs"] == [1]  # it stopped at the first call


def test_validity_bench_counts_add_up_for_every_mode(server_config: Path) -> None:
    report = run_bench(
        "validity", "--premises", "3", "--components", "scene",
        "--modes", "native,prompt-only,no-schema", "--provider", "srv", "--config", str(server_config),
    )  # fmt: skip
    assert report["premises"] == 3 and report["components"] == ["plot", "scene"]
    assert report["invalid_accepted"] == 0
    assert set(report["results"]) == {"native", "prompt-only", "no-schema"}
    for by_component in report["results"].values():
        for tally in by_component.values():
            assert sum(tally[c] for c in CATEGORIES) == tally["total"] == 3
            assert tally["first_try"] == 3  # story_script always answers a valid object
            assert tally["provider_calls"] == 2 * 3  # one freeform, one structuring call each


def test_peer_bench_runs_instructor_and_storyengine_side_by_side(server_config: Path) -> None:
    pytest.importorskip("instructor")
    report = run_bench("peer", "--premises", "2", "--provider", "srv", "--config", str(server_config))
    ours, theirs = report["sides"]["storyengine"], report["sides"]["instructor"]
    assert theirs["valid"] == 2 and theirs["llm_calls"] == 2  # one schema-constrained call each
    assert ours["valid"] == 2 and ours["llm_calls"] == 4  # free writing + structuring
    assert ours["valid_per_call"] == pytest.approx(0.5) and theirs["valid_per_call"] == pytest.approx(1.0)
    assert len(measure(report, "instructor: seconds per premise")["runs"]) == 2


def test_bench_rejects_bad_options() -> None:
    result = CliRunner().invoke(main, ["bench", "validity", "--premises", "999"])
    assert result.exit_code == 2 and "--premises must be between 1 and" in result.output
    result = CliRunner().invoke(main, ["bench", "validity", "--premises", "1", "--modes", "magic"])
    assert result.exit_code == 2 and "--modes takes names from" in result.output
    result = CliRunner().invoke(main, ["bench", "concurrency", "--latency", "0"])
    assert result.exit_code == 2 and "--latency must be at least" in result.output


# -- validity classification on exact scenarios --

PLOT_OK = {
    "structure_type": "three-act",
    "title": "The Map",
    "characters": ["Mara", "Tobin"],
    "beats": [
        {"name": "Setup", "purpose": "Mara finds the map in the attic", "tension": 3},
        {"name": "Turn", "purpose": "The roads on the map appear in town", "tension": 7},
        {"name": "End", "purpose": "Mara burns the map to save the town", "tension": 9},
    ],
}
VALID = json.dumps(PLOT_OK)
NEEDS_REPAIR = VALID[:-1] + ",}"  # a trailing comma: not JSON, but json_repair fixes it
SHAPE_INVALID = json.dumps({**PLOT_OK, "beats": PLOT_OK["beats"][:1]})  # too few beats


def scripted_runner(answers: list[str], tmp_path: Path, mode: str = "native") -> tuple[ModeRunner, Any]:
    """A runner whose structuring answers are `answers` in turn (the last one repeats)."""
    settings = parse_settings(
        """
retry: {attempts: 2, backoff_initial: 0, backoff_max: 0}
providers:
  fake: {type: openai, base_url: "http://127.0.0.1:9/v1", model: fake}
narrative:
  providers: {plot: fake, scene: fake, dialogue: fake, evaluation: fake, enhancement: fake, summarize: fake}
""",
        source="test.yaml",
    )
    settings = scratch_settings(settings, tmp_path / "bench", cache=False, strict=mode != "prompt-only")
    remaining = list(answers)

    def script(request: CompletionRequest) -> str:
        if request.stage != "structuring":
            return story_script(request)
        return remaining.pop(0) if len(remaining) > 1 else remaining[0]

    provider = MeteredProvider(ScriptedProvider(script, name="fake"))
    engine = StoryEngine.from_config(settings=settings, providers={"fake": provider})
    return ModeRunner(mode, engine, {"fake": provider}), provider


@pytest.mark.parametrize(
    ("answers", "category", "structuring_calls"),
    [
        ([VALID], "first_try", 1),
        ([NEEDS_REPAIR], "after_retry_or_repair", 1),
        (["no json here", VALID], "after_retry_or_repair", 2),
        ([SHAPE_INVALID, SHAPE_INVALID, VALID], "after_reask", 3),
        ([SHAPE_INVALID], "failed", 4),
    ],
)
async def test_validity_classifies_each_way_a_plot_can_end(
    answers: list[str], category: str, structuring_calls: int, tmp_path: Path
) -> None:
    runner, provider = scripted_runner(answers, tmp_path)
    async with runner.engine:
        await runner.run("A cartographer's maps redraw themselves.", 1, ["plot", "scene"])
    plot = runner.tallies["plot"]
    assert plot.counts[category] == 1 and sum(plot.counts.values()) == 1
    sent = [c for c in provider.calls if c.request.stage == "structuring" and c.request.component == "plot"]
    assert len(sent) == structuring_calls
    assert plot.invalid_accepted == 0
    if category == "failed":
        assert runner.tallies["scene"].counts["skipped"] == 1
        assert plot.errors and "StructuringError" in plot.errors[0]
        # The report says what the last answer got wrong, not only that it failed.
        assert "last answer:" in plot.errors[0] and "beats" in plot.errors[0].split("last answer:")[1]


async def test_prompt_only_mode_sends_no_schema_and_takes_no_repair(tmp_path: Path) -> None:
    runner, provider = scripted_runner([NEEDS_REPAIR, VALID], tmp_path, mode="prompt-only")
    async with runner.engine:
        await runner.run("A cartographer's maps redraw themselves.", 1, ["plot"])
    structuring = [c.request for c in provider.calls if c.request.stage == "structuring"]
    assert all(r.json_schema is None for r in structuring)
    assert len(structuring) == 2  # the unrepaired answer was rejected and retried
    assert runner.tallies["plot"].counts["after_retry_or_repair"] == 1


def test_needed_repair_and_revalidate() -> None:
    assert needed_repair(NEEDS_REPAIR) and not needed_repair(VALID)
    assert not needed_repair("```json\n" + VALID + "\n```")  # extraction is not a repair
    plot = PlotStructure.model_validate(PLOT_OK)
    assert revalidate(plot, PlotStructure, None)
    beats = [PlotBeat.model_construct(name="Same", purpose="Same", tension=3)] * 3
    forged = PlotStructure.model_construct(structure_type="x", beats=beats, characters=[], title=None)
    assert not revalidate(forged, PlotStructure, None)


def test_completion_bench_runs_a_part_of_the_premises(server_config: Path) -> None:
    report = run_bench(
        "completion", "--premises", "2", "--first", "3", "--seeds", "1", "--scenes", "1",
        "--provider", "srv", "--config", str(server_config),
    )  # fmt: skip
    assert report["premise_numbers"] == [3, 4] and report["runs"] == 2
    assert report["outcomes"] == {"complete": 2}
    assert "--first 3" in report["command"]
    result = CliRunner().invoke(
        main, ["bench", "completion", "--premises", "3", "--first", str(len(PREMISES) - 1)]
    )
    assert result.exit_code == 2 and f"from premise {len(PREMISES) - 1}" in result.output
    result = CliRunner().invoke(main, ["bench", "completion", "--first", "0"])
    assert result.exit_code == 2 and "--first must be between 1 and" in result.output
