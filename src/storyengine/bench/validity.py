"""`bench validity`: how often each component yields a valid object, per structuring mode.

For each premise the plot component runs (and, with --components, the components after it,
each fed the previous one's object), in each mode:

    native       structuring.strict = true; the provider's own structured output (a grammar
                 for the embedded model, response_format for a server); repair and re-ask on
    prompt-only  structuring.strict = false: TwoStage sends no schema to the provider (the
                 schema is only in the prompt) and does no repair and no re-ask
    no-schema    structuring.strict = true, but the schema is withheld from the provider (its
                 structured mode forced to none): prompt-only decoding with repair and re-ask

In strict modes a provider with the `tiny` profile (the packaged embedded model's default) fills
each object one small part at a time: one structuring call per part, each with its own
retries and re-ask; `in_parts` in the summary says which modes did.

Each component call is classified from its step metadata (whether it was re-asked), its call
records (RunRecorder) and the texts that reached the provider: valid on the first try; valid
after retries or a JSON repair; valid after the re-ask; failed (no valid object); skipped
(an earlier component failed). Every object returned is validated again with its Pydantic
model; `invalid_accepted` counts those that fail (it must be 0). The response cache is off,
so every call reaches the model.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..config import Settings
from ..errors import InputError, StoryEngineError
from ..pipeline.engine import Made, StoryEngine, scene_inputs
from ..pipeline.steps import Inputs
from ..routing.instrument import RunRecorder
from ..schemas import Dialogue, Enhancement, Evaluation, PlotStructure, Scene, StoryScene
from ..structuring import extract_json
from .harness import (
    MeteredProvider,
    ProviderCall,
    build_engine,
    metered_providers,
    primary_provider,
    scratch_settings,
)
from .table import Report

Progress = Callable[[str], None]

CHAIN = ("plot", "scene", "dialogue", "evaluation", "enhancement")
MODES = {
    "native": "structuring.strict=true with the provider's own structured output",
    "prompt-only": "structuring.strict=false (no schema sent, no repair, no re-ask)",
    "no-schema": "structuring.strict=true with the schema withheld from the provider (repair + re-ask)",
}
CATEGORIES = ("first_try", "after_retry_or_repair", "after_reask", "failed", "skipped")
MODELS: dict[str, type[BaseModel]] = {
    "plot": PlotStructure,
    "scene": Scene,
    "dialogue": Dialogue,
    "evaluation": Evaluation,
    "enhancement": Enhancement,
}


def parse_components(text: str) -> list[str]:
    """The chain up to the last component named (a scene needs a plot, and so on)."""
    wanted = [c.strip() for c in text.split(",") if c.strip()]
    unknown = sorted(set(wanted) - set(CHAIN))
    if unknown or not wanted:
        raise InputError(
            f"--components takes names from {', '.join(CHAIN)}; not {', '.join(unknown) or text!r}"
        )
    last = max(CHAIN.index(c) for c in wanted)
    return list(CHAIN[: last + 1])


def in_parts(settings: Settings, mode: str) -> bool:
    """Whether stage 2 runs in parts in `mode` (a provider setting, honoured in strict mode only)."""
    entry = settings.providers[primary_provider(settings)]
    return mode != "prompt-only" and entry.profile_name() == "tiny"


def parse_modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown or not modes:
        raise InputError(f"--modes takes names from {', '.join(MODES)}; not {', '.join(unknown) or text!r}")
    return modes


@dataclass
class Tally:
    """The outcomes of one component in one mode."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    provider_calls: int = 0
    seconds: float = 0.0
    invalid_accepted: int = 0
    errors: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        total = sum(self.counts.values())
        valid = total - self.counts["failed"] - self.counts["skipped"]
        return {
            **self.counts,
            "total": total,
            "valid": valid,
            "valid_pct": round(100 * valid / total, 1) if total else None,
            "provider_calls": self.provider_calls,
            "seconds": round(self.seconds, 2),
            "invalid_accepted": self.invalid_accepted,
            "errors": self.errors,
        }


def needed_repair(text: str) -> bool:
    """True when the JSON in `text` does not parse as it is (so it was accepted after json_repair)."""
    try:
        json.loads(extract_json(text))
    except ValueError:
        return True
    return False


def classify(records: list[Any], calls: list[ProviderCall], component: str, reasked: bool) -> str:
    """The category of one successful component call.

    `reasked` comes from the step's metadata (`StepMeta.reasked`). `records` are the call
    records of the component call, `calls` what reached the provider, in order. A component's
    stage 2 is one structuring call, or one per part when it is structured in parts. Each
    structuring call row says how many provider attempts it took (retries); an accepted
    answer whose JSON does not parse as it is was repaired.
    """
    rows = [r for r in records if r.kind == "call" and r.component == component and r.stage == "structuring"]
    sent = [c for c in calls if c.request.component == component and c.request.stage == "structuring"]
    retried = repaired = False
    for row in rows:
        segment, sent = sent[: row.attempt], sent[row.attempt :]
        if not segment:
            continue
        retried = retried or len(segment) > 1
        final = segment[-1].completion
        if row.outcome == "ok" and final is not None and needed_repair(final.text):
            repaired = True
    if reasked:
        return "after_reask"
    if retried or repaired:
        return "after_retry_or_repair"
    return "first_try"


def failure_summary(premise: str, exc: StoryEngineError) -> str:
    """One line for the report: the premise, the error, and what the model's last answer got wrong."""
    attempts = getattr(exc, "attempts", None) or [{}]
    last = attempts[-1].get("errors") or ""
    detail = f" (last answer: {last.strip()[:200]})" if last else ""
    return f"{premise[:50]}: {type(exc).__name__}: {str(exc)[:160]}{detail}"


def revalidate(value: BaseModel, model: type[BaseModel], context: Any) -> bool:
    """True when `value` is a valid `model` when checked again from its JSON."""
    if not isinstance(value, model):
        return False
    try:
        model.model_validate(value.model_dump(mode="json"), context=context)
    except ValidationError:
        return False
    return True


class ModeRunner:
    """One engine in one mode, running the component chain for one premise at a time."""

    def __init__(self, mode: str, engine: StoryEngine, providers: dict[str, MeteredProvider]) -> None:
        self.mode = mode
        self.engine = engine
        self.providers = providers
        self.tallies = {c: Tally() for c in CHAIN}

    def _calls_since(self, marks: dict[str, int]) -> list[ProviderCall]:
        calls = [c for name, p in self.providers.items() for c in p.calls[marks[name] :]]
        return sorted(calls, key=lambda c: c.started)

    async def run(self, premise: str, seed: int, components: list[str]) -> None:
        inputs: dict[str, Any] = {}
        failed = False
        for component in components:
            tally = self.tallies[component]
            if failed:
                tally.counts["skipped"] += 1
                continue
            marks = {name: len(p.calls) for name, p in self.providers.items()}
            recorder = RunRecorder(f"bench-{self.mode}-{seed}")
            started = time.perf_counter()
            try:
                with recorder.active():
                    value, context, reasked = await self._call(component, premise, seed, inputs)
            except StoryEngineError as exc:
                tally.counts["failed"] += 1
                tally.errors.append(failure_summary(premise, exc))
                failed = True
                continue
            finally:
                tally.times.append(time.perf_counter() - started)
                tally.seconds += tally.times[-1]
                tally.provider_calls += len(self._calls_since(marks))
            model = MODELS[component]
            calls = self._calls_since(marks)
            tally.counts[classify(recorder.records, calls, component, reasked)] += 1
            if not revalidate(value, model, context):
                tally.invalid_accepted += 1
            inputs[component] = value

    async def _call(
        self, component: str, premise: str, seed: int, inputs: dict[str, Any]
    ) -> tuple[BaseModel, Any, bool]:
        """The component's value, its validation context, and whether its structuring was re-asked."""
        made, context = await self._made(component, premise, seed, inputs)
        step = component if component in ("plot", "evaluation", "enhancement") else f"{component}.0"
        return made.value, context, bool(made.meta[step]["reasked"])

    async def _made(
        self, component: str, premise: str, seed: int, inputs: dict[str, Any]
    ) -> tuple[Made, Any]:
        engine = self.engine
        if component == "plot":
            return await engine.step("plot", Inputs(premise=premise), seed=seed), None
        plot = inputs["plot"]
        if component == "scene":
            return await engine.step("scene", scene_inputs(premise, plot, 0, None), seed=seed, index=0), None
        if component == "dialogue":
            scene = inputs["scene"]
            made = await engine.step("dialogue", Inputs(scene=scene), seed=seed, index=0)
            return made, {"cast": list(scene.characters)}
        scenes = (StoryScene(scene=inputs["scene"], dialogue=inputs["dialogue"]),)
        if component == "evaluation":
            return await engine.step(
                "evaluation", Inputs(premise=premise, plot=plot, scenes=scenes), seed=seed
            ), None
        x = Inputs(premise=premise, plot=plot, scenes=scenes, evaluation=inputs["evaluation"])
        return await engine.step("enhancement", x, seed=seed), None


async def run_validity_bench(
    report: Report,
    settings: Settings,
    *,
    premises: list[str],
    components: list[str],
    modes: list[str],
    seed: int,
    max_minutes: float | None,
    progress: Progress,
) -> Report:
    started = time.perf_counter()
    done = 0
    with tempfile.TemporaryDirectory(prefix="storyengine-bench-") as tmp:
        runners = []
        for mode in modes:
            mode_settings = scratch_settings(  # it measures structuring: one draft per scene
                settings, Path(tmp) / mode, cache=False, strict=mode != "prompt-only", scene_drafts=1
            )
            providers = metered_providers(mode_settings, withhold_schema=mode == "no-schema")
            runners.append(ModeRunner(mode, build_engine(mode_settings, providers), providers))
        try:
            for index, premise in enumerate(premises):
                if max_minutes is not None and time.perf_counter() - started > max_minutes * 60:
                    report.notes.append(f"stopped after {done} of {len(premises)} premises (--max-minutes)")
                    break
                for runner in runners:  # interleaved, so a change in machine load hits every mode alike
                    progress(f"premise {index + 1}/{len(premises)} · {runner.mode}")
                    await runner.run(premise, seed + index, components)
                done += 1
        finally:
            for runner in runners:
                await runner.engine.aclose()
    results = {r.mode: {c: r.tallies[c].as_dict() for c in components} for r in runners}
    for runner in runners:
        for component in components:
            seconds = report.measure(f"{runner.mode} · {component}: seconds per premise", "s")
            seconds.runs.extend(runner.tallies[component].times)
    report.summary.update(
        {
            "provider": primary_provider(settings),
            "premises": done,
            "components": components,
            "modes": {m: MODES[m] for m in modes},
            "in_parts": {m: in_parts(settings, m) for m in modes},
            "invalid_accepted": sum(t["invalid_accepted"] for by in results.values() for t in by.values()),
            "results": results,
        }
    )
    columns = ["mode", "component", *CATEGORIES, "valid %", "calls", "invalid accepted"]
    rows = [
        [
            mode,
            component,
            *(t[c] for c in CATEGORIES),
            t["valid_pct"],
            t["provider_calls"],
            t["invalid_accepted"],
        ]
        for mode, by in results.items()
        for component, t in by.items()
    ]
    report.tables.append(("validity per mode", columns, rows))
    report.notes.append("a component call is failed when it raised; skipped when an earlier component failed")
    for runner in runners:
        for component in components:
            errors = runner.tallies[component].errors
            report.notes += [f"{runner.mode} · {component} failed: {e}" for e in errors[:5]]
            if len(errors) > 5:
                report.notes.append(f"{runner.mode} · {component}: {len(errors) - 5} more (see --json)")
    return report
