"""Fallback: try each provider of a chain in order until one gives a usable answer.

Each link is usually a `Retrying` over one provider, so a provider has used its retries
before the chain moves on (the attempt recorder writes the switch; this class records
nothing). When every link fails, `AllProvidersFailed` lists each provider's failure; when
every link failed with an answer that does not validate, the last validation error is raised
as it is (the caller re-asks with it); a chain of one re-raises that provider's own error
unchanged, so a single-provider setup reads the plain message.
"""

from __future__ import annotations

import logging

from ..errors import AllProvidersFailed, ProviderError, SchemaValidationError
from ..types import Completion, CompletionRequest
from .base import Check, Generator
from .error_text import short_error

logger = logging.getLogger("storyengine")


class Fallback:
    """A Generator over `(provider name, generator)` links, tried in order."""

    def __init__(self, named_generators: list[tuple[str, Generator]]) -> None:
        if not named_generators:
            raise ValueError("a fallback chain needs at least one provider")
        self.links = list(named_generators)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.links]

    async def generate(self, request: CompletionRequest, check: Check | None = None) -> Completion:
        if len(self.links) == 1:
            return await self.links[0][1].generate(request, check)
        failures: list[tuple[str, BaseException]] = []
        for index, (name, generator) in enumerate(self.links):
            try:
                return await generator.generate(request, check)
            except (ProviderError, SchemaValidationError) as exc:
                failures.append((name, exc))
                if index + 1 < len(self.links):
                    self._switch(request, name, self.links[index + 1][0], exc)
        invalid = [err for _, err in failures if isinstance(err, SchemaValidationError)]
        if len(invalid) == len(failures):
            raise invalid[-1]
        raise AllProvidersFailed(request.component, failures)

    @staticmethod
    def _switch(request: CompletionRequest, source: str, target: str, error: BaseException) -> None:
        reason = short_error(error)
        logger.warning(
            "%s: provider %s failed (%s); falling back to %s", request.component, source, reason, target
        )
