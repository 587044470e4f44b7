"""Resumable runs: every completed step is written to disk the moment it finishes.

Every method blocks (file writes): the run engine calls them with `asyncio.to_thread`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import threading
import time
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import InputError


def checkpoint_dir(settings: Settings) -> Path:
    """Where an engine built from `settings` keeps its checkpoints (the run store sits beside them)."""
    return settings.runlog_path.parent / "checkpoints"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}(?:\.steer-[0-9a-f]{6})?")
"""What a run id may be. `new_run_id` makes `20250101-120000-3f2a9c`, a steering job appends
`.steer-` and 6 hex digits, and a caller of `StoryEngine.generate(run_id=...)` may name its own
(letters, digits, `-`, `_`). A run id names files (`checkpoints/<id>.json`, `stories/<id>/`), so
one read from a file or an argument is checked against this before it names anything: no `/`,
no `..`, no leading dot, nothing a shell or a file system reads as something else."""


def check_run_id(run_id: object, where: str = "") -> str:
    """`run_id` when it is a run id (RUN_ID); else InputError saying where it came from."""
    if isinstance(run_id, str) and RUN_ID.fullmatch(run_id):
        return run_id
    source = f" ({where})" if where else ""
    raise InputError(
        f"not a run id: {run_id!r}{source}; a run id is like 20250101-120000-3f2a9c "
        "(letters, digits, '-' and '_'); `storyengine logs` lists recent runs"
    )


def unwritable_text(text: str) -> str | None:
    """Why `text` cannot be written as UTF-8 (a lone surrogate, as from undecodable bytes in a
    command line or a JSON `\\ud800` escape), or None when it can."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end]
        return f"{bad!r} at character {exc.start + 1} is not a character UTF-8 can hold"
    return None


def resume_command(run_id: str, settings: Settings, out: Path | None = None) -> str:
    """The command that continues run `run_id`, as it can be typed: `--config` when the settings
    came from a file (the checkpoints live where that config says, which the default config may
    not), `--out` when given (the folder the story was written to). The provider needs no option:
    a run records the one it was made with and resumes on it."""
    command = ["storyengine", "generate", "--resume", run_id]
    source = Path(settings.source).expanduser()
    if source.is_file():
        command += ["--config", str(source.resolve())]
    if out is not None:
        command += ["--out", str(out.expanduser().resolve())]
    return shlex.join(command)


class RunState:
    """The steps of one run, keyed by name ("plot", "scene.2.draft", "dialogue.2", ...).

    Each value is JSON-safe (a model dumped with `model_dump(mode="json")`, or a string).
    `put` writes the whole state atomically (temp file + rename), so a crash at any point
    leaves the last completed step on disk.
    """

    def __init__(self, path: Path, header: dict[str, Any], steps: dict[str, Any] | None = None) -> None:
        self.path = path
        self.header = header
        self.steps: dict[str, Any] = steps or {}
        self.meta: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def run_id(self) -> str:
        return str(self.header["run_id"])

    def get(self, name: str) -> Any:
        return self.steps.get(name)

    def put(self, name: str, value: Any, meta: dict[str, Any] | None = None) -> None:
        with self._lock:
            self.steps[name] = value
            if meta is not None:
                self.meta[name] = meta
            self._write()

    def set_status(self, status: str, error: str | None = None) -> None:
        with self._lock:
            self.header["status"] = status
            self.header["error"] = error
            self._write()

    def _write(self) -> None:
        data = {"header": self.header, "steps": self.steps, "meta": self.meta}
        body = json.dumps(data, ensure_ascii=False, indent=1).encode("utf-8")  # fails before any file
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        try:
            tmp.write_bytes(body)
            os.replace(tmp, self.path)
        except BaseException:  # a full disk, Ctrl-C: no half-written temp file is left behind
            tmp.unlink(missing_ok=True)
            raise


class CheckpointStore:
    """Run states as JSON files in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, run_id: str) -> Path:
        return self.directory / f"{check_run_id(run_id)}.json"

    def create(
        self,
        header: dict[str, Any],
        steps: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> RunState:
        """A new state, written at once; `steps` (and their `meta`) when it starts from another's."""
        path = self.path(header["run_id"])
        for field in ("premise", "provider", "config"):  # what a user gave, written as UTF-8
            why = unwritable_text(header[field]) if isinstance(header.get(field), str) else None
            if why:
                raise InputError(f"the {field} cannot be written: {why}; give it as plain text")
        if path.exists():
            raise InputError(f"run {header['run_id']!r} exists already ({path}); resume it or use a new id")
        state = RunState(path, {**header, "status": "running", "error": None}, dict(steps or {}))
        state.meta = dict(meta or {})
        state.set_status("running")
        return state

    def load(self, run_id: str) -> RunState:
        path = self.path(run_id)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(
                f"no run {run_id!r} in {self.directory}; `storyengine logs` lists recent runs"
            ) from None
        except (OSError, ValueError) as exc:
            raise InputError(f"the checkpoint of run {run_id!r} ({path}) is unreadable: {exc}") from None
        header = data.get("header") if isinstance(data, dict) else None
        problem = _header_problem(header, run_id)
        if problem is None and not all(isinstance(data.get(k, {}), dict) for k in ("steps", "meta")):
            problem = "its steps or meta are not a mapping"
        if problem is not None:
            raise InputError(
                f"the checkpoint of run {run_id!r} ({path}) is not one storyengine wrote: {problem}; "
                "move it away (the run cannot be resumed) and start a new run"
            )
        assert isinstance(header, dict)
        state = RunState(path, header, data.get("steps", {}))
        state.meta = data.get("meta", {})
        return state


def _header_problem(header: object, run_id: str) -> str | None:
    """What is wrong with a checkpoint's header read from `<run_id>.json`, or None.

    The header's run id names the story's folder and the run store's row, so it must be the run id
    the file is named by: a crafted `../../elsewhere` would otherwise write outside the output."""
    if not isinstance(header, dict):
        return "it has no header"
    if header.get("run_id") != run_id:
        return f"its header names run {header.get('run_id')!r}, not the run its file is named for"
    if not isinstance(header.get("premise"), str):
        return "its header has no premise"
    story_run = header.get("story_run")  # a steering job's run, which its version is added to
    if story_run is not None and not (isinstance(story_run, str) and RUN_ID.fullmatch(story_run)):
        return f"its header names the run it steers as {story_run!r}, which is not a run id"
    return None
