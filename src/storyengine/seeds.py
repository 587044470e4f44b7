"""One seed scheme for every call of a run.

Every seed is derived by one hash from a path that says where it is used:

    derive(base, step, round, stage, draw)        a step's call: stage 1's draw n, or stage 2
    derive(seed, "attempt", attempt)              the retry layer's next attempt of one request

`base` is the run's seed (`generate --seed`); without one, the config's seed for that stage
(`narrative.defaults.<stage>.seed`; `null` leaves the call unseeded, as a fresh draw). `step` is
the step's key ("plot", "scene.2"), `round` the resume round (a resumed run asks its remaining
steps with other seeds, so it never repeats a failed call), `draw` the draft's number among the
drafts of one step. The same run seed gives the same seeds run after run, on every machine
(sha256, not Python's salted `hash`).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

SEED_MAX = 2**31 - 1  # a seed every server takes (and SQLite stores): 31 bits, non-negative


def derive(*path: object) -> int:
    """A reproducible 31-bit seed for `path` (ints and strings)."""
    digest = hashlib.sha256(repr(path).encode()).digest()
    return int.from_bytes(digest[:4], "big") & SEED_MAX


def fresh_seed() -> int:
    """A new random seed, for a run or a steering job not given one (recorded with what it made)."""
    return random.randint(0, SEED_MAX)


def attempt_seed(seed: int | None, attempt: int) -> int:
    """The seed of attempt `attempt` of a request first sent with `seed` (a redraw by the retry layer)."""
    return derive(seed or 0, "attempt", attempt)


@dataclass(frozen=True)
class StepSeeds:
    """The seeds of one step of a run: its drafts' and its structuring's."""

    run: int | None  # the run's seed; None: the config's seed of each stage
    step: str  # the step's key: "plot", "scene.2"
    round: int = 0  # how many times the run was resumed

    def draft(self, draw: int, configured: int | None) -> int | None:
        """Stage 1's seed for draft number `draw` (0 first); `configured`: the config's freeform seed."""
        return self._seed("draft", draw, configured)

    def structuring(self, configured: int | None) -> int | None:
        """Stage 2's seed (its temperature is 0; the seed decides the retry layer's resamples)."""
        return self._seed("structuring", 0, configured)

    def _seed(self, stage: str, draw: int, configured: int | None) -> int | None:
        base = self.run if self.run is not None else configured
        return None if base is None else derive(base, self.step, self.round, stage, draw)
