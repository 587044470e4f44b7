"""Invalid structured outputs, one JSON file each, in a rotating directory kept for triage.

Secrets are scrubbed from every string written. This module does not read the environment
(config.py does): pass the values to hide as `secrets=`, e.g. `config.secret_values()`.
Which values are secret is decided in one place, `storyengine.secrets`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .secrets import MIN_SECRET_LENGTH, REDACTED, SECRET_SUFFIXES, scrub, secret_values_in

logger = logging.getLogger("storyengine")

_NAME = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-[a-z0-9_-]{0,40}-[0-9a-f]{8}\.json$")
_clock_lock = threading.Lock()
_last_stamp_us = 0


def _timestamp() -> str:
    """UTC time to the microsecond, strictly increasing within this process (names sort by time)."""
    global _last_stamp_us
    with _clock_lock:
        now_us = max(time.time_ns() // 1000, _last_stamp_us + 1)
        _last_stamp_us = now_us
    seconds, micros = divmod(now_us, 1_000_000)
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(seconds)) + f".{micros:06d}Z"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-")[:40]


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    return f"{text[:head]}…[{len(text) - limit} characters cut]…{text[-tail:]}"


class InvalidOutputLog:
    """Writes one file per invalid output into `directory`, keeping at most `max_files` files
    and `max_bytes` bytes (the newest file is always kept). Never raises: when the directory
    cannot be written it logs one warning (once per log) and `record` returns None."""

    def __init__(
        self,
        directory: Path,
        max_files: int = 200,
        max_bytes: int = 5_000_000,
        *,
        secrets: Iterable[str] = (),
    ) -> None:
        self.directory = Path(directory)
        self.max_files = max(1, max_files)
        self.max_bytes = max(1, max_bytes)
        kept = {s.strip() for s in secrets if len(s.strip()) >= MIN_SECRET_LENGTH}
        self._secrets = sorted(kept, key=len, reverse=True)  # longest first: no partial leftovers
        self._text_limit = max(256, self.max_bytes // 10)
        self._warned = False

    # -- writing --
    def record(
        self,
        *,
        component: str,
        stage: str,
        attempt: int,
        prompt_hash: str,
        provider: str,
        model: str,
        errors: Any,
        raw_text: str,
        repaired_text: str | None = None,
    ) -> Path | None:
        stamp = _timestamp()
        entry = {
            "time": stamp,
            "component": component,
            "stage": stage,
            "attempt": attempt,
            "prompt_hash": prompt_hash,
            "provider": provider,
            "model": model,
            "errors": errors,
            "raw_text": _clip(raw_text, self._text_limit),
            "repaired_text": None if repaired_text is None else _clip(repaired_text, self._text_limit),
        }
        text = json.dumps(self._scrub(entry), ensure_ascii=False, indent=2, default=str) + "\n"
        path = self.directory / f"{stamp}-{_slug(component)}-{uuid.uuid4().hex[:8]}.json"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".part")
            partial.write_text(text, encoding="utf-8")
            os.replace(partial, path)
        except OSError as exc:
            self._warn(exc)
            return None
        self._rotate(keep=path)
        return path

    def files(self) -> list[Path]:
        """The log's files, oldest first (other files in the directory are never touched)."""
        try:
            names = sorted(p.name for p in self.directory.iterdir() if _NAME.match(p.name))
        except OSError:
            return []
        return [self.directory / name for name in names]

    # -- helpers --
    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return scrub(value, self._secrets, REDACTED)
        if isinstance(value, dict):
            return {self._scrub(str(k)): self._scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub(v) for v in value]
        return value

    def _rotate(self, *, keep: Path) -> None:
        sized: list[tuple[Path, int]] = []
        for path in self.files():
            try:
                sized.append((path, path.stat().st_size))
            except OSError:  # removed by another process meanwhile
                continue
        total = sum(size for _, size in sized)
        count = len(sized)
        for path, size in sized:
            if count <= self.max_files and total <= self.max_bytes:
                break
            if path == keep:
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                self._warn(exc)
                return
            count -= 1
            total -= size

    def _warn(self, exc: OSError) -> None:
        if self._warned:
            return
        self._warned = True
        logger.warning(
            "cannot write invalid-output logs to %s (%s); they are not kept. "
            "Set logging.dir in config.yaml to a writable directory.",
            self.directory,
            exc.strerror or exc,
        )


__all__ = ["MIN_SECRET_LENGTH", "REDACTED", "SECRET_SUFFIXES", "InvalidOutputLog", "secret_values_in"]
