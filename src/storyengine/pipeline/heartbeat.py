"""Who is writing a running run: this host, and the heartbeat this process renews for the runs it
writes (one daemon thread, process-wide), and whether a process of this host is alive. A running
run whose process is dead is `orphaned` (runstore.py says how that is told).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Protocol

logger = logging.getLogger("storyengine")

HEARTBEAT_SECONDS = 10.0
"""How often the process writing a run renews its heartbeat."""
STALE_SECONDS = 60.0
"""A running run whose heartbeat is older than this has lost its process (any host)."""
HOST = socket.gethostname()


class RunStore(Protocol):
    """What the heartbeat uses of a run store (runstore.py): its file, and renewing its runs."""

    _key: str  # the file's real path
    path: Path

    def beat(self, run_ids: list[str]) -> None: ...


class Heartbeat:
    """The running runs this process writes, and one daemon thread that renews their heartbeats
    every HEARTBEAT_SECONDS (it ends when there are none). Process-wide: every store of one file
    in this process (the web app's, each engine's) shares what it owns."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owned: dict[tuple[str, str], RunStore] = {}  # (the file's real path, run id)
        self._thread: threading.Thread | None = None
        self.every = HEARTBEAT_SECONDS

    def add(self, store: RunStore, run_id: str) -> None:
        with self._lock:
            self._owned[store._key, run_id] = store
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="storyengine-heartbeat", daemon=True)
                self._thread.start()

    def remove(self, store: RunStore, run_id: str) -> None:
        with self._lock:
            self._owned.pop((store._key, run_id), None)

    def forget(self, store: RunStore) -> None:
        """Stop renewing through `store` (closed): another store of the file takes over, if any."""
        with self._lock:
            for key, owner in list(self._owned.items()):
                if owner is store:
                    del self._owned[key]

    def owns(self, key: str, run_id: str) -> bool:
        with self._lock:
            return (key, run_id) in self._owned

    def _loop(self) -> None:
        while True:
            time.sleep(self.every)
            with self._lock:
                if not self._owned:
                    self._thread = None
                    return
                by_store: dict[int, tuple[RunStore, list[str]]] = {}
                for (_, run_id), store in self._owned.items():
                    by_store.setdefault(id(store), (store, []))[1].append(run_id)
            for store, run_ids in by_store.values():
                try:
                    store.beat(run_ids)
                except Exception as exc:  # a busy or damaged file: the next beat tries again
                    logger.warning(
                        "storyengine: could not renew the heartbeat of runs in %s: %s", store.path, exc
                    )


HEARTBEAT = Heartbeat()


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (on Windows, where signal 0 would end it: assumed)."""
    if sys.platform == "win32":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True
