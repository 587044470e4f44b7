"""Stories as Ray tasks: `storyengine batch ... --ray [ADDRESS]`.

The driver (this process) keeps the batch: it reads the premises, writes the state files,
the manifest and every story's files. Each story is one Ray task (`story_task`) that builds
its own engine from the driver's settings, runs the story under the run id the driver chose,
and returns the story as JSON. Checkpoints go to the directory the driver names (its own
checkpoint directory: on one machine, or a shared file system on a cluster), so when a worker
dies mid-story Ray retries the task (`max_retries`) and the retry resumes from the story's
checkpoint instead of starting over.

ADDRESS is a Ray Client address (`ray://host:10001`), `auto` (the cluster this machine belongs
to), or None for a local runtime started here (and stopped at the end).

Parallel calls: the driver keeps at most `concurrency` tasks in flight. A server's
`max_parallel` is enforced inside one process, and each task is its own process, so for routes
to servers the driver caps tasks at that limit and gives each task a share of it for its
scenes; the whole batch never sends a server more than `max_parallel` calls at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from ..config import COMPONENTS, OpenAIProviderSettings, Settings
from ..errors import ConfigError
from ..schemas import Story
from .premises import PremiseItem
from .runner import ProviderFactory, StoryOutcome, Usage, check_cache, run_story

INSTALL_HINT = "pip install 'storyengine[ray]'"


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            f"--ray needs Ray, which is not installed; install it with: {INSTALL_HINT}"
        ) from None
    return ray


_QUIET: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}


def init_local_runtime(num_cpus: int = 2) -> None:
    """Start a Ray runtime on this machine, on 127.0.0.1 only. Its workers import what this
    process imports (same machine, same paths), so a development checkout works as installed."""
    ray = _ray()
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    try:
        ray.init(num_cpus=num_cpus, _node_ip_address="127.0.0.1", **_QUIET)
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def task_cpus(settings: Settings) -> float:
    """Ray CPUs one story task reserves: a whole one when a route runs the embedded model in the
    worker; a quarter when every route is a server (the task mostly waits on the network, and the
    driver already caps the tasks in flight)."""
    routed = {name for c in COMPONENTS for name in settings.narrative.providers.chain(c)}
    servers = all(isinstance(settings.providers[name], OpenAIProviderSettings) for name in routed)
    return 0.25 if servers else 1.0


def server_limits(settings: Settings, concurrency: int) -> tuple[int, int]:
    """(tasks in flight, scene concurrency per task) that keep every server within `max_parallel`."""
    routed = {name for c in COMPONENTS for name in settings.narrative.providers.chain(c)}
    limits = [
        p.max_parallel
        for name, p in settings.providers.items()
        if name in routed and isinstance(p, OpenAIProviderSettings)
    ]
    scenes = settings.narrative.concurrency.scenes
    if not limits:
        return concurrency, scenes
    slots = min(limits)
    tasks = max(1, min(concurrency, slots))
    return tasks, max(1, min(scenes, slots // tasks))


def story_task(spec: dict[str, Any]) -> dict[str, Any]:
    """The body of one Ray task: one story, start to end (or from its checkpoint)."""
    return asyncio.run(_story_task(spec))


async def _story_task(spec: dict[str, Any]) -> dict[str, Any]:
    from ..pipeline.checkpoint import CheckpointStore
    from ..pipeline.engine import StoryEngine

    settings: Settings = spec["settings"]
    factory: ProviderFactory | None = spec["provider_factory"]
    engine = StoryEngine.from_config(settings=settings, providers=factory(settings) if factory else None)
    engine.checkpoints = CheckpointStore(Path(spec["checkpoints"]))
    async with engine:
        outcome = await run_story(engine, spec["item"], spec["run_id"])
    usage = outcome.usage
    return {
        "story": outcome.story.model_dump(mode="json") if outcome.story is not None else None,
        "error": outcome.error,
        "usage": [usage.provider_calls, usage.cache_hits, usage.tokens],
        "pid": os.getpid(),
    }


def warm_worker() -> int:
    """Render every template once in this worker (the first render of each starts Node), so
    that cost is paid at startup, in parallel, and not by the first stories."""
    from ..prompts.render import warm

    warm()
    return os.getpid()


class RayExecutor:
    """Each story as a Ray task; results come back to the driver, which writes everything."""

    def __init__(
        self,
        engine: Any,
        *,
        address: str | None = None,
        concurrency: int | None = None,
        provider_factory: ProviderFactory | None = None,
        max_retries: int = 3,
        num_cpus: int = 2,
        connect_timeout_s: float = 60.0,
    ) -> None:
        self._ray = _ray()
        self.engine = engine
        self.address = address
        requested = max(1, concurrency or num_cpus)
        self.concurrency, scenes = server_limits(engine.settings, requested)
        narrative = engine.settings.narrative
        concurrency_settings = narrative.concurrency.model_copy(update={"scenes": scenes})
        self.settings = engine.settings.model_copy(
            update={"narrative": narrative.model_copy(update={"concurrency": concurrency_settings})}
        )
        self.provider_factory = provider_factory
        self.max_retries = max_retries
        self.num_cpus = num_cpus
        self.connect_timeout_s = connect_timeout_s
        self.checkpoints = str(Path(engine.checkpoints.directory).resolve())
        self._owns_runtime = False
        self._remote: Any = None

    async def start(self) -> None:
        await check_cache(self.engine)
        ray = self._ray
        if not ray.is_initialized():
            await self._init_within(self.connect_timeout_s)
            self._owns_runtime = True
        cpus = task_cpus(self.settings)
        self._remote = ray.remote(max_retries=self.max_retries, retry_exceptions=False, num_cpus=cpus)(
            story_task
        )
        warm = ray.remote(num_cpus=cpus)(warm_worker)
        await asyncio.gather(*(warm.remote() for _ in range(self.concurrency)))

    async def _init_within(self, seconds: float) -> None:
        """`ray.init` in a daemon thread: an address that never answers (Ray waits for it for
        minutes) is one ConfigError after `seconds`, and cannot keep the process from exiting."""
        finished = threading.Event()
        failure: list[BaseException] = []

        def init() -> None:
            try:
                self._init()
            except BaseException as exc:
                failure.append(exc)
            finally:
                finished.set()

        threading.Thread(target=init, name="ray-init", daemon=True).start()
        if not await asyncio.to_thread(finished.wait, seconds):
            raise ConfigError(
                f"no answer from the Ray cluster at {self.address} within {seconds:.0f} s; give a running "
                "cluster (ray://HOST:10001 or auto), or leave out the address for a local Ray runtime"
            )
        if failure:
            raise failure[0]

    def _init(self) -> None:
        if not self.address:
            init_local_runtime(self.num_cpus)
            return
        try:
            self._ray.init(address=self.address, **_QUIET)
        except Exception as exc:
            raise ConfigError(
                f"cannot reach the Ray cluster at {self.address} ({type(exc).__name__}: {exc}); "
                "give a running cluster (ray://HOST:10001 or auto), or leave out the address "
                "for a local Ray runtime"
            ) from None

    async def run(self, item: PremiseItem, run_id: str) -> StoryOutcome:
        spec = {
            "settings": self.settings,
            "provider_factory": self.provider_factory,
            "checkpoints": self.checkpoints,
            "item": item,
            "run_id": run_id,
        }
        ref = self._remote.remote(spec)
        try:
            answer: dict[str, Any] = await ref
        except asyncio.CancelledError:
            self._ray.cancel(ref, force=True)
            raise
        usage = Usage(*answer["usage"])
        story = Story.model_validate(answer["story"]) if answer["story"] is not None else None
        return StoryOutcome(story, usage, answer["error"])

    async def stop(self) -> None:
        if self._owns_runtime:
            self._owns_runtime = False
            await asyncio.to_thread(self._ray.shutdown)
