"""How a run's header moves on: the scenes it was asked for, and the next round of a stopped run."""

from __future__ import annotations

from collections.abc import Callable

from .checkpoint import RunHeader, RunState
from .inputs import DEFAULT_SCENES_PER_CHAPTER
from .run import next_start, step_key


def total_scenes(header: RunHeader) -> int | None:
    """The scenes a run was asked for: `scenes`, or a long story's chapters times their scenes."""
    if header.chapters is not None:
        return header.chapters * (header.scenes_per_chapter or DEFAULT_SCENES_PER_CHAPTER)
    return header.scenes


def next_round(state: RunState, chain: Callable[[str], list[str]] | None = None) -> None:
    """Prepare a stopped run's state for its next attempt (see `StoryEngine.resume`); the failed
    step starts from the next provider of its component's `chain` when it has more than one."""
    header = state.header
    failed = header.failed_step or ""
    header.round += 1
    providers = chain(failed.split(".")[0]) if failed and chain is not None else []
    if len(providers) > 1:
        header.start_provider[step_key(failed)] = next_start(header, failed, len(providers))
    header.failed_step = None
    again = [f"{failed}.draft"] if failed and not failed.endswith(".draft") else []
    # Parts a story went without are tried again; not those made plain by code (the bible, a
    # chapter), which the scenes were built on.
    gaps, header.gaps = header.gaps, []
    again += [f"{part}.draft" for part in gaps if part not in header.plain]
    for name in again:  # its structuring failed: draw the draft again
        state.steps.pop(name, None)
        state.meta.pop(name, None)
    state.set_status("running")
