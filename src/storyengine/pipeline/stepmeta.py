"""What one component call did: `StepMeta`, the record a step keeps of its two stages.

Raw texts, the drafts drawn and the one kept, the structured mode, who answered (provider,
model, profile) and which routes failed before it, attempts and re-asks, what was summarized
to fit a window, timings and tokens, and what the text rules found in the answer kept. A run
stores it with the step's output (pipeline/run.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..seeds import StepSeeds
from ..types import Completion


@dataclass
class StepMeta:
    """What one component call did: raw texts, mode, attempts, what was summarized."""

    component: str
    seeds: StepSeeds | None = None  # its seeds (seeds.py); None: the config's, for a lone call
    round: int = 0  # the resume round of the run that made it (0: its first attempt)
    start: int = 0  # where in its chain it was asked first (a resume moves a failed step on)
    first_provider: str = ""  # that provider, when it is not the chain's first
    seed: int | None = None  # the stage-1 seed of the draft it kept
    redraws: int = 0  # drafts drawn again because a check found problems
    drafts: list[dict[str, Any]] = field(default_factory=list)  # each draft's seed, score, problems
    draft_problems: list[str] = field(default_factory=list)  # what the kept draft still has
    stage1_text: str = ""
    stage1_cut_off: bool = False  # cut off at max_tokens or stopped in a loop; kept as far as it went
    stage2_text: str = ""
    structured_mode: str = ""
    # stage 2's request, or a dialogue draft's: "next_turn" (an earlier conversation went on) or "fresh"
    layout: str = ""
    provider: str = ""  # who answered the last call of the step
    model: str = ""
    profile: str = ""
    fallbacks: list[dict[str, Any]] = field(default_factory=list)  # routes that failed before it
    attempts: int = 0
    reasked: bool = False
    parts_left_out: list[str] = field(default_factory=list)  # optional parts the model could not write
    parts_by_code: list[str] = field(default_factory=list)  # parts made exactly by code, no model call
    summarized: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=lambda: {"prompt": 0, "completion": 0})
    fact_checks: list[str] = field(default_factory=list)  # what each check of the bible's facts found
    # What the text rules found in the answer kept (text/review.py): repaired, dropped or nulled by
    # code, or kept with the text after one re-ask (a word never fails a step).
    findings: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.seeds is None:
            self.seeds = StepSeeds(None, self.component, self.round)
        self.round = self.seeds.round

    def add_usage(self, completion: Completion) -> None:
        self.tokens["prompt"] += completion.usage.prompt_tokens
        self.tokens["completion"] += completion.usage.completion_tokens
        self.provider, self.model = completion.provider, completion.model

    def as_dict(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "round": self.round,
            **({"start": self.start, "first_provider": self.first_provider} if self.start else {}),
            "seed": self.seed,
            "redraws": self.redraws,
            **({"drafts": self.drafts} if self.drafts else {}),
            "draft_problems": self.draft_problems,
            **({"fact_checks": self.fact_checks} if self.fact_checks else {}),
            "findings": self.findings,
            "stage1_text": self.stage1_text,
            "stage1_cut_off": self.stage1_cut_off,
            "stage2_text": self.stage2_text,
            "structured_mode": self.structured_mode,
            **({"layout": self.layout} if self.layout else {}),
            "provider": self.provider,
            "model": self.model,
            "profile": self.profile,
            "fallbacks": self.fallbacks,
            "attempts": self.attempts,
            "reasked": self.reasked,
            "parts_left_out": self.parts_left_out,
            **({"parts_by_code": self.parts_by_code} if self.parts_by_code else {}),
            "summarized": self.summarized,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "tokens": dict(self.tokens),
        }
