"""The router: one `generate` for the pipeline, routed by `request.component`.

For each component it composes, from the outside in,

    Instrumented( Cached( Fallback( Breaker(Retrying(provider A)), Breaker(Retrying(provider B)), ... ) ) )

from `narrative.providers.<component>` (one name or an ordered fallback list) and the
`retry:` settings. A provider named by several components is one object shared by all
of them (one HTTP client, one loaded model), with its own `Retrying` per component.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from types import TracebackType

from ..config import COMPONENTS, Settings
from ..errors import ConfigError
from ..providers.base import Provider
from ..runlog import RunLog
from ..types import Completion, CompletionRequest
from .base import Check, Generator
from .breaker import Breaker
from .cache import Cached, chain_identity
from .cache_store import ResponseCache
from .fallback import Fallback
from .instrument import Instrumented
from .retry import Retrying, Sleep

logger = logging.getLogger("storyengine")

CacheFactory = Callable[[Generator, Sequence[Provider]], Generator]
"""Wraps a component's fallback chain (given the chain's providers) in a cache."""


class Router:
    """Routes each request to its component's composed generator."""

    def __init__(
        self,
        settings: Settings,
        providers: dict[str, Provider],
        *,
        cache: CacheFactory | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        runlog: RunLog | None = None,
    ) -> None:
        self.settings = settings
        self.providers = providers
        self.runlog = runlog
        self.cache = cache
        self._owns_runlog = False
        self.generators: dict[str, Generator] = {
            component: self._compose(component, cache, sleep, rng or random.Random())
            for component in COMPONENTS
        }

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        providers: dict[str, Provider] | None = None,
        *,
        cache: CacheFactory | None = None,
        sleep: Sleep = asyncio.sleep,
        runlog: RunLog | None = None,
    ) -> Router:
        """A router over `providers`, or over every provider `settings` defines (built, not loaded).

        Unless given a run log, it opens the one at `settings.runlog_path` and closes it in `aclose`.
        """
        if providers is None:
            from ..providers.registry import build_providers

            providers = build_providers(settings)
        if cache is None:
            cache = default_cache(settings)
        owns_runlog = runlog is None
        router = cls(
            settings, providers, cache=cache, sleep=sleep, runlog=runlog or RunLog(settings.runlog_path)
        )
        router._owns_runlog = owns_runlog
        return router

    def chain(self, component: str) -> list[str]:
        return self.settings.narrative.providers.chain(component)

    async def generate(self, request: CompletionRequest, check: Check | None = None) -> Completion:
        generator = self.generators.get(request.component)
        if generator is None:
            known = ", ".join(self.generators)
            raise ConfigError(f"no route for component {request.component!r}; known components: {known}")
        return await generator.generate(request, check)

    async def aclose(self) -> None:
        """Close every provider once; a provider that fails to close is logged, not raised."""
        results = await asyncio.gather(
            *(provider.aclose() for provider in self.providers.values()), return_exceptions=True
        )
        for name, result in zip(self.providers, results, strict=True):
            if isinstance(result, Exception):
                logger.warning("provider %s did not close cleanly: %s", name, result)
        close_cache = getattr(self.cache, "aclose", None)
        if close_cache is not None:
            await close_cache()
        if self.runlog is not None and self._owns_runlog:
            self.runlog.close()

    async def __aenter__(self) -> Router:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _compose(
        self, component: str, cache: CacheFactory | None, sleep: Sleep, rng: random.Random
    ) -> Generator:
        links: list[tuple[str, Generator]] = []
        for name in self.chain(component):
            provider = self.providers.get(name)
            if provider is None:
                built = ", ".join(sorted(self.providers)) or "none"
                raise ConfigError(
                    f"narrative.providers.{component} names provider {name!r}, but no such provider "
                    f"was built (built: {built}); define it under providers: in {self.settings.source}"
                )
            retry = self.settings.retry
            links.append(
                (
                    name,
                    Breaker.around(  # one breaker per provider object, shared by every component
                        provider,
                        Retrying(
                            provider,
                            attempts=retry.attempts,
                            backoff_initial=retry.backoff_initial,
                            backoff_max=retry.backoff_max,
                            sleep=sleep,
                            rng=rng,
                        ),
                        failures=retry.breaker_failures,
                        cooldown=retry.breaker_cooldown,
                    ),
                )
            )
        inner: Generator = Fallback(links)
        if cache is not None:
            inner = cache(inner, [self.providers[name] for name in self.chain(component)])
        return Instrumented(inner)


class ResponseCaching:
    """The default cache factory: every component's `Cached` shares one `ResponseCache`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings.cache
        self.store = ResponseCache.from_settings(settings)

    def __call__(self, inner: Generator, chain: Sequence[Provider]) -> Generator:
        provider_id, model = chain_identity(chain)
        return Cached.from_settings(inner, self.store, self.settings, provider_id=provider_id, model=model)

    async def aclose(self) -> None:
        await self.store.aclose()


def default_cache(settings: Settings) -> ResponseCaching | None:
    """The response cache the settings ask for (None when `cache.enabled` is false)."""
    return ResponseCaching(settings) if settings.cache.enabled else None
