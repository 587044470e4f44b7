"""storyengine: turn a premise into a story with language models, as typed, schema-valid data.

    >>> from storyengine import StoryEngine
    >>> async with StoryEngine.from_config() as engine:
    ...     story = await engine.generate("A cartographer's maps redraw themselves.", scenes=3)

`generate_story` is the same for scripts without asyncio. See README.md.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from .config import Settings, load_settings
from .errors import (
    AllProvidersFailed,
    ConfigError,
    InputError,
    ProviderError,
    RunFailed,
    SchemaValidationError,
    StoryEngineError,
    StructuringError,
)
from .pipeline.engine import StoryEngine
from .schemas import Dialogue, Enhancement, Evaluation, PlotBeat, PlotStructure, Scene, Story
from .structuring import validate_json_payload

__version__ = "0.1.0"


def generate_story(
    premise: str,
    scenes: int | None = None,
    seed: int | None = None,
    *,
    config: str | Path | None = None,
    provider: str | None = None,
) -> Story:
    """Generate a whole story synchronously (for scripts and notebooks without an event loop)."""

    async def run() -> Story:
        async with StoryEngine.from_config(config, provider=provider) as engine:
            return await engine.generate(premise, scenes=scenes, seed=seed)

    return asyncio.run(run())


__all__ = [
    "AllProvidersFailed",
    "ConfigError",
    "Dialogue",
    "Enhancement",
    "Evaluation",
    "InputError",
    "PlotBeat",
    "PlotStructure",
    "ProviderError",
    "RunFailed",
    "Scene",
    "SchemaValidationError",
    "Settings",
    "Story",
    "StoryEngine",
    "StoryEngineError",
    "StructuringError",
    "__version__",
    "generate_story",
    "load_settings",
    "validate_json_payload",
]
