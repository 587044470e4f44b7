"""`storyengine generate` in a terminal shows each draft as it is written (issue 27): in a real
pseudo-terminal, one draft at a time and never garbled; nothing changes off a terminal; Ctrl-C keeps
every finished step and says how to resume, and the resume does not make them again."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from storyengine.cli import main
from storyengine.commands import generate as generate_command
from storyengine.commands.live import LiveDrafts
from storyengine.pipeline.checkpoint import CheckpointStore, checkpoint_dir
from storyengine.pipeline.engine import StoryEngine
from storyengine.providers.fake_story import story_script
from storyengine.providers.scripted import ScriptedProvider
from test_pipeline import settings_for

SRC = Path(__file__).resolve().parents[1] / "src"
TESTS = Path(__file__).resolve().parent
PREMISE = "A cartographer discovers that her maps redraw themselves overnight."
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def _driver(tmp_path: Path, latency: float) -> Path:
    """The real CLI in a process of its own, its engine on the scripted provider."""
    driver = tmp_path / "driver.py"
    driver.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path[:0] = [{str(SRC)!r}, {str(TESTS)!r}]
            from storyengine.pipeline.engine import StoryEngine
            from storyengine.providers.fake_story import story_script
            from storyengine.providers.scripted import ScriptedProvider
            from test_pipeline import settings_for
            real_from_config = StoryEngine.from_config
            def from_config(path=None, *, provider=None, **kw):
                fake = ScriptedProvider(
                    story_script, name="embedded", structured_mode="grammar", latency={latency}
                )
                return real_from_config(settings=settings_for(), providers={{"embedded": fake}})
            StoryEngine.from_config = staticmethod(from_config)
            from storyengine.cli import main
            main()
            """
        )
    )
    return driver


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TERM": "xterm-256color", "COLUMNS": "100"}


# -- the renderer --


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def where(index: int) -> dict[str, Any]:
    return {"step": "scene", "index": index + 1, "total": 2}


def piece(index: int, text: str) -> dict[str, Any]:
    return {"event": "draft_delta", "name": f"scene.{index}.draft", "text": text, **where(index)}


def done(name: str, stage: str) -> dict[str, Any]:
    return {"event": "step_done", "name": name, "stage": stage, "value": "", "step": name.split(".")[0]}


def test_one_draft_at_a_time_the_others_in_their_turn_and_progress_lines_between() -> None:
    out = FakeTTY()
    paused: list[str] = []
    live = LiveDrafts(out, pause=lambda: paused.append("pause"), resume=lambda: paused.append("resume"))
    live.note(lambda: out.write("[plot done]\n"))  # no draft shown: printed at once
    assert live(piece(0, "Ana walks "))
    assert live(piece(1, "Ben waits "))  # a second scene written at once: kept for its turn
    assert live(piece(0, "to the sea."))
    live.note(lambda: out.write("[scene 2 draft done]\n"))  # held: never inside a draft's text
    assert live({"event": "draft_restarted", "name": "scene.1.draft", **where(1)})  # its text is dropped
    assert live(piece(1, "Ben waits again, "))
    assert live({"event": "draft_restarted", "name": "scene.0.draft", **where(0)})
    assert live(piece(0, "Ana runs."))
    assert not live(done("scene.0.draft", "freeform"))  # whole, and another waits: its turn
    assert live(piece(1, "then leaves."))
    assert not live(done("scene.1.draft", "freeform"))
    assert not live(done("scene.0", "structuring"))
    assert paused == ["pause"]
    assert not live(done("scene.1", "structuring"))  # its checked scene: the progress line resumes
    assert paused == ["pause", "resume"]
    assert out.getvalue() == (
        "[plot done]\n"
        "── scene 1/2 (draft) ──\n"
        "Ana walks to the sea.\n(again)\nAna runs.\n"
        "[scene 2 draft done]\n"
        "── scene 2/2 (draft) ──\n"
        "Ben waits again, then leaves.\n"
    )


def test_a_draft_that_ends_unfinished_is_closed_with_the_run() -> None:
    out = FakeTTY()
    live = LiveDrafts(out)
    live(piece(0, "Half a"))
    live.note(lambda: out.write("[later]\n"))
    live.close()  # a stop, a failure: the block ends on its own line, then what was held
    assert out.getvalue() == "── scene 1/2 (draft) ──\nHalf a\n[later]\n"
    live.note(lambda: out.write("[after]\n"))
    assert out.getvalue().endswith("[later]\n[after]\n")


# -- the command in a real terminal, and not in one --


def _in_a_terminal(command: list[str]) -> tuple[int, str, str]:
    """Run `command` with its stderr on a pseudo-terminal; its exit code, stdout and what the
    terminal showed."""
    master, slave = pty.openpty()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=slave, env=_env())
    os.close(slave)
    shown = b""
    while True:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the terminal closed: the process is gone
                break
            if not chunk:
                break
            shown += chunk
        elif process.poll() is not None:
            break
    os.close(master)
    assert process.stdout is not None
    out = process.stdout.read().decode()
    return process.wait(timeout=60), out, ANSI.sub("", shown.decode("utf-8", "replace"))


def test_generate_in_a_terminal_shows_each_draft_as_it_is_written(tmp_path: Path) -> None:
    driver = _driver(tmp_path, latency=0.002)
    out = tmp_path / "story"
    command = [sys.executable, str(driver), "generate", PREMISE, "--scenes", "2", "--seed", "5"]
    code, stdout, shown = _in_a_terminal([*command, "--out", str(out)])
    assert code == 0, shown
    assert stdout.splitlines()[0] == str(out / "story.json")
    story = json.loads((out / "story.json").read_text())
    state = CheckpointStore(checkpoint_dir(settings_for())).load(story["meta"]["run_id"])
    for heading, name in (
        ("── plot (draft) ──", "plot.draft"),
        ("── scene 1/2 (draft) ──", "scene.0.draft"),
        ("── scene 2/2 (draft) ──", "scene.1.draft"),
    ):
        assert shown.count(heading) == 1, shown
        # the whole draft, in one piece under its heading: nothing printed inside it
        block = shown.split(heading, 1)[1]
        assert block.lstrip("\n").startswith(state.get(name).strip()[:300]), (name, block[:400])
    assert "✓ scene 1 of 2 · structuring" in shown and "Story written in" in shown


def test_off_a_terminal_the_output_is_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = StoryEngine.from_config

    def scripted(*args: Any, **kwargs: Any) -> StoryEngine:
        provider = ScriptedProvider(story_script, name="embedded", structured_mode="grammar")
        return real(settings=settings_for(), providers={"embedded": provider})

    monkeypatch.setattr(generate_command.StoryEngine, "from_config", scripted)
    for quiet in ([], ["--quiet"]):
        out = tmp_path / f"story{len(quiet)}"
        result = CliRunner().invoke(
            main, ["generate", PREMISE, "--scenes", "2", "--seed", "5", "--out", str(out), *quiet]
        )
        assert result.exit_code == 0, result.output
        paths = [str(out / f"story.{ext}") for ext in ("json", "md", "fountain", "epub")]
        assert result.stdout.splitlines() == paths
        if quiet:
            assert result.stderr == ""
        else:  # no draft, no progress line: only the line that says it is written
            assert re.fullmatch(r"Story written in \d+s \(run [\w-]+\):\n", result.stderr), result.stderr


# -- Ctrl-C --


def test_ctrl_c_keeps_every_finished_step_and_says_how_to_resume(tmp_path: Path) -> None:
    driver = _driver(tmp_path, latency=0.05)
    command = [sys.executable, str(driver), "generate", PREMISE, "--scenes", "3", "--seed", "5"]
    process = subprocess.Popen(
        [*command, "--json-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # see test_batch's Ctrl-C
    )
    assert process.stdout is not None
    for line in process.stdout:  # interrupt once the first scene is made
        event = json.loads(line)
        if event["event"] == "step_done" and event["name"] == "scene.0":
            break
    process.send_signal(signal.SIGINT)
    rest, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    stopped = json.loads(rest.splitlines()[-1])
    run_id = stopped["run_id"]
    assert stopped["event"] == "stopped" and stopped["resume"].startswith(
        f"storyengine generate --resume {run_id}"
    )
    assert f"Continue with: {stopped['resume']}" in err and "Traceback" not in err
    state = CheckpointStore(checkpoint_dir(settings_for())).load(run_id)
    assert {"plot", "bible", "scene.0", "scene.0.draft"} <= set(state.steps)
    assert state.header.status == "failed" and "evaluation" not in state.steps

    resumed = subprocess.run(
        [
            sys.executable,
            str(driver),
            "generate",
            "--resume",
            run_id,
            "--json-progress",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert resumed.returncode == 0, resumed.stderr
    events = [json.loads(line) for line in resumed.stdout.splitlines()]
    asked = {(e["step"], e.get("index")) for e in events if e["event"] == "step_started"}
    assert not asked & {("plot", None), ("bible", None), ("scene", 1)}, asked
    assert ("evaluation", None) in asked and events[-1]["event"] == "written"
