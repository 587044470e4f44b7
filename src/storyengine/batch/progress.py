"""What `storyengine batch` shows: a live progress bar (rich) or JSON lines, and a summary."""

from __future__ import annotations

import json
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from .runner import BatchResult, Event


def rate_and_eta(done: int, remaining: int, elapsed: float) -> tuple[float | None, float | None]:
    """Stories per minute so far, and the seconds left at that rate (None before any story ends)."""
    if done == 0 or elapsed <= 0:
        return None, None
    per_minute = done / elapsed * 60
    return per_minute, remaining / per_minute * 60


class BatchProgress:
    """Feeds on the runner's events. mode: "rich" (a bar on stderr), "json" (stdout) or "quiet"."""

    def __init__(self, mode: str, console: Console | None = None) -> None:
        self.mode = mode
        self.console = console or Console(stderr=True)
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.started = time.perf_counter()
        self.ended = 0

    def __enter__(self) -> BatchProgress:
        if self.mode == "rich":
            self.progress = Progress(
                TextColumn("[bold]batch"),
                BarColumn(),
                TextColumn("{task.fields[line]}"),
                console=self.console,
                transient=False,
            )
            self.progress.__enter__()
            self.task = self.progress.add_task("batch", total=None, line="starting")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.__exit__(None, None, None)

    def __call__(self, event: Event) -> None:
        counts = {k: event.get(k, 0) for k in ("done", "failed", "running", "skipped", "rejected")}
        ended_here = counts["done"] + counts["failed"]
        remaining = event["total"] - ended_here - counts["skipped"] - counts["rejected"]
        per_minute, eta = rate_and_eta(ended_here, remaining, event["elapsed"])
        if self.mode == "json":
            out = {**event, "remaining": remaining, "stories_per_min": per_minute, "eta_s": eta}
            out["elapsed"] = round(out["elapsed"], 3)
            print(json.dumps(out, ensure_ascii=False, default=str), flush=True)
            return
        if self.progress is None or self.task is None:
            return
        rate = f"{per_minute:.1f}/min" if per_minute is not None else "-/min"
        left = f"ETA {_duration(eta)}" if eta is not None else "ETA -"
        line = (
            f"done {counts['done']}  failed {counts['failed']}  running {counts['running']}  "
            f"skipped {counts['skipped']}  rejected {counts['rejected']}  · {rate} · {left}"
        )
        finished = event["total"] - remaining
        self.progress.update(self.task, total=event["total"], completed=finished, line=line)
        if event["event"] == "story_ended" and event.get("status") == "failed":
            self.progress.console.print(f"[red]✗[/] {event['id']}: {event.get('error')}")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class Summary:
    """Totals of the results (kept as numbers: memory stays flat however many stories run)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {"done": 0, "failed": 0, "skipped": 0, "rejected": 0}
        self.provider_calls = 0
        self.cache_hits = 0
        self.tokens = 0
        self.story_seconds = 0.0
        self.problems: list[tuple[str, str]] = []
        self.started = time.perf_counter()

    def add(self, result: BatchResult) -> None:
        self.counts[result.status] = self.counts.get(result.status, 0) + 1
        self.provider_calls += result.provider_calls
        self.cache_hits += result.cache_hits
        self.tokens += result.tokens
        self.story_seconds += result.seconds
        if result.status in ("failed", "rejected") and len(self.problems) < 20:
            where = result.id or f"line {result.line}"
            self.problems.append((f"{result.status}: {where}", result.error or ""))

    def as_dict(self, interrupted: bool = False) -> dict[str, Any]:
        wall = time.perf_counter() - self.started
        ran = self.counts["done"] + self.counts["failed"]
        return {
            "event": "summary",
            **self.counts,
            "interrupted": interrupted,
            "seconds": round(wall, 3),
            "stories_per_min": round(ran / wall * 60, 2) if wall > 0 and ran else None,
            "provider_calls": self.provider_calls,
            "cache_hits": self.cache_hits,
            "tokens": self.tokens,
        }

    def table(self, interrupted: bool = False) -> Table:
        data = self.as_dict(interrupted)
        title = "batch interrupted — run the same command again to resume" if interrupted else "batch"
        table = Table(title=title, show_header=False)
        table.add_column("")
        table.add_column("", justify="right")
        for key in ("done", "failed", "skipped", "rejected"):
            table.add_row(key, str(data[key]))
        table.add_row("wall time", f"{data['seconds']:.1f} s")
        rate = data["stories_per_min"]
        table.add_row("stories / min", "-" if rate is None else f"{rate:.2f}")
        table.add_row("provider calls", str(data["provider_calls"]))
        table.add_row("cache hits", str(data["cache_hits"]))
        table.add_row("tokens", str(data["tokens"]))
        for label, error in self.problems:
            table.add_row(label, error[:120])
        return table
