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
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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


HEADER_VERSION = 1


class RunHeader(BaseModel):
    """What a run was asked and how far it got: the header of its checkpoint (read and written only
    by the run engine). `version` 1; a header written before versions (0) is read by `read`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    version: int = HEADER_VERSION
    run_id: str
    premise: str
    scenes: int | None = None  # None: one per plot beat (or, with chapters, per chapter beat)
    chapters: int | None = None  # a long story: its chapters (the plot's beats are its outline)
    scenes_per_chapter: int | None = None  # a long story: the scenes of each chapter
    seed: int | None = None
    provider: str | None = None  # the provider every component was routed to (--provider)
    config: str | None = None  # where the settings came from
    created_at: float = Field(default_factory=time.time)
    status: Literal["running", "failed", "gaps", "done"] = "running"
    error: str | None = None
    step: str | None = None  # a run of one step alone (`StoryEngine.step`): its key
    round: int = 0  # how many times the run was resumed
    failed_step: str | None = None  # where it stopped: a resume draws that step's draft again
    start_provider: dict[str, int] = Field(default_factory=dict)  # step -> where its chain starts
    gaps: list[str] = Field(default_factory=list)  # parts the story went without
    plain: dict[str, str] = Field(default_factory=dict)  # parts made by code (no valid answer), and why
    story_run: str | None = None  # a steering job: the run it adds a version to
    steered: dict[str, Any] | None = None  # a steering job: its operation, base version and seed
    edited: list[str] = Field(default_factory=list)  # a steering job: steps a user edited
    revision_refused: dict[str, list[str]] = Field(default_factory=dict)  # scene -> measures it worsened

    @field_validator("story_run")
    @classmethod
    def _story_run_is_a_run_id(cls, value: str | None) -> str | None:
        if value is not None and not RUN_ID.fullmatch(value):
            raise ValueError(f"the run it steers is named {value!r}, which is not a run id")
        return value

    @classmethod
    def read(cls, data: object, run_id: str) -> RunHeader:
        """The header of `<run_id>.json`; ValueError saying what is wrong. Its run id names the story's
        folder and the run store's row, so it must be the run id the file is named by (a crafted
        `../../elsewhere` would otherwise write outside the output)."""
        if not isinstance(data, dict):
            raise ValueError("it has no header")
        if data.get("run_id") != run_id:
            raise ValueError(
                f"its header names run {data.get('run_id')!r}, not the run its file is named for"
            )
        if not isinstance(data.get("premise"), str):
            raise ValueError("its header has no premise")
        if "version" not in data:  # written before versions: a key per part made by code
            plain = {k.removeprefix("plain_"): v for k, v in data.items() if k.startswith("plain_")}
            data = {**{k: v for k, v in data.items() if k in cls.model_fields}, "plain": plain}
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ValueError(f"its header's {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


class RunState:
    """The steps of one run, keyed by name ("plot", "scene.2.draft", "dialogue.2", ...).

    Each value is JSON-safe (a model dumped with `model_dump(mode="json")`, or a string).
    `put` writes the whole state atomically (temp file + rename), so a crash at any point
    leaves the last completed step on disk.
    """

    def __init__(self, path: Path, header: RunHeader, steps: dict[str, Any] | None = None) -> None:
        self.path = path
        self.header = header
        self.steps: dict[str, Any] = steps or {}
        self.meta: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def run_id(self) -> str:
        return self.header.run_id

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
            self.header.status = status  # type: ignore[assignment]  # checked by the model
            self.header.error = error
            self._write()

    def _write(self) -> None:
        data = {"header": self.header.model_dump(mode="json"), "steps": self.steps, "meta": self.meta}
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
        header: RunHeader,
        steps: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> RunState:
        """A new state, written at once; `steps` (and their `meta`) when it starts from another's."""
        path = self.path(header.run_id)
        for field in ("premise", "provider", "config"):  # what a user gave, written as UTF-8
            value = getattr(header, field)
            why = unwritable_text(value) if isinstance(value, str) else None
            if why:
                raise InputError(f"the {field} cannot be written: {why}; give it as plain text")
        if path.exists():
            raise InputError(f"run {header.run_id!r} exists already ({path}); resume it or use a new id")
        state = RunState(
            path, header.model_copy(update={"status": "running", "error": None}), dict(steps or {})
        )
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
        try:
            if not isinstance(data, dict):
                raise ValueError("it is not a JSON object")
            header = RunHeader.read(data.get("header"), run_id)
            if not all(isinstance(data.get(k, {}), dict) for k in ("steps", "meta")):
                raise ValueError("its steps or meta are not a mapping")
        except ValueError as exc:
            raise InputError(
                f"the checkpoint of run {run_id!r} ({path}) is not one storyengine wrote: {exc}; "
                "move it away (the run cannot be resumed) and start a new run"
            ) from None
        state = RunState(path, header, data.get("steps", {}))
        state.meta = data.get("meta", {})
        return state
