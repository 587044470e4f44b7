"""The batch runner: many premises through the one run engine, as results finish.

`run_batch(engine, premises, out=DIR)` is an async iterator of `BatchResult`s. With `out`,
each finished story is written to DIR/<id>/, every story that ends gets a manifest line,
and a rerun skips what is finished and resumes the rest from their checkpoints (see
`outdir.py`). Without `out` the stories are only yielded.

Stories run on an `Executor`: `LocalExecutor` shares the caller's engine (one loaded model,
one cache, one HTTP client per provider; every provider bounds its own parallel calls), and
`RayExecutor` (ray_runner.py) sends each story to a Ray task. One story's failure is its own
`failed` result; the batch goes on. Cancelling the iteration (Ctrl-C) cancels the stories in
flight: their finished steps are checkpointed and their state files name their runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..config import COMPONENTS
from ..errors import StoryEngineError
from ..export import check_story_dir, write_story
from ..pipeline.checkpoint import new_run_id
from ..pipeline.inputs import check_inputs
from ..schemas import Story
from .outdir import BatchDir, StoryState
from .premises import Entry, PremiseItem, PremiseLike, Rejected, load_premises, normalize

if TYPE_CHECKING:
    from ..config import Settings
    from ..pipeline.engine import StoryEngine
    from ..providers.base import Provider

Event = dict[str, Any]
OnEvent = Callable[[Event], None]
ProviderFactory = Callable[["Settings"], "dict[str, Provider]"]


@dataclass
class Usage:
    """What one story cost in this execution: provider calls (attempts), cache hits, tokens."""

    provider_calls: int = 0
    cache_hits: int = 0
    tokens: int = 0

    @classmethod
    def of(cls, calls: Iterable[dict[str, Any]]) -> Usage:
        usage = cls()
        for call in calls:
            if call.get("kind") == "attempt":
                usage.provider_calls += 1
                usage.tokens += int(call.get("prompt_tokens") or 0) + int(call.get("completion_tokens") or 0)
            elif call.get("kind") == "call" and call.get("cache_hit"):
                usage.cache_hits += 1
        return usage


@dataclass
class StoryOutcome:
    story: Story | None
    usage: Usage
    error: str | None = None


@dataclass
class BatchResult:
    """One story of the batch as it ended: done, failed, skipped (finished before) or rejected."""

    id: str | None
    status: str
    run_id: str | None = None
    seconds: float = 0.0
    provider_calls: int = 0
    cache_hits: int = 0
    tokens: int = 0
    error: str | None = None
    line: int | None = None
    resumed: bool = False
    story: Story | None = field(default=None, repr=False)

    def manifest_line(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "run_id": self.run_id,
            "seconds": round(self.seconds, 3),
            "provider_calls": self.provider_calls,
            "cache_hits": self.cache_hits,
            "tokens": self.tokens,
            "error": self.error,
            "line": self.line,
            "resumed": self.resumed,
            "ended_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }


async def run_story(engine: StoryEngine, item: PremiseItem, run_id: str) -> StoryOutcome:
    """Write `item` as run `run_id`: resumed from its checkpoint when one exists, else started.

    A StoryEngineError is the story's failure (returned, not raised); anything else propagates.
    """
    started = datetime.now(UTC) - timedelta(seconds=1)
    try:
        story = await engine.story_of_run(
            run_id,
            item.premise,
            scenes=item.scenes,
            seed=item.seed,
            chapters=item.chapters,
            scenes_per_chapter=item.scenes_per_chapter,
        )
    except StoryEngineError as exc:
        return StoryOutcome(None, _logged_usage(engine, run_id, started), str(exc))
    return StoryOutcome(story, Usage.of(story.meta.get("calls", [])))


def _logged_usage(engine: StoryEngine, run_id: str, since: datetime) -> Usage:
    """A failed run's usage, from the run log (the story that would carry it does not exist)."""
    runlog = engine.runlog
    if runlog is None:
        return Usage()
    calls = runlog.calls(run_id=run_id, limit=100_000)
    return Usage.of(c.model_dump() for c in calls if c.created_at >= since)


class Executor(Protocol):
    concurrency: int

    async def start(self) -> None: ...

    async def run(self, item: PremiseItem, run_id: str) -> StoryOutcome: ...

    async def stop(self) -> None: ...


def provider_slots(settings: Settings) -> int:
    """How many calls the routed providers take at once: the largest `max_parallel` (embedded: 1)."""
    routed = {name for c in COMPONENTS for name in settings.narrative.providers.chain(c)}
    return max((getattr(settings.providers[name], "max_parallel", 1) for name in routed), default=1)


def default_concurrency(settings: Settings) -> int:
    """Stories at once when not told: twice the slots of a server (a story has serial stretches,
    its plot first, so more stories than slots keep every slot busy; the provider still never
    makes more than `max_parallel` calls at once); 1 for the embedded model, which serializes."""
    slots = provider_slots(settings)
    return 2 * slots if slots > 1 else 1


async def check_cache(engine: StoryEngine) -> None:
    """Raise now (ConfigError) when the configured cache server cannot be reached."""
    store = getattr(getattr(engine.router, "cache", None), "store", None)
    check = getattr(store, "check", None)
    if check is not None:
        await check()


class LocalExecutor:
    """Every story on the caller's engine, in this process."""

    def __init__(self, engine: StoryEngine, concurrency: int | None = None) -> None:
        self.engine = engine
        self.concurrency = max(1, concurrency or default_concurrency(engine.settings))

    async def start(self) -> None:
        await check_cache(self.engine)

    async def run(self, item: PremiseItem, run_id: str) -> StoryOutcome:
        return await run_story(self.engine, item, run_id)

    async def stop(self) -> None:
        return None


def _entries(premises: str | Path | Iterable[PremiseLike | Rejected]) -> list[Entry]:
    if isinstance(premises, Path):
        return load_premises(premises)
    if isinstance(premises, str):
        return normalize([premises])
    return normalize(premises)


def _with_defaults(
    item: PremiseItem, *, scenes: int | None, seed: int | None, chapters: int | None, per_chapter: int | None
) -> PremiseItem:
    """`item` with the batch's defaults where it gives none. Its length is its own when it gives
    one (`scenes` or `chapters`): the default length never mixes in, but a line's `chapters`
    take the default scenes per chapter when it gives none."""
    if item.scenes is not None or item.chapters is not None:
        scenes, chapters = item.scenes, item.chapters
    if item.scenes_per_chapter is not None or chapters is None:
        per_chapter = item.scenes_per_chapter
    return replace(
        item,
        scenes=scenes,
        seed=item.seed if item.seed is not None else seed,
        chapters=chapters,
        scenes_per_chapter=per_chapter,
    )


class _Batch:
    def __init__(
        self, executor: Executor, out: BatchDir | None, on_event: OnEvent | None, total: int
    ) -> None:
        self.executor = executor
        self.out = out
        self.on_event = on_event
        self.counts = {"done": 0, "failed": 0, "skipped": 0, "rejected": 0, "running": 0}
        self.total = total
        self.started = time.perf_counter()

    def emit(self, event: str, **fields: Any) -> None:
        if self.on_event is not None:
            elapsed = time.perf_counter() - self.started
            self.on_event({"event": event, "total": self.total, **self.counts, "elapsed": elapsed, **fields})

    def count(self, result: BatchResult) -> None:
        self.counts[result.status] += 1

    def rejected(self, entry: Rejected) -> BatchResult:
        result = BatchResult(entry.id, "rejected", error=entry.error, line=entry.line)
        if self.out is not None:
            known = {
                (m.get("line"), m.get("error")) for m in self.out.manifest() if m["status"] == "rejected"
            }
            if (entry.line, entry.error) not in known:
                self.out.append(result.manifest_line())
        return result

    def skipped(self, item: PremiseItem) -> BatchResult | None:
        state = self.out.finished(item.id, item.fingerprint()) if self.out is not None else None
        if state is None:
            return None
        return BatchResult(item.id, "skipped", run_id=state.run_id, line=item.line)

    async def one(self, item: PremiseItem) -> BatchResult:
        prior = self.out.state(item.id) if self.out is not None else None
        same = prior is not None and prior.fingerprint == item.fingerprint()
        run_id = prior.run_id if prior is not None and same else new_run_id()
        self._save(StoryState(item.id, run_id, "running", item.fingerprint()))
        self.counts["running"] += 1
        self.emit("story_started", id=item.id, run_id=run_id, resumed=same)
        started = time.perf_counter()
        try:
            result = await self._execute(item, run_id, resumed=same)
        finally:
            self.counts["running"] -= 1
        result.seconds = time.perf_counter() - started
        if self.out is not None:
            self._save(StoryState(item.id, run_id, result.status, item.fingerprint(), result.error))
            self.out.append(result.manifest_line())
        return result

    async def _execute(self, item: PremiseItem, run_id: str, *, resumed: bool) -> BatchResult:
        result = BatchResult(item.id, "failed", run_id=run_id, line=item.line, resumed=resumed)
        try:
            outcome = await self.executor.run(item, run_id)
            result.provider_calls = outcome.usage.provider_calls
            result.cache_hits = outcome.usage.cache_hits
            result.tokens = outcome.usage.tokens
            if outcome.story is None:
                result.error = outcome.error or "the story failed"
                return result
            if self.out is not None:
                await asyncio.to_thread(write_story, outcome.story, self.out.story_dir(item.id))
            result.status, result.story = "done", outcome.story
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:  # one story's failure never stops the batch
            result.error = f"{type(exc).__name__}: {exc}"
        return result

    def _save(self, state: StoryState) -> None:
        if self.out is not None:
            self.out.save_state(state)


async def run_batch(
    engine: StoryEngine | None,
    premises: str | Path | Iterable[PremiseLike | Rejected],
    *,
    out: str | Path | None = None,
    scenes: int | None = None,
    seed: int | None = None,
    concurrency: int | None = None,
    on_event: OnEvent | None = None,
    executor: Executor | None = None,
    force: bool = False,
    chapters: int | None = None,
    scenes_per_chapter: int | None = None,
) -> AsyncGenerator[BatchResult, None]:
    """Yield a `BatchResult` for every premise as it ends (see the module docstring).

    `premises`: a Path to a JSONL or text file, one premise string, or an iterable of
    strings, dicts (`premise`, optional `id`, `scenes`, `seed`, `chapters`, `scenes_per_chapter`)
    or `PremiseItem`s. `scenes`/`seed`/`chapters`/`scenes_per_chapter` are the defaults for items
    that give none; an item that gives its own length (`scenes` or `chapters`) keeps it, so the
    default `chapters` never meet a line's `scenes`. A story's folder that holds a
    story the batch did not write there (another run's) is InputError before any story starts,
    unless `force` (then it is replaced).
    """
    if executor is None:
        if engine is None:
            raise ValueError("run_batch needs an engine or an executor")
        executor = LocalExecutor(engine, concurrency)
    # a bad --scenes or --chapters fails once, not once per story
    check_inputs("the batch default", scenes, chapters, scenes_per_chapter)
    entries = _entries(premises)
    batch_dir = BatchDir(out) if out is not None else None
    batch = _Batch(executor, batch_dir, on_event, len(entries))
    todo: list[PremiseItem] = []
    ended: list[Rejected | BatchResult] = []
    for entry in entries:
        if isinstance(entry, Rejected):
            ended.append(entry)
            continue
        item = _with_defaults(
            entry, scenes=scenes, seed=seed, chapters=chapters, per_chapter=scenes_per_chapter
        )
        skipped = batch.skipped(item)
        if skipped is None:
            todo.append(item)
        else:
            ended.append(skipped)
    if batch_dir is not None:
        for item in todo:  # the run the folder may hold: this story's, before (a rerun replaces it)
            prior = batch_dir.state(item.id)
            folder = batch_dir.story_dir(item.id)
            what = f"the folder of story {item.id!r},"
            check_story_dir(
                folder, prior.run_id if prior else None, force=force, what=what, instead="--out or id"
            )
    if todo:  # an unreachable cache or cluster is one error here, before any story starts
        await executor.start()
    workers: list[asyncio.Task[None]] = []
    try:
        for early in ended:
            result = batch.rejected(early) if isinstance(early, Rejected) else early
            batch.count(result)
            yield result
        batch.emit("batch_started", to_run=len(todo), concurrency=executor.concurrency)
        results: asyncio.Queue[BatchResult] = asyncio.Queue()
        pending = iter(todo)

        async def worker() -> None:
            for item in pending:
                try:
                    result = await batch.one(item)
                except Exception as exc:  # the state file or manifest could not be written
                    result = BatchResult(
                        item.id, "failed", error=f"{type(exc).__name__}: {exc}", line=item.line
                    )
                await results.put(result)

        workers = [asyncio.create_task(worker()) for _ in range(min(executor.concurrency, len(todo)))]
        for _ in todo:
            result = await results.get()
            batch.count(result)
            batch.emit("story_ended", **{k: v for k, v in result.manifest_line().items() if k != "ended_at"})
            yield result
        batch.emit("batch_done")
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await executor.stop()
