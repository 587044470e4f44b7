"""Configured providers, built by name from settings."""

from __future__ import annotations

from ..config import EmbeddedProviderSettings, OpenAIProviderSettings, ProviderSettings, Settings
from ..errors import ConfigError
from .base import Provider
from .embedded import EmbeddedProvider
from .openai_compat import OpenAICompatProvider


def build_provider(name: str, settings: ProviderSettings) -> Provider:
    """The provider that `settings` (one entry under `providers:`) describes."""
    if isinstance(settings, EmbeddedProviderSettings):
        return EmbeddedProvider(name, settings)
    if isinstance(settings, OpenAIProviderSettings):
        return OpenAICompatProvider(name, settings)
    raise ConfigError(f"provider {name!r} has an unknown type {type(settings).__name__}")


def build_providers(settings: Settings) -> dict[str, Provider]:
    """Every provider defined in `settings`, by name. Nothing is loaded or connected yet."""
    return {name: build_provider(name, entry) for name, entry in settings.providers.items()}
