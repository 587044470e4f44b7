"""What the benches share: settings that write only into a scratch directory, and a metered provider.

`MeteredProvider` wraps any provider and times every call at the provider boundary (so the
time a story spends waiting on models is known exactly, apart from the pipeline's own work),
keeps each request and completion, and can withhold the JSON schema from the provider (the
"structured output off" mode of the validity bench).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings, load_settings
from ..errors import ConfigError
from ..pipeline.engine import StoryEngine
from ..providers.base import Provider
from ..types import Completion, CompletionRequest


@dataclass
class ProviderCall:
    """One call that reached a provider: what was sent, what came back, when (perf_counter)."""

    request: CompletionRequest
    completion: Completion | None
    started: float
    ended: float

    @property
    def seconds(self) -> float:
        return self.ended - self.started


class MeteredProvider:
    """A provider that records every call of the provider it wraps."""

    def __init__(self, inner: Provider, *, withhold_schema: bool = False) -> None:
        self.inner = inner
        self.name = inner.name
        self.model = inner.model
        self.context_window = inner.context_window
        self.withhold_schema = withhold_schema
        self.structured_mode = "none" if withhold_schema else inner.structured_mode
        self.calls: list[ProviderCall] = []

    async def complete(self, request: CompletionRequest) -> Completion:
        if self.withhold_schema and request.json_schema is not None:
            request = request.model_copy(update={"json_schema": None})
        started = time.perf_counter()
        completion: Completion | None = None
        try:
            completion = await self.inner.complete(request)
            return completion
        finally:
            self.calls.append(ProviderCall(request, completion, started, time.perf_counter()))

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    async def aclose(self) -> None:
        await self.inner.aclose()


def busy_seconds(calls: list[ProviderCall], since: float = float("-inf")) -> float:
    """Seconds during which at least one call was in flight (the union of the calls' intervals)."""
    intervals = sorted((c.started, c.ended) for c in calls if c.started >= since)
    total = 0.0
    current_start, current_end = None, None
    for start, end in intervals:
        if current_end is None or start > current_end:
            if current_end is not None and current_start is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None and current_start is not None:
        total += current_end - current_start
    return total


def bench_settings(config: str | Path | None, provider: str | None) -> Settings:
    """The user's settings (or the packaged default), routed to `provider` when given."""
    settings = load_settings(config)
    return settings.with_route(provider) if provider else settings


def scratch_settings(
    settings: Settings,
    workdir: Path,
    *,
    cache: bool | None = None,
    cache_path: Path | None = None,
    strict: bool | None = None,
    scene_concurrency: int | None = None,
    scene_drafts: int | None = None,
) -> Settings:
    """A copy whose run log, checkpoints, invalid-output log and cache live under `workdir`.

    `cache` turns the response cache on or off (None keeps the configured choice);
    `cache_path` keeps the cache somewhere else (e.g. a user's --cache-path); `scene_drafts`
    fixes the drafts per scene (benches of the call graph count one a scene).
    """
    logging = settings.logging.model_copy(
        update={"dir": workdir / "logs", "runlog": workdir / "runs.sqlite3"}
    )
    cache_update: dict[str, object] = {"path": cache_path or workdir / "cache.sqlite3"}
    if cache is not None:
        cache_update["enabled"] = cache
    update: dict[str, object] = {"logging": logging, "cache": settings.cache.model_copy(update=cache_update)}
    if strict is not None:
        update["structuring"] = settings.structuring.model_copy(update={"strict": strict})
    narrative: dict[str, object] = {}
    if scene_concurrency is not None:
        narrative["concurrency"] = settings.narrative.concurrency.model_copy(
            update={"scenes": scene_concurrency}
        )
    if scene_drafts is not None:
        narrative["scene_drafts"] = scene_drafts
    if narrative:
        update["narrative"] = settings.narrative.model_copy(update=narrative)
    return settings.model_copy(update=update)


def metered_providers(settings: Settings, *, withhold_schema: bool = False) -> dict[str, MeteredProvider]:
    """Every provider the settings define, built and wrapped in a `MeteredProvider`."""
    from ..providers.registry import build_providers

    return {
        name: MeteredProvider(provider, withhold_schema=withhold_schema)
        for name, provider in build_providers(settings).items()
    }


def build_engine(settings: Settings, providers: dict[str, MeteredProvider]) -> StoryEngine:
    return StoryEngine.from_config(settings=settings, providers=dict(providers))


def all_calls(providers: dict[str, MeteredProvider]) -> list[ProviderCall]:
    return sorted((c for p in providers.values() for c in p.calls), key=lambda c: c.started)


def primary_provider(settings: Settings) -> str:
    """The provider the plot is routed to first (what a bench names as "the provider")."""
    chain = settings.narrative.providers.chain("plot")
    if not chain:
        raise ConfigError("narrative.providers.plot names no provider")
    return chain[0]
