"""Resumable runs: every completed step is written to disk the moment it finishes.

Every method blocks (file writes): the run engine calls them with `asyncio.to_thread`.
"""

from __future__ import annotations

import json
import os
import secrets
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        data = {"header": self.header, "steps": self.steps, "meta": self.meta}
        tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, self.path)


class CheckpointStore:
    """Run states as JSON files in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, run_id: str) -> Path:
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise InputError(f"not a run id: {run_id!r}")
        return self.directory / f"{run_id}.json"

    def create(
        self,
        header: dict[str, Any],
        steps: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> RunState:
        """A new state, written at once; `steps` (and their `meta`) when it starts from another's."""
        path = self.path(header["run_id"])
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
        state = RunState(path, data["header"], data.get("steps", {}))
        state.meta = data.get("meta", {})
        return state
