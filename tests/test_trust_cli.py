"""The CLI and the files it writes, tried as a new user or an attacker would (issue 24, items 5, 12-14).

Hints are followed literally, bad input is one line and exit 2 with nothing left behind, run ids
read from files and arguments name nothing outside their folders, and `--out` never replaces
another run's story (unless --force) nor writes through a link.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from storyengine.batch.premises import PremiseItem
from storyengine.cli import main
from storyengine.errors import InputError
from storyengine.export import write_story
from storyengine.pipeline.checkpoint import CheckpointStore, RunHeader
from storyengine.pipeline.engine import StoryEngine
from storyengine.providers.fake_story import story_script
from storyengine.providers.scripted import ScriptedProvider
from storyengine.schemas import Story
from storyengine.types import CompletionRequest
from test_export import story as a_story

PREMISE = "A clockmaker builds a clock that runs backwards."
SRC = Path(__file__).resolve().parent.parent / "src"


class Cli:
    """The real CLI on a config file of its own (its data in tmp_path/data), every provider call
    answered by `story_script` unless `broken` names a component whose structuring fails."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.data = tmp_path / "data"
        self.config = tmp_path / "config.yaml"
        self.config.write_text(
            "providers: {embedded: {type: embedded, profile: standard}}\ncache: {enabled: false}\n"
            "retry: {attempts: 1, backoff_initial: 0, backoff_max: 0}\n"
            f"logging: {{runlog: {self.data / 'runs.sqlite3'}, dir: {self.data / 'logs'}}}\n"
        )
        self.broken: set[str] = set()
        self.calls = 0
        original = StoryEngine.from_config

        def script(request: CompletionRequest) -> Any:
            self.calls += 1
            if request.component in self.broken and request.stage == "structuring":
                return "not json at all"
            return story_script(request)

        def scripted(*args: Any, **kwargs: Any) -> StoryEngine:
            provider = ScriptedProvider(script, name="embedded", structured_mode="grammar")
            return original(*args, **{**kwargs, "providers": {"embedded": provider}})

        monkeypatch.setattr(StoryEngine, "from_config", scripted)
        self.cwd = tmp_path / "cwd"
        self.cwd.mkdir()
        monkeypatch.chdir(self.cwd)

    @property
    def checkpoints(self) -> Path:
        return self.data / "checkpoints"

    def __call__(self, *args: str, config: bool = True) -> Result:
        extra = ["--config", str(self.config)] if config else []
        return CliRunner().invoke(main, [*args, *extra])

    def generate(self, *args: str) -> Result:
        return self("generate", PREMISE, "--scenes", "1", "--seed", "3", *args)


def one_error_line(result: Result) -> str:
    """The output of a refused command: exactly one line, an error and not a bug report."""
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("storyengine: error: ") and "internal error" not in lines[0], lines[0]
    return lines[0]


def follow(hint: str) -> list[str]:
    """A printed command as a shell would split it, without the program's name."""
    argv = shlex.split(hint)
    assert argv[:2] == ["storyengine", "generate"], hint
    return argv[1:]


def all_files(root: Path) -> set[Path]:
    """Every file under `root`; not SQLite's -wal and -shm files, which come and go with connections
    (the last one closed, when the garbage collector gets to an earlier engine's store, removes them)."""
    return {
        p
        for p in root.rglob("*")
        if (p.is_file() or p.is_symlink()) and not p.name.endswith(("-wal", "-shm"))
    }


# -- 5: the resume hints work as printed --


def test_the_hint_of_a_failed_run_resumes_it_as_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = Cli(tmp_path, monkeypatch)
    cli.broken = {"scene"}
    failed = cli.generate("--quiet")
    assert failed.exit_code == 1, failed.output
    hint = re.search(r"Continue with: (.+?) \(the failed step", failed.output)
    assert hint is not None, failed.output
    assert "--config" in hint.group(1)  # the checkpoints are where this config says, not the default's
    cli.broken = set()
    resumed = CliRunner().invoke(main, follow(hint.group(1)))  # literally: no option added
    assert resumed.exit_code == 0, resumed.output
    run_id = shlex.split(hint.group(1))[3]
    story = Story.model_validate_json((cli.cwd / "stories" / run_id / "story.json").read_text())
    assert story.meta["run_id"] == run_id and story.evaluation is not None


def test_the_hint_of_a_story_with_gaps_completes_it_in_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = Cli(tmp_path, monkeypatch)
    cli.broken = {"evaluation"}
    out = tmp_path / "story"
    gaps = cli.generate("--out", str(out), "--quiet")
    assert gaps.exit_code == 3, gaps.output
    hint = re.search(r"Try the missing parts again with: (.+)", gaps.output)
    assert hint is not None, gaps.output
    cli.broken = set()
    done = CliRunner().invoke(main, follow(hint.group(1)))
    assert done.exit_code == 0, done.output
    story = Story.model_validate_json((out / "story.json").read_text())  # the same run's folder: allowed
    assert story.evaluation is not None and not story.gaps


# -- 12: bad input is one line, exit 2, and nothing is left behind --


def test_a_config_file_that_is_not_utf8_is_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cli = Cli(tmp_path, monkeypatch)
    cli.config.write_bytes(b"providers: {embedded: {type: embedded, profile: caf\xe9}}\n")
    result = cli.generate()
    assert result.exit_code == 2
    line = one_error_line(result)
    assert str(cli.config) in line and "not UTF-8" in line and "0xe9" in line
    assert not cli.data.exists() and cli.calls == 0


@pytest.mark.parametrize(
    "command",
    [
        ["generate", PREMISE, "--seed", "1180591620717411303424"],
        ["generate", PREMISE, "--seed", "-1"],
        ["generate", "--resume", "20240101-000000-abcdef", "--seed", "2147483648"],
        ["revise", "20240101-000000-abcdef", "--seed", "1180591620717411303424"],
        ["batch", "premises.txt", "--out", "batch", "--seed", "1180591620717411303424"],
    ],
    ids=["generate", "negative", "resume", "revise", "batch"],
)
def test_a_seed_out_of_range_says_the_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    cli = Cli(tmp_path, monkeypatch)
    (cli.cwd / "premises.txt").write_text(PREMISE + "\n")
    result = cli(*command)
    assert result.exit_code == 2
    assert "between 0 and 2147483647" in one_error_line(result)
    assert not cli.data.exists() and all_files(cli.cwd) == {cli.cwd / "premises.txt"}


def test_a_premise_that_cannot_be_encoded_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 in the command line reach Python as lone surrogates."""
    data = tmp_path / "data"
    config = tmp_path / "config.yaml"
    config.write_text(
        'providers: {srv: {type: openai, base_url: "http://127.0.0.1:9/v1", model: m}}\n'
        "narrative: {providers: {plot: srv, scene: srv, dialogue: srv, evaluation: srv, "
        "enhancement: srv, summarize: srv}}\ncache: {enabled: false}\n"
        f"logging: {{runlog: {data / 'runs.sqlite3'}, dir: {data / 'logs'}}}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    argv = [os.fsencode(sys.executable), b"-m", b"storyengine", b"generate", b"A clock \xff that runs back."]
    argv += [b"--config", os.fsencode(config), b"--out", os.fsencode(tmp_path / "out")]
    result = subprocess.run(argv, capture_output=True, env=env, cwd=tmp_path, timeout=120)
    err = result.stderr.decode("utf-8", "replace").strip()
    assert result.returncode == 2, err
    assert len(err.splitlines()) == 1 and "the premise cannot be written" in err, err
    assert "internal error" not in err
    assert not (data / "checkpoints").exists() and not (tmp_path / "out").exists()


def test_a_checkpoint_write_that_fails_leaves_no_temp_file(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "checkpoints")
    with pytest.raises(InputError, match="premise cannot be written"):
        store.create(RunHeader(run_id="r1", premise="A clock \udcff.", scenes=1, seed=1))
    assert not (tmp_path / "checkpoints").exists() or not list((tmp_path / "checkpoints").iterdir())
    state = store.create(RunHeader(run_id="r2", premise="A clock.", scenes=1, seed=1))
    before = (tmp_path / "checkpoints" / "r2.json").read_bytes()
    with pytest.raises(UnicodeEncodeError):
        state.put("plot.draft", "a model's text with a lone \udcff surrogate")
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["r2.json"]
    assert (tmp_path / "checkpoints" / "r2.json").read_bytes() == before


@pytest.mark.parametrize(
    "body",
    [
        '{"steps": {}}',
        '{"header": null, "steps": {}}',
        "[1, 2]",
        '{"header": {"run_id": "20240101-000000-abcdef"}}',
    ],
    ids=["no-header", "null-header", "a-list", "no-premise"],
)
def test_a_checkpoint_without_a_usable_header_is_bad_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str
) -> None:
    cli = Cli(tmp_path, monkeypatch)
    cli.checkpoints.mkdir(parents=True)
    (cli.checkpoints / "20240101-000000-abcdef.json").write_text(body)
    result = cli("generate", "--resume", "20240101-000000-abcdef")
    assert result.exit_code == 2
    assert "is not one storyengine wrote" in one_error_line(result)
    assert cli.calls == 0 and not (cli.cwd / "stories").exists()


# -- 13: run ids are checked wherever they are read --


def test_a_crafted_checkpoint_header_cannot_write_outside_the_output_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = Cli(tmp_path, monkeypatch)
    cli.broken = {"scene"}
    assert cli.generate("--quiet").exit_code == 1  # a real failed run, to copy
    (real,) = cli.checkpoints.glob("*.json")
    data = json.loads(real.read_text())
    data["header"]["run_id"] = "../../escaped-run"
    (cli.checkpoints / "20240101-000000-abcdef.json").write_text(json.dumps(data))
    cli.broken = set()
    before = all_files(tmp_path)
    result = cli("generate", "--resume", "20240101-000000-abcdef")
    assert result.exit_code == 2
    assert "'../../escaped-run'" in one_error_line(result)
    assert not (tmp_path / "escaped-run").exists() and all_files(tmp_path) == before


@pytest.mark.parametrize("run_id", ["../../escaped-run", "a/b", ".hidden", "x" * 200, "run id", "r\n1"])
def test_a_run_id_argument_that_is_not_one_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_id: str
) -> None:
    cli = Cli(tmp_path, monkeypatch)
    for command in (["generate", "--resume", run_id], ["revise", run_id]):
        result = cli(*command)
        assert result.exit_code == 2, result.output
        assert "not a run id" in one_error_line(result)
    assert cli.calls == 0 and not cli.data.exists()


def test_a_batch_state_file_naming_a_bad_run_id_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = Cli(tmp_path, monkeypatch)
    (cli.cwd / "premises.jsonl").write_text(json.dumps({"id": "kite", "premise": PREMISE}) + "\n")
    state = cli.cwd / "batch" / ".batch" / "kite.json"
    state.parent.mkdir(parents=True)
    fingerprint = PremiseItem("kite", PREMISE).fingerprint()  # the same story: it would be resumed
    state.write_text(json.dumps({"id": "kite", "run_id": "../../../escaped", "status": "failed",
                                 "fingerprint": fingerprint}))  # fmt: skip
    result = cli("batch", "premises.jsonl", "--out", "batch", "--quiet")
    assert result.exit_code == 2, result.output
    line = one_error_line(result)
    assert "not a run id" in line and "batch/.batch/kite.json" in line
    assert cli.calls == 0 and not (tmp_path / "escaped").exists()


# -- 14: --out never replaces another run's story unless --force, and never writes through a link --


def test_out_holding_another_runs_story_is_refused_unless_forced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = Cli(tmp_path, monkeypatch)
    out = tmp_path / "story"
    assert cli.generate("--out", str(out), "--quiet").exit_code == 0
    first = (out / "story.json").read_bytes()
    first_run = json.loads(first)["meta"]["run_id"]
    calls = cli.calls
    refused = cli.generate("--out", str(out), "--quiet")
    assert refused.exit_code == 2
    line = one_error_line(refused)
    assert f"already holds the story of run {first_run}" in line and "--force" in line
    assert (out / "story.json").read_bytes() == first and cli.calls == calls  # before any model call
    forced = cli.generate("--out", str(out), "--quiet", "--force")
    assert forced.exit_code == 0, forced.output
    assert json.loads((out / "story.json").read_text())["meta"]["run_id"] != first_run


def test_revise_into_a_folder_of_another_run_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = Cli(tmp_path, monkeypatch)
    other, mine = tmp_path / "other", tmp_path / "mine"
    assert cli.generate("--out", str(other), "--quiet").exit_code == 0
    assert cli.generate("--out", str(mine), "--quiet").exit_code == 0
    run_id = json.loads((mine / "story.json").read_text())["meta"]["run_id"]
    before = (other / "story.json").read_bytes()
    refused = cli("revise", run_id, "--out", str(other))
    assert refused.exit_code == 2
    assert "already holds the story of run" in one_error_line(refused)
    assert (other / "story.json").read_bytes() == before
    revised = cli("revise", run_id, "--out", str(mine))  # a version of the same run: allowed
    assert revised.exit_code in (0, 3), revised.output
    assert json.loads((mine / "story.json").read_text())["meta"]["run_id"].startswith(f"{run_id}.steer-")


def test_a_symlinked_story_file_is_refused_and_with_force_replaced_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = Cli(tmp_path, monkeypatch)
    precious = tmp_path / "precious.txt"
    precious.write_text("not to be overwritten\n")
    out = tmp_path / "story"
    out.mkdir()
    (out / "story.json").symlink_to(precious)
    refused = cli.generate("--out", str(out), "--quiet")
    assert refused.exit_code == 2
    assert "unknown run (or links)" in one_error_line(refused)
    forced = cli.generate("--out", str(out), "--quiet", "--force")
    assert forced.exit_code == 0, forced.output
    assert precious.read_text() == "not to be overwritten\n"
    assert not (out / "story.json").is_symlink()
    Story.model_validate_json((out / "story.json").read_text())


def test_write_story_replaces_links_and_leaves_no_temp_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    targets = {}
    for name in ("story.json", "story.md", "story.fountain", "story.epub"):
        target = tmp_path / f"target-{name}"
        target.write_text("mine\n")
        (out / name).symlink_to(target)
        targets[name] = target
    paths = write_story(a_story(), out)
    assert all(t.read_text() == "mine\n" for t in targets.values())
    assert all(p.is_file() and not p.is_symlink() for p in paths.values())
    assert sorted(p.name for p in out.iterdir()) == sorted(targets)  # no temp file left


def test_batch_refuses_a_story_folder_it_did_not_write_unless_forced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = Cli(tmp_path, monkeypatch)
    single = tmp_path / "single"
    assert cli.generate("--out", str(single), "--quiet").exit_code == 0
    (cli.cwd / "premises.jsonl").write_text(
        json.dumps({"id": "kite", "premise": "A kite flies at night."}) + "\n"
    )
    batch = cli.cwd / "batch"
    (batch / "kite").mkdir(parents=True)
    for path in single.iterdir():  # another run's story where the batch would write story "kite"
        (batch / "kite" / path.name).write_bytes(path.read_bytes())
    before = (batch / "kite" / "story.json").read_bytes()
    calls = cli.calls
    refused = cli("batch", "premises.jsonl", "--out", "batch", "--scenes", "1", "--quiet")
    assert refused.exit_code == 2, refused.output
    assert "story 'kite'" in one_error_line(refused)
    assert (batch / "kite" / "story.json").read_bytes() == before and cli.calls == calls
    forced = cli("batch", "premises.jsonl", "--out", "batch", "--scenes", "1", "--quiet", "--force")
    assert forced.exit_code == 0, forced.output
    assert (batch / "kite" / "story.json").read_bytes() != before
    again = cli("batch", "premises.jsonl", "--out", "batch", "--scenes", "1", "--quiet")  # its own: fine
    assert again.exit_code == 0, again.output


# -- 15: control characters in a premise are removed on input --


def test_control_characters_in_a_premise_reach_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = Cli(tmp_path, monkeypatch)
    out = tmp_path / "out"
    result = cli("generate", "A clock\x00maker builds a clock\x07 that runs\x1b backwards.", "--scenes", "1",
                 "--seed", "3", "--out", str(out), "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    story = Story.model_validate_json((out / "story.json").read_text())
    assert story.premise == "A clockmaker builds a clock that runs backwards."
    for name in ("story.json", "story.md", "story.fountain"):
        text = (out / name).read_text()
        assert not any(c in text for c in "\x00\x07\x1b"), name
