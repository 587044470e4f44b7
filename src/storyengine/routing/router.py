"""The router: one `generate` for the pipeline, routed by `request.component`.

A component's chain (`narrative.providers.<component>`: one name or an ordered fallback
list) is cut into **routes**: runs of consecutive providers that share a model profile
(providers/profiles.py), so they are asked the same way. For each route it composes, from
the outside in,

    Instrumented( Cached( Fallback(
        RecordedLink(Breaker(Retrying(A, ask=RecordedAttempts(Asked(A))))), ... ) ) )

The pipeline (pipeline/twostage.py) walks a component's routes itself, because moving from a
`standard` provider to a `tiny` one changes how a step is asked (one call or many), with the
route's own context window and tokenizer. `Router.generate` serves direct callers with the
whole chain. A provider named by several components is one object shared by all of them (one
HTTP client, one loaded model), with its own `Retrying` per component.

A resumed step that failed starts from a later provider of its chain: `routes(component,
start=k)` cuts the rotated chain `chain[k:] + chain[:k]` (composed on first use, then kept), so
every provider is still there to fall back to.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

from ..budget import Budget
from ..config import COMPONENTS, Settings, secret_values
from ..errors import ConfigError
from ..failures import InvalidOutputLog
from ..providers.base import Provider
from ..providers.profiles import Profile, profile_for
from ..runlog import RunLog
from ..types import Completion, CompletionRequest
from .base import Check, Generator
from .breaker import Breaker
from .cache import Cached, chain_identity
from .cache_store import ResponseCache, sqlite_cache
from .fallback import Fallback
from .instrument import Instrumentation, Sink
from .retry import Asked, Retrying, Sleep

logger = logging.getLogger("storyengine")

CacheFactory = Callable[[Generator, Sequence[Provider]], Generator]
"""Wraps a component's fallback chain (given the chain's providers) in a cache."""


@dataclass(frozen=True)
class Route:
    """Consecutive providers of a chain that share a profile, and the generator that asks them."""

    profile: Profile
    providers: tuple[Provider, ...]
    generator: Generator

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.providers]

    @property
    def structured_mode(self) -> str:
        return self.providers[0].structured_mode

    def budget(self) -> Budget:
        """The route's window (its smallest) and tokenizer (the largest count of its providers).

        Counting loads an embedded model: call it off the event loop the first time."""
        providers = self.providers
        return Budget(
            min(p.context_window for p in providers),
            lambda text: max(p.count_tokens(text) for p in providers),
        )


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
        sinks: Sequence[Sink] = (),
        invalid_outputs: InvalidOutputLog | None = None,
    ) -> None:
        self.settings = settings
        self.providers = providers
        self.runlog = runlog
        self.cache = cache
        self._owns_runlog = False
        self.invalid_outputs = invalid_outputs or InvalidOutputLog(
            settings.log_dir / "invalid_json",
            max_files=settings.logging.invalid_json_max_files,
            max_bytes=settings.logging.invalid_json_max_bytes,
            secrets=secret_values(),
        )
        self.instrumentation = Instrumentation(
            [*([runlog] if runlog is not None else []), *sinks], invalid_outputs=self.invalid_outputs
        )
        rng = rng or random.Random()
        self._sleep, self._rng = sleep, rng
        self._routes: dict[str, list[Route]] = {
            component: self._compose(component, self.chain(component), cache, sleep, rng)
            for component in COMPONENTS
        }
        self._rotated: dict[tuple[str, int], list[Route]] = {}  # (component, start): its routes
        self.generators: dict[str, Generator] = {
            component: routes[0].generator
            if len(routes) == 1
            else Fallback([("+".join(r.names), r.generator) for r in routes])
            for component, routes in self._routes.items()
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
        sinks: list[Sink] = []
        if settings.logging.opentelemetry:
            from .telemetry import OpenTelemetrySink

            sinks.append(OpenTelemetrySink())
        router = cls(
            settings,
            providers,
            cache=cache,
            sleep=sleep,
            runlog=runlog or RunLog(settings.runlog_path),
            sinks=sinks,
        )
        router._owns_runlog = owns_runlog
        return router

    def chain(self, component: str) -> list[str]:
        return self.settings.narrative.providers.chain(component)

    def routes(self, component: str, start: int = 0) -> list[Route]:
        """The component's chain as routes, in order (see the module docstring); from its provider
        number `start` (modulo the chain's length), the ones before it last."""
        routes = self._routes.get(component)
        if routes is None:
            known = ", ".join(self._routes)
            raise ConfigError(f"no route for component {component!r}; known components: {known}")
        chain = self.chain(component)
        start = start % len(chain) if chain else 0
        if not start:
            return routes
        rotated = self._rotated.get((component, start))
        if rotated is None:
            names = chain[start:] + chain[:start]
            rotated = self._compose(component, names, self.cache, self._sleep, self._rng)
            self._rotated[(component, start)] = rotated
        return rotated

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
        self,
        component: str,
        chain: list[str],
        cache: CacheFactory | None,
        sleep: Sleep,
        rng: random.Random,
    ) -> list[Route]:
        groups: list[tuple[Profile, list[Provider]]] = []
        for name in chain:
            provider = self.providers.get(name)
            if provider is None:
                built = ", ".join(sorted(self.providers)) or "none"
                raise ConfigError(
                    f"narrative.providers.{component} names provider {name!r}, but no such provider "
                    f"was built (built: {built}); define it under providers: in {self.settings.source}"
                )
            profile = profile_for(self.settings.providers.get(name))
            if groups and groups[-1][0] == profile:
                groups[-1][1].append(provider)
            else:
                groups.append((profile, [provider]))
        return [
            Route(profile, tuple(members), self._compose_route(profile, members, cache, sleep, rng))
            for profile, members in groups
        ]

    def _compose_route(
        self,
        profile: Profile,
        members: list[Provider],
        cache: CacheFactory | None,
        sleep: Sleep,
        rng: random.Random,
    ) -> Generator:
        retry = self.settings.retry
        links: list[tuple[str, Generator]] = []
        for provider in members:
            ask = self.instrumentation.attempts(Asked(provider), provider=provider.name, model=provider.model)
            retrying = Retrying(
                provider,
                attempts=retry.attempts,
                backoff_initial=retry.backoff_initial,
                backoff_max=retry.backoff_max,
                sleep=sleep,
                rng=rng,
                ask=ask,
                profile=profile,  # the route's: how a cut-off or looping answer is asked again
            )
            # One breaker per provider object, shared by every component: a provider that keeps
            # failing is skipped at once instead of costing each call its whole retry budget.
            breaker = Breaker.around(
                provider, retrying, failures=retry.breaker_failures, cooldown=retry.breaker_cooldown
            )
            links.append((provider.name, self.instrumentation.link(breaker, provider=provider.name)))
        inner: Generator = Fallback(links)
        if cache is not None:
            inner = cache(inner, members)
        return self.instrumentation.calls(inner)


def response_cache(settings: Settings) -> ResponseCache:
    """The cache `settings.cache` describes: on SQLite by default, on Redis for `backend: redis`."""
    cache = settings.cache
    if cache.backend == "redis":
        from .redis_store import redis_cache

        return redis_cache(
            cache.redis_url, ttl_seconds=cache.ttl_seconds, memory_entries=cache.memory_entries
        )
    return sqlite_cache(
        settings.cache_path, ttl_seconds=cache.ttl_seconds, memory_entries=cache.memory_entries
    )


class ResponseCaching:
    """The default cache factory: every component's `Cached` shares one `ResponseCache`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings.cache
        self.store = response_cache(settings)

    def __call__(self, inner: Generator, chain: Sequence[Provider]) -> Generator:
        provider_id, model = chain_identity(chain)
        return Cached.from_settings(inner, self.store, self.settings, provider_id=provider_id, model=model)

    async def aclose(self) -> None:
        await self.store.aclose()


def default_cache(settings: Settings) -> ResponseCaching | None:
    """The response cache the settings ask for (None when `cache.enabled` is false)."""
    return ResponseCaching(settings) if settings.cache.enabled else None
