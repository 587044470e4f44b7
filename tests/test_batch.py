"""`storyengine batch` and `run_batch(engine, ...)` on the scripted provider: real engine, real files."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from storyengine.batch import BatchResult, load_premises, run_batch
from storyengine.batch.premises import PremiseItem, Rejected
from storyengine.cli import main
from storyengine.errors import ProviderError
from storyengine.pipeline.checkpoint import CheckpointStore
from storyengine.pipeline.engine import StoryEngine
from storyengine.providers.fake_story import story_script
from storyengine.providers.scripted import ScriptedProvider
from storyengine.schemas import Story
from storyengine.types import CompletionRequest
from test_pipeline import engine_with, settings_for

SRC = Path(__file__).resolve().parents[1] / "src"
TESTS = Path(__file__).resolve().parent


def _prompt(request: CompletionRequest) -> str:
    return "\n".join(m.content for m in request.messages)


async def collect(engine: Any, premises: Any, **options: Any) -> list[BatchResult]:
    results = []
    async with aclosing(run_batch(engine, premises, **options)) as stream:
        async for result in stream:
            results.append(result)
    return results


def manifest(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_premise_files_jsonl_and_text_with_bad_lines(tmp_path: Path) -> None:
    jsonl = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "lighthouse", "premise": "A keeper finds a bottle.", "scenes": 2, "seed": 4},
            {"premise": "A baker's bread sings."},
            "{not json",
            {"id": "empty", "premise": "   "},
            {"id": "lighthouse", "premise": "Again the same id."},
            {"id": "../escape", "premise": "A path in an id."},
            {"premise": "Too many scenes.", "scenes": 99},
        ],
    )
    entries = load_premises(jsonl)
    assert entries[0] == PremiseItem("lighthouse", "A keeper finds a bottle.", 2, 4, 1)
    second = entries[1]
    assert isinstance(second, PremiseItem) and second.id.startswith("0002-") and len(second.id) == 13
    rejected = [e for e in entries if isinstance(e, Rejected)]
    assert [r.line for r in rejected] == [3, 4, 5, 6, 7]
    assert "not valid JSON" in rejected[0].error and "empty" in rejected[1].error
    assert "duplicate id 'lighthouse' (first on line 1)" in rejected[2].error
    assert "names the story's directory" in rejected[3].error and "scenes" in rejected[4].error
    # text: one premise a line, ids stable across reads (line number + hash of the premise)
    text = tmp_path / "p.txt"
    text.write_text("A first premise.\n\n# a comment\nA second premise.\n")
    first, again = load_premises(text), load_premises(text)
    assert [e.id for e in first] == [e.id for e in again]
    assert [(e.line, e.premise) for e in first if isinstance(e, PremiseItem)] == [
        (1, "A first premise."),
        (4, "A second premise."),
    ]


async def test_batch_writes_each_story_and_a_manifest_line_as_it_ends(tmp_path: Path) -> None:
    out = tmp_path / "out"
    premises = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "a", "premise": "A keeper finds a bottle from her future self.", "scenes": 2},
            {"id": "b", "premise": "Two rival bakers cook for a wedding.", "seed": 9},
            {"id": "a", "premise": "A duplicate id."},
            "[1, 2]",
        ],
    )
    engine, _ = engine_with(story_script)
    async with engine:
        results = await collect(engine, premises, out=out, scenes=3, seed=1, concurrency=2)
    by_id = {r.id: r for r in results if r.status == "done"}
    assert set(by_id) == {"a", "b"}
    for story_id, scenes in (("a", 2), ("b", 3)):  # the line's scenes, else the batch default
        story = Story.model_validate_json((out / story_id / "story.json").read_text())
        assert len(story.scenes) == scenes and story == by_id[story_id].story
        assert all((out / story_id / name).exists() for name in ("story.md", "story.fountain", "story.epub"))
    assert by_id["b"].story is not None and by_id["b"].story.meta["seed"] == 9
    assert by_id["a"].story is not None and by_id["a"].story.meta["seed"] == 1
    lines = manifest(out)
    assert sorted((m["id"], m["status"], m["line"]) for m in lines if m["status"] == "done") == [
        ("a", "done", 1),
        ("b", "done", 2),
    ]
    rejected = sorted((m["line"], m["status"]) for m in lines if m["status"] == "rejected")
    assert rejected == [(3, "rejected"), (4, "rejected")]
    for line in lines:
        assert set(line) >= {"id", "status", "run_id", "seconds", "provider_calls", "tokens", "error"}
    done = [m for m in lines if m["status"] == "done"]
    assert all(m["provider_calls"] > 0 and m["tokens"] > 0 and m["run_id"] for m in done)
    assert {m["run_id"] for m in done} == {r.run_id for r in by_id.values()}


async def test_one_story_failing_never_stops_the_batch(tmp_path: Path) -> None:
    def script(request: CompletionRequest) -> str:
        if "doomed" in _prompt(request) and request.component == "scene":
            raise ProviderError("the server refused this one", provider="embedded")
        return story_script(request)

    out = tmp_path / "out"
    engine, _ = engine_with(script)
    premises = [
        {"id": "ok1", "premise": "A cartographer's maps redraw themselves."},
        {"id": "bad", "premise": "A doomed voyage across a frozen sea."},
        {"id": "ok2", "premise": "A clockmaker builds a heart."},
    ]
    async with engine:
        results = await collect(engine, premises, out=out, scenes=2, concurrency=3)
    status = {r.id: r.status for r in results}
    assert status == {"ok1": "done", "bad": "failed", "ok2": "done"}
    failed = next(m for m in manifest(out) if m["id"] == "bad")
    assert "refused" in failed["error"] and failed["run_id"] and failed["provider_calls"] > 0
    assert not (out / "bad" / "story.json").exists()


async def test_rerun_skips_finished_stories_with_zero_calls_and_retries_the_failed(tmp_path: Path) -> None:
    broken = {"on": True}

    def script(request: CompletionRequest) -> str:
        if broken["on"] and "doomed" in _prompt(request) and request.component == "scene":
            raise ProviderError("scene server down", provider="embedded")
        return story_script(request)

    out = tmp_path / "out"
    premises = ["A lighthouse keeper's bottle.", "A doomed voyage north.", "", "A garden that remembers."]
    engine, provider = engine_with(script)
    async with engine:
        first = await collect(engine, premises, out=out, scenes=2, seed=3)
    assert sorted(r.status for r in first) == ["done", "done", "failed", "rejected"]
    lines_after_first = len(manifest(out))
    failed = next(r for r in first if r.status == "failed")
    assert any(r.component == "plot" for r in provider.requests)

    broken["on"] = False
    engine2, provider2 = engine_with(script)
    async with engine2:
        second = await collect(engine2, premises, out=out, scenes=2, seed=3)
    assert sorted(r.status for r in second) == ["done", "rejected", "skipped", "skipped"]
    retried = next(r for r in second if r.status == "done")
    assert retried.id == failed.id and retried.run_id == failed.run_id and retried.resumed
    # only the failed story's unfinished steps were asked again: its scenes and what follows them
    assert {r.component for r in provider2.requests} <= {"scene", "dialogue", "evaluation", "enhancement"}
    lines = manifest(out)
    assert len(lines) == lines_after_first + 1  # the retried story; the rejected line is not repeated

    engine3, provider3 = engine_with(script)
    async with engine3:
        third = await collect(engine3, premises, out=out, scenes=2, seed=3)
    assert sorted(r.status for r in third) == ["rejected", "skipped", "skipped", "skipped"]
    assert provider3.calls == 0 and len(manifest(out)) == len(lines)


async def test_a_changed_premise_under_the_same_id_is_a_new_story(tmp_path: Path) -> None:
    out = tmp_path / "out"
    engine, _ = engine_with(story_script)
    async with engine:
        (first,) = await collect(engine, [{"id": "s", "premise": "A first idea."}], out=out, scenes=2)
        (second,) = await collect(engine, [{"id": "s", "premise": "A better idea."}], out=out, scenes=2)
    assert second.status == "done" and second.run_id != first.run_id
    assert Story.model_validate_json((out / "s" / "story.json").read_text()).premise == "A better idea."


async def test_stories_run_concurrently_up_to_the_limit(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    engine, _ = engine_with(story_script)
    engine.providers["embedded"].latency = 0.01  # type: ignore[attr-defined]
    premises = [f"Premise {i}: a town where {i} bells ring at once." for i in range(5)]
    async with engine:
        results = await collect(engine, premises, scenes=2, concurrency=2, on_event=events.append)
    assert [r.status for r in results] == ["done"] * 5
    running = [e["running"] for e in events if e["event"] == "story_started"]
    assert max(running) == 2  # two at once, never three
    assert events[-1]["event"] == "batch_done" and events[-1]["done"] == 5


async def test_a_cancelled_batch_resumes_its_unfinished_story_from_the_checkpoint(tmp_path: Path) -> None:
    """Cancelling the iteration (what Ctrl-C does) keeps finished steps; the rerun resumes them."""
    reached_scenes = asyncio.Event()

    async def hangs_at_scenes(request: CompletionRequest) -> str:
        if "stalled" in _prompt(request) and request.component == "scene":
            reached_scenes.set()
            await asyncio.Event().wait()  # until cancelled
        return story_script(request)

    out = tmp_path / "out"
    premises = [
        {"id": "quick", "premise": "A quick tale of a kite."},
        {"id": "slow", "premise": "A stalled train."},
    ]
    engine, _ = engine_with(hangs_at_scenes)
    seen: list[BatchResult] = []
    first_ended = asyncio.Event()

    async def consume() -> None:
        async with aclosing(run_batch(engine, premises, out=out, scenes=2, seed=2, concurrency=2)) as stream:
            async for result in stream:
                seen.append(result)
                first_ended.set()

    async with engine:
        task = asyncio.create_task(consume())
        await reached_scenes.wait()
        await first_ended.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [(r.id, r.status) for r in seen] == [("quick", "done")]
    state = json.loads((out / ".batch" / "slow.json").read_text())
    assert state["status"] == "running"
    checkpoint = CheckpointStore(engine.checkpoints.directory).load(state["run_id"])
    assert checkpoint.get("plot") is not None and checkpoint.get("scene.0") is None

    engine2, provider2 = engine_with(story_script)
    async with engine2:
        results = await collect(engine2, premises, out=out, scenes=2, seed=2)
    by_id = {r.id: r for r in results}
    assert by_id["quick"].status == "skipped"
    assert by_id["slow"].status == "done" and by_id["slow"].run_id == state["run_id"]
    assert not [r for r in provider2.requests if r.component == "plot"]  # the plot was not redone


def _patched_cli(extra: str = "") -> str:
    """A driver script: the real CLI, with the engine built on the scripted provider."""
    return textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{str(SRC)!r}, {str(TESTS)!r}]
        from storyengine.pipeline.engine import StoryEngine
        from storyengine.providers.fake_story import story_script
        from storyengine.providers.scripted import ScriptedProvider
        from test_pipeline import settings_for
        {extra}
        real_from_config = StoryEngine.from_config
        def from_config(path=None, *, provider=None, **kw):
            fake = ScriptedProvider(story_script, name="embedded", structured_mode="grammar", latency=LATENCY)
            return real_from_config(settings=settings_for(), providers={{"embedded": fake}})
        StoryEngine.from_config = staticmethod(from_config)
        from storyengine.cli import main
        main()
        """
    )


def test_cli_json_progress_manifest_summary_and_exit_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_from_config = StoryEngine.from_config

    def scripted(path: Any = None, *, provider: Any = None, **_: Any) -> StoryEngine:
        fake = ScriptedProvider(story_script, name="embedded", structured_mode="grammar")
        return real_from_config(settings=settings_for(), providers={"embedded": fake})

    monkeypatch.setattr(StoryEngine, "from_config", staticmethod(scripted))
    premises = tmp_path / "premises.txt"
    premises.write_text("A kite that flies at night.\nA well that answers questions.\n")
    out = tmp_path / "out"
    command = ["batch", str(premises), "--out", str(out), "--scenes", "2"]
    done = CliRunner().invoke(main, [*command, "--json-progress"])
    assert done.exit_code == 0, done.output
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["event"] for e in events][:2] == ["batch_started", "story_started"]
    ended = [e for e in events if e["event"] == "story_ended"]
    assert len(ended) == 2 and ended[-1]["done"] == 2 and ended[-1]["stories_per_min"] > 0
    assert ended[-1]["eta_s"] == 0
    assert events[-1]["event"] == "summary" and events[-1]["done"] == 2
    assert len(manifest(out)) == 2
    again = CliRunner().invoke(main, [*command, "--json-progress"])
    assert again.exit_code == 0 and len(manifest(out)) == 2
    rerun = [json.loads(line) for line in again.stdout.splitlines()]
    assert not [e for e in rerun if e["event"] == "story_started"]
    assert rerun[-1]["skipped"] == 2 and rerun[-1]["provider_calls"] == 0
    jsonl = write_jsonl(
        tmp_path / "more.jsonl", [{"premise": "A kite that flies at night."}, {"premise": ""}]
    )
    rejected = CliRunner().invoke(main, ["batch", str(jsonl), "--out", str(out), "--quiet"])
    assert rejected.exit_code == 1, rejected.output
    assert "rejected: line 2" in rejected.output and "done" in rejected.output


STORIES = 6


def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(tmp_path: Path) -> None:
    driver = tmp_path / "driver.py"
    driver.write_text(_patched_cli("LATENCY = 0.05"))
    premises = tmp_path / "premises.txt"
    premises.write_text("".join(f"Story {i}: a lantern that lights itself.\n" for i in range(STORIES)))
    out = tmp_path / "out"
    command = [sys.executable, str(driver), "batch", str(premises), "--out", str(out), "--scenes", "2"]
    command += ["--concurrency", "2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [*command, "--json-progress"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        # A shell starts a background job (`.ci/run &`) with SIGINT ignored and a child inherits it:
        # the Ctrl-C below then never arrived (CI rehearsals: every story written, exit 0).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stdout is not None
    for line in process.stdout:  # interrupt once the first story has ended
        if json.loads(line)["event"] == "story_ended":
            break
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=120)
    assert process.returncode == 130
    summary = json.loads(rest.splitlines()[-1])
    assert summary["event"] == "summary" and summary["interrupted"] is True
    finished = {m["id"] for m in manifest(out) if m["status"] == "done"}
    assert 1 <= len(finished) < STORIES
    states = [json.loads(p.read_text()) for p in (out / ".batch").glob("*.json")]
    assert all(s["run_id"] for s in states)  # every started story knows its run
    resumed = subprocess.run([*command, "--json-progress"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    final = json.loads(resumed.stdout.splitlines()[-1])
    assert final["skipped"] == len(finished) and final["done"] == STORIES - len(finished)
    story_dirs = {p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert {m["id"] for m in manifest(out) if m["status"] == "done"} == story_dirs


def test_cli_reports_a_missing_premises_file_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["batch", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "cannot read the premises file" in result.output


def test_ray_without_ray_installed_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from storyengine.batch import ray_runner
    from storyengine.errors import ConfigError

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"pip install 'storyengine\[ray\]'"):
        ray_runner._ray()


async def test_a_bad_default_scene_count_fails_once_before_any_call(tmp_path: Path) -> None:
    from storyengine.errors import InputError

    engine, provider = engine_with(story_script)
    async with engine:
        with pytest.raises(InputError, match="scenes must be between"):
            await collect(engine, ["A premise.", "Another."], out=tmp_path / "out", scenes=99)
    assert provider.calls == 0


def test_the_progress_bar_shows_counts_rate_and_eta() -> None:
    import io

    from rich.console import Console

    from storyengine.batch.progress import BatchProgress, rate_and_eta

    assert rate_and_eta(0, 10, 5.0) == (None, None)
    assert rate_and_eta(2, 6, 60.0) == (2.0, 180.0)
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=160)
    base = {"total": 10, "skipped": 2, "rejected": 1, "running": 3}
    with BatchProgress("rich", console) as progress:
        progress({"event": "story_started", **base, "done": 0, "failed": 0, "elapsed": 1.0, "id": "a"})
        failed = {"event": "story_ended", "status": "failed", "id": "b", "error": "server down"}
        progress({**failed, **base, "done": 2, "failed": 1, "elapsed": 90.0})
    text = buffer.getvalue()
    assert "done 2  failed 1  running 3  skipped 2  rejected 1" in text
    assert "2.0/min" in text and "ETA 2m00s" in text and "b: server down" in text


def test_default_concurrency_follows_the_routed_providers() -> None:
    from storyengine.batch.runner import default_concurrency
    from storyengine.config import parse_settings

    assert default_concurrency(parse_settings("")) == 1  # the embedded model serializes
    server = parse_settings(
        """
providers:
  srv: {type: openai, base_url: "http://127.0.0.1:9/v1", model: m, max_parallel: 3}
narrative:
  providers: {plot: srv, scene: srv, dialogue: srv, evaluation: srv, enhancement: srv, summarize: srv}
"""
    )
    assert default_concurrency(server) == 6


async def test_the_batch_bench_keeps_the_server_within_its_slots() -> None:
    from storyengine.batch.bench import measure

    result = await measure(stories=3, slots=2, latency=0.01, scenes=1)
    assert result["done"] == 3 and result["provider_calls"] > 0
    assert result["max_in_flight"] == 2  # busy, and never beyond max_parallel
    assert result["ideal_s"] == pytest.approx(result["provider_calls"] * 0.01 / 2, abs=0.01)


def _old_fingerprint(premise: str, scenes: int | None, seed: int | None) -> str:
    """The spec hash a batch item had before chapters: the JSON list [premise, scenes, seed]."""
    import hashlib

    spec = json.dumps([premise, scenes, seed], ensure_ascii=False)
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def _story(out: Path, story_id: str) -> Story:
    return Story.model_validate_json((out / story_id / "story.json").read_text())


async def test_a_jsonl_batch_writes_a_chaptered_line_and_a_plain_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    premises = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "long", "premise": "A lighthouse keeper's year, told season by season.", "chapters": 3,
             "scenes_per_chapter": 2},
            {"id": "short", "premise": "A baker's bread sings at dawn.", "seed": 5},
        ],
    )  # fmt: skip
    engine, _ = engine_with(story_script)
    async with engine:
        results = await collect(engine, premises, out=out, scenes=2, concurrency=2)
    assert sorted((r.id, r.status) for r in results) == [("long", "done"), ("short", "done")]
    long, short = _story(out, "long"), _story(out, "short")
    assert len(long.chapters) == 3 and len(long.scenes) == 3 * 2
    assert [len(chapter.beats) for chapter in long.chapters] == [2, 2, 2]
    assert not short.chapters and len(short.scenes) == 2  # the batch default, no chapters
    # the plain story's state keeps the spec hash it always had, so older batches resume into it
    state = json.loads((out / ".batch" / "short.json").read_text())
    assert state["fingerprint"] == _old_fingerprint("A baker's bread sings at dawn.", 2, 5)
    long_state = json.loads((out / ".batch" / "long.json").read_text())
    assert long_state["fingerprint"] != _old_fingerprint(long.premise, None, None)

    engine2, provider2 = engine_with(story_script)
    async with engine2:  # a rerun finds both finished, the long one with its chapters
        again = await collect(engine2, premises, out=out, scenes=2)
    assert sorted(r.status for r in again) == ["skipped", "skipped"] and provider2.calls == 0


def test_the_spec_of_an_item_without_chapters_is_what_it_was() -> None:
    assert PremiseItem("a", "A kite.", 3, 7).fingerprint() == _old_fingerprint("A kite.", 3, 7)
    assert PremiseItem("a", "Ünïcode kite.").fingerprint() == _old_fingerprint("Ünïcode kite.", None, None)
    long = PremiseItem("a", "A kite.", None, 7, chapters=4)
    assert long.fingerprint() != _old_fingerprint("A kite.", None, 7)
    # the engine writes 5 scenes a chapter when none are given: the same story either way
    assert (
        long.fingerprint()
        == PremiseItem("a", "A kite.", None, 7, chapters=4, scenes_per_chapter=5).fingerprint()
    )
    assert (
        long.fingerprint()
        != PremiseItem("a", "A kite.", None, 7, chapters=4, scenes_per_chapter=2).fingerprint()
    )
    assert long.fingerprint() != PremiseItem("a", "A kite.", None, 7, chapters=3).fingerprint()


async def test_a_bad_chapter_count_on_a_line_is_its_rejection_and_the_rest_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    premises = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "zero", "premise": "No chapters at all.", "chapters": 0},
            {"id": "text", "premise": "Chapters as text.", "chapters": "3"},
            {"id": "both", "premise": "Scenes and chapters.", "chapters": 2, "scenes": 3},
            {"id": "per", "premise": "Scenes a chapter, no chapters.", "scenes_per_chapter": 2},
            {"id": "wide", "premise": "Too many scenes a chapter.", "chapters": 2, "scenes_per_chapter": 11},
            {"id": "fine", "premise": "A clockmaker builds a heart.", "chapters": 2, "scenes_per_chapter": 1},
            {"id": "plain", "premise": "A well that answers questions."},
        ],
    )
    engine, _ = engine_with(story_script)
    async with engine:
        results = await collect(engine, premises, out=out, scenes=1)
    status = {r.id: r.status for r in results}
    assert status == {
        "zero": "rejected", "text": "rejected", "both": "rejected", "per": "rejected", "wide": "rejected",
        "fine": "done", "plain": "done",
    }  # fmt: skip
    errors = {m["id"]: m["error"] for m in manifest(out) if m["status"] == "rejected"}
    assert errors == {
        "zero": "line 1: chapters must be between 1 and 24, not 0",
        "text": "line 2: 'chapters' must be a whole number",
        "both": "line 3: give 'scenes' (a short story) or 'chapters' (a long one), not both",
        "per": "line 4: 'scenes_per_chapter' needs 'chapters' on the same line",
        "wide": "line 5: scenes per chapter must be between 1 and 10, not 11",
    }
    assert not any((out / story_id).exists() for story_id in errors)
    assert len(_story(out, "fine").chapters) == 2 and len(_story(out, "fine").scenes) == 2
    assert len(_story(out, "plain").scenes) == 1


def _scripted_cli(monkeypatch: pytest.MonkeyPatch) -> list[ScriptedProvider]:
    """`storyengine` with every engine on the scripted provider; the list holds the providers made."""
    real_from_config = StoryEngine.from_config
    made: list[ScriptedProvider] = []

    def scripted(path: Any = None, *, provider: Any = None, **_: Any) -> StoryEngine:
        fake = ScriptedProvider(story_script, name="embedded", structured_mode="grammar")
        made.append(fake)
        return real_from_config(settings=settings_for(), providers={"embedded": fake})

    monkeypatch.setattr(StoryEngine, "from_config", staticmethod(scripted))
    return made


def test_cli_default_chapters_go_to_lines_without_a_length_of_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = _scripted_cli(monkeypatch)
    premises = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "own-scenes", "premise": "A kite that flies at night.", "scenes": 2},
            {"id": "default", "premise": "A well that answers questions."},
            {"id": "own-chapters", "premise": "A map that redraws itself.", "chapters": 1},
        ],
    )
    out = tmp_path / "out"
    command = ["batch", str(premises), "--out", str(out), "--chapters", "2", "--scenes-per-chapter", "1"]
    result = CliRunner().invoke(main, [*command, "--json-progress"])
    assert result.exit_code == 0, result.output
    assert sorted(m["id"] for m in manifest(out) if m["status"] == "done") == [
        "default", "own-chapters", "own-scenes"
    ]  # fmt: skip
    own_scenes = _story(out, "own-scenes")  # a line's scenes win: no chapters mixed in, no error
    assert not own_scenes.chapters and len(own_scenes.scenes) == 2
    default = _story(out, "default")
    assert len(default.chapters) == 2 and len(default.scenes) == 2
    own_chapters = _story(out, "own-chapters")  # its own chapters, the default scenes in each
    assert len(own_chapters.chapters) == 1 and len(own_chapters.scenes) == 1
    assert made and made[0].calls > 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--chapters", "0"], "chapters must be between 1 and 24, not 0"),
        (["--chapters", "2", "--scenes", "3"], "not both"),
        (["--scenes-per-chapter", "3"], "give --chapters too"),
        (["--chapters", "2", "--scenes-per-chapter", "11"], "scenes per chapter must be between 1 and 10"),
    ],
)
def test_cli_a_bad_default_chapter_count_is_exit_2_with_nothing_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], says: str
) -> None:
    made = _scripted_cli(monkeypatch)
    premises = write_jsonl(tmp_path / "p.jsonl", [{"premise": "A kite."}, {"premise": "A well."}])
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["batch", str(premises), "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    assert says in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not out.exists() and made == []  # failed before any engine (or model) was made
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]


async def test_run_batch_checks_its_default_chapters_once_before_any_call(tmp_path: Path) -> None:
    from storyengine.errors import InputError

    engine, provider = engine_with(story_script)
    async with engine:
        with pytest.raises(InputError, match="chapters must be between 1 and 24, not 0"):
            await collect(engine, ["A premise.", "Another."], out=tmp_path / "out", chapters=0)
    assert provider.calls == 0 and not (tmp_path / "out").exists()
