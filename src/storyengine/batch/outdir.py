"""A batch's output directory: the stories, the manifest, and each story's state.

    DIR/<id>/story.json, .md, .fountain, .epub   a finished story (export.write_story)
    DIR/manifest.jsonl                           one line per story as it ends
    DIR/.batch/<id>.json                         the story's state: run id, status, fingerprint

The state file is written (atomically) with the run id BEFORE the story starts, so a batch
stopped at any moment knows which checkpointed run each unfinished story continues. A story
is finished when its state says "done" for the same fingerprint and its story.json exists.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..pipeline.checkpoint import check_run_id

MANIFEST = "manifest.jsonl"
STATE_DIR = ".batch"


@dataclass
class StoryState:
    id: str
    run_id: str
    status: str  # running | done | failed
    fingerprint: str
    error: str | None = None


class BatchDir:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self._lock = threading.Lock()
        try:
            (self.root / STATE_DIR).mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.root):
                pass
        except OSError as exc:
            raise InputError(f"cannot write to --out {self.root}: {exc.strerror or exc}") from None

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def story_dir(self, story_id: str) -> Path:
        return self.root / story_id

    def _state_path(self, story_id: str) -> Path:
        return self.root / STATE_DIR / f"{story_id}.json"

    def state(self, story_id: str) -> StoryState | None:
        """The story's state, None when there is none or it cannot be read (the story starts anew);
        InputError when it names a run id that is not one (it would name files elsewhere)."""
        path = self._state_path(story_id)
        try:
            state = StoryState(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None
        check_run_id(state.run_id, f"in {path}; delete that file to start the story anew")
        return state

    def save_state(self, state: StoryState) -> None:
        path = self._state_path(state.id)
        tmp = path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
        body = json.dumps(state.__dict__, ensure_ascii=False).encode("utf-8")  # fails before any file
        try:
            tmp.write_bytes(body)
            os.replace(tmp, path)
        except BaseException:  # no half-written temp file is left behind
            tmp.unlink(missing_ok=True)
            raise

    def finished(self, story_id: str, fingerprint: str) -> StoryState | None:
        state = self.state(story_id)
        if state is None or state.status != "done" or state.fingerprint != fingerprint:
            return None
        return state if (self.story_dir(story_id) / "story.json").exists() else None

    def append(self, line: dict[str, Any]) -> None:
        """Add one line to the manifest, flushed to disk before returning."""
        text = json.dumps(line, ensure_ascii=False) + "\n"
        with self._lock, self.manifest_path.open("a", encoding="utf-8") as manifest:
            manifest.write(text)
            manifest.flush()
            os.fsync(manifest.fileno())

    def manifest(self) -> list[dict[str, Any]]:
        """Every readable line of the manifest (a torn last line is skipped)."""
        try:
            text = self.manifest_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        lines = []
        for raw in text.splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue
        return lines
