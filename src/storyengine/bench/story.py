"""`bench story`: one story with the cache off, against what the model's own speed allows.

The story is generated once on the configured provider (default: the embedded model) with the
response cache off, every call timed at the provider boundary. In the same process, before the
story, the model's own rates are measured on a fixed probe:

    embedded   llama.cpp evaluates a fixed 256-token prompt (prefill tokens/s), then 64 tokens one
               at a time (decode tokens/s): the model alone, no sampling, no grammar
    a server   a new prompt answered with max_tokens=1 (prefill: prompt tokens / latency), then
               the same prompt with max_tokens=8 and 72 (decode: the extra tokens / the extra
               seconds, the prompt's cost the same in both)

From those and the run's call records (`Story.meta["calls"]`):

    decode bound       completion tokens of every attempt ÷ decode rate
    prefill bound      prompt tokens the model evaluated ÷ prefill rate (embedded: what llama.cpp
                       really evaluated after KV reuse; a server: every prompt token sent)
    thrown away        completion tokens of attempts whose answer was not used: outcome retry,
                       invalid or error, and drafts a draft check drew again (their attempt
                       succeeded, but the step kept another draw: its freeform call's seed is not
                       the step's seed)
    pipeline's own     wall time − the time some model call was in flight
    server's cache     with --server-log (the verbose log of a `llama_cpp.server`, its default):
                       the prompt tokens the server itself says it found in its cache during
                       the story ("N prefix-match hit"), against the prompt tokens sent; those
                       then count as not evaluated in tokens processed per word
    first words        when the words become visible as they stream (the run's draft_delta
                       events): the story's first after the run starts (the model is loaded by
                       the probe before), each scene's first after its call starts

and the story's own measures, to compare before and after a speed change (quality must not
drop): valid or not, drafts cut off, drafts that loop, optional parts left out, the
evaluation's overall score.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import StoryEngineError
from ..providers.base import LOOP_STOP, Provider
from ..providers.embedded import EmbeddedProvider, LoadedModel, ModelStats
from ..routing.retry import looping
from ..schemas import Story
from ..text.segment import words
from ..types import Completion, CompletionRequest, Message
from .harness import (
    MeteredProvider,
    all_calls,
    build_engine,
    busy_seconds,
    metered_providers,
    primary_provider,
    scratch_settings,
)
from .table import Measure, Report

Progress = Callable[[str], None]
PREMISE = "Two rival bakers must cook together for a royal wedding."
THROWN_AWAY = ("retry", "invalid", "error")
PROBE_PROMPT_TOKENS = 256
PROBE_DECODE_TOKENS = 64
PROBE_FEW_TOKENS = 8
PROBE_RUNS = 3
# A fixed English text: the probe's prompt (tokenized, cut to PROBE_PROMPT_TOKENS).
PROBE_TEXT = " ".join(
    [
        "The lighthouse keeper climbed the spiral stairs at dusk, counting each of the one hundred",
        "and twelve steps as her father had taught her. Below, the sea threw itself against the rocks,",
        "and the gulls wheeled and cried over the harbour where the fishing boats rocked at anchor.",
        "She trimmed the wick, polished the great lens until it shone, and lit the lamp. Far out,",
        "a ship's lantern answered, blinking twice, then once, then twice again, as if it knew her.",
    ]
    * 8
)


# -- the model's own rates -----------------------------------------------------------------------


def probe_embedded(model: LoadedModel, runs: int = PROBE_RUNS) -> dict[str, Any]:
    """Prefill and decode tokens/s of the loaded model on the fixed probe (median of `runs`)."""
    prefill, decode = [], []
    with model.thread_lock:
        llama = model.llama
        tokens = llama.tokenize(PROBE_TEXT.encode("utf-8"), add_bos=True)[:PROBE_PROMPT_TOKENS]
        steps = tokens[:PROBE_DECODE_TOKENS]
        try:
            for _ in range(runs):
                llama.reset()
                started = time.perf_counter()
                llama.eval(tokens)
                prefill.append(len(tokens) / (time.perf_counter() - started))
                started = time.perf_counter()
                for token in steps:
                    llama.eval([token])
                decode.append(len(steps) / (time.perf_counter() - started))
        finally:
            llama.reset()  # the next call starts from a clean state (the prefix match finds nothing)
    return {
        "prefill_tps": statistics.median(prefill),
        "decode_tps": statistics.median(decode),
        "prompt_tokens": len(tokens),
        "decode_tokens": len(steps),
        "method": "llama.cpp eval of a fixed prompt, then one token at a time (no sampling)",
    }


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if len(known) == len(values) and known else None


async def probe_server(provider: Provider, runs: int = PROBE_RUNS) -> dict[str, Any]:
    """Prefill and decode tokens/s of any provider, from the latency of fixed requests. Prefill:
    a prompt that begins with its own number (so no prompt cache holds it) answered with one
    token. Decode: the same prompt answered with a few tokens and with PROBE_DECODE_TOKENS more;
    the difference cancels the prompt's cost whether the server evaluates it again or keeps it
    (measured: llama_cpp.server keeps the last prompt, so one prompt asked twice "prefilled" at
    13,000 tokens/s, and two numbered prompts left decode unknown in the noise of prefill)."""
    prefill, decode = [], []
    prompt_tokens = 0

    async def ask(messages: tuple[Message, ...], max_tokens: int) -> Completion:
        return await provider.complete(
            CompletionRequest(
                messages=messages, temperature=0, seed=0, max_tokens=max_tokens, component="probe"
            )
        )

    for run in range(runs):
        messages = (Message(role="user", content=f"Probe {run}. {PROBE_TEXT}\n\nContinue the story."),)
        short = await ask(messages, 1)
        prompt_tokens = short.usage.prompt_tokens
        prefill.append(_rate(prompt_tokens, short.latency_s))
        few = await ask(messages, PROBE_FEW_TOKENS)
        many = await ask(messages, PROBE_FEW_TOKENS + PROBE_DECODE_TOKENS)
        extra = many.usage.completion_tokens - few.usage.completion_tokens
        decode.append(_rate(extra, many.latency_s - few.latency_s))
    return {
        "prefill_tps": _median(prefill),
        "decode_tps": _median(decode),
        "prompt_tokens": prompt_tokens,
        "decode_tokens": PROBE_DECODE_TOKENS,
        "method": f"latency of max_tokens=1 on a new prompt (prefill) and of max_tokens={PROBE_FEW_TOKENS} "
        f"against {PROBE_FEW_TOKENS + PROBE_DECODE_TOKENS} on the same prompt (decode)",
    }


def _embedded(provider: MeteredProvider) -> EmbeddedProvider | None:
    inner = provider.inner
    return inner if isinstance(inner, EmbeddedProvider) else None


# -- what the run's records say ------------------------------------------------------------------


def redrawn_calls(calls: list[dict[str, Any]], steps: dict[str, Any]) -> set[str]:
    """Ids of the freeform calls whose draft a draft check threw away (the step drew again and
    kept another draw): a step keeps the draw whose seed it records, so a freeform call of that
    component with another seed was drawn again. Calls without a seed, or of a component no step
    kept a draft of, cannot be told apart and count as kept."""
    kept = {
        (s.get("component"), s.get("seed"))
        for s in steps.values()
        if isinstance(s, dict) and s.get("stage1_text")
    }
    drafted = {component for component, _ in kept}
    redrawn = set()
    for c in calls:
        seed = (c.get("params_snapshot") or {}).get("seed")
        if c.get("kind") != "call" or c.get("stage") != "freeform" or seed is None:
            continue
        if c.get("component") in drafted and (c.get("component"), seed) not in kept:
            redrawn.add(str(c.get("call_id")))
    return redrawn


def token_accounting(calls: list[dict[str, Any]], steps: dict[str, Any] | None = None) -> dict[str, int]:
    """Tokens of every attempt of a run (its `Story.meta["calls"]`), and of those thrown away
    (with the run's `steps`, also the drafts a draft check drew again, see `redrawn_calls`)."""
    attempts = [c for c in calls if c.get("kind") == "attempt"]
    redrawn = redrawn_calls(calls, steps or {})
    retried = [c for c in attempts if c.get("outcome") in THROWN_AWAY]
    checked = [c for c in attempts if c.get("outcome") == "ok" and str(c.get("call_id")) in redrawn]
    return {
        "attempts": len(attempts),
        "attempts_thrown_away": len(retried) + len(checked),
        "drafts_redrawn_by_check": len(checked),
        "attempts_cut_off": sum(1 for c in attempts if c.get("finish_reason") == "length"),
        "attempts_stopped_in_loop": sum(1 for c in attempts if c.get("finish_reason") == LOOP_STOP),
        "prompt_tokens": sum(int(c.get("prompt_tokens") or 0) for c in attempts),
        "completion_tokens": sum(int(c.get("completion_tokens") or 0) for c in attempts),
        "thrown_away_tokens": sum(int(c.get("completion_tokens") or 0) for c in retried + checked),
        "redrawn_by_check_tokens": sum(int(c.get("completion_tokens") or 0) for c in checked),
    }


def thrown_away_by_component(
    calls: list[dict[str, Any]], steps: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Where the thrown-away tokens went: per component and stage, the attempts, their tokens and
    the first few reasons (the attempt's short error; a draft a check drew again says so)."""
    redrawn = redrawn_calls(calls, steps or {})
    out: dict[str, Any] = {}
    for c in calls:
        if c.get("kind") != "attempt":
            continue
        by_check = c.get("outcome") == "ok" and str(c.get("call_id")) in redrawn
        if c.get("outcome") not in THROWN_AWAY and not by_check:
            continue
        key = f"{c.get('component')}/{c.get('stage')}"
        entry = out.setdefault(key, {"attempts": 0, "tokens": 0, "reasons": []})
        entry["attempts"] += 1
        entry["tokens"] += int(c.get("completion_tokens") or 0)
        reason = "drawn again by a draft check" if by_check else str(c.get("error") or c.get("outcome"))
        if len(entry["reasons"]) < 4:
            entry["reasons"].append(reason[:160])
    return dict(sorted(out.items(), key=lambda kv: -int(kv[1]["tokens"])))


def reading_by_component(calls: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Where a story's tokens are spent, per component and stage: attempts, prompt tokens sent, of
    those read from a prefix cache (the call records' `prompt_tokens_reused`: the embedded KV, or
    what a server said its cache held) and evaluated, and tokens written; the costliest first."""
    out: dict[str, dict[str, int]] = {}
    for c in calls:
        if c.get("kind") != "attempt":
            continue
        entry = out.setdefault(
            f"{c.get('component')}/{c.get('stage')}",
            {"attempts": 0, "prompt_sent": 0, "prompt_reused": 0, "prompt_evaluated": 0, "written": 0},
        )
        sent, reused = int(c.get("prompt_tokens") or 0), int(c.get("prompt_tokens_reused") or 0)
        entry["attempts"] += 1
        entry["prompt_sent"] += sent
        entry["prompt_reused"] += reused
        entry["prompt_evaluated"] += sent - reused
        entry["written"] += int(c.get("completion_tokens") or 0)
    return dict(sorted(out.items(), key=lambda kv: -(kv[1]["prompt_evaluated"] + kv[1]["written"])))


def delivered_words(story: Story) -> int:
    """The words a reader gets: each scene's prose (else its summary) and its dialogue lines (any
    script: text.segment's words)."""
    return sum(
        len(words(item.prose or item.scene.summary))
        + sum(len(words(line.text)) for line in item.dialogue.lines)
        for item in story.scenes
    )


_PREFIX_HIT = re.compile(r"Llama\.generate: (\d+) prefix-match hit, remaining (\d+) prompt tokens to eval")


def server_prefix_hits(log: str) -> dict[str, int]:
    """What a `llama_cpp.server`'s verbose log says it reused: requests whose prompt began with
    tokens it still held, and those tokens, summed (a request it evaluated whole logs nothing)."""
    hits = [(int(m.group(1)), int(m.group(2))) for m in _PREFIX_HIT.finditer(log)]
    return {
        "requests_with_prefix_hit": len(hits),
        "cached_prompt_tokens": sum(cached for cached, _ in hits),
        "evaluated_after_hit": sum(rest for _, rest in hits),
    }


def _log_size(path: Path | None) -> int:
    return path.stat().st_size if path is not None and path.exists() else 0


def _log_since(path: Path, offset: int) -> str:
    if not path.exists():
        return ""
    with path.open("rb") as log:
        log.seek(offset)
        return log.read().decode("utf-8", errors="replace")


def spending(tokens: dict[str, int], evaluated: int | None, delivered: int) -> dict[str, Any]:
    """What the story cost against what a reader gets: tokens processed (prompt tokens the model
    evaluated, or sent where that is unknown, plus tokens written) per delivered word; prompt
    tokens evaluated against tokens written; the share of the prompt tokens sent that the model
    did not evaluate again (KV reuse: the prefix-hit rate; None where unknown)."""
    sent, written = tokens["prompt_tokens"], tokens["completion_tokens"]
    read = evaluated if evaluated is not None else sent
    return {
        "delivered_words": delivered,
        "tokens_processed_per_word": round((read + written) / delivered, 2) if delivered else None,
        "prompt_evaluated_over_written": round(read / written, 2) if written else None,
        "prefix_hit_pct": round(100 * (1 - evaluated / sent), 1) if evaluated is not None and sent else None,
    }


def story_measures(story: Story) -> dict[str, Any]:
    """What a speed change must not make worse: cut-offs, loops, parts left out, the evaluation."""
    steps: dict[str, dict[str, Any]] = story.meta.get("steps", {})
    drafts = [s for s in steps.values() if isinstance(s, dict) and s.get("stage1_text")]
    return {
        "valid": True,
        "drafts": len(drafts),
        "drafts_cut_off": sum(1 for s in drafts if s.get("stage1_cut_off")),
        "drafts_looping": sum(1 for s in drafts if looping(str(s.get("stage1_text", "")))),
        "parts_left_out": sum(
            len(s.get("parts_left_out") or []) for s in steps.values() if isinstance(s, dict)
        ),
        "reasked_steps": sum(1 for s in steps.values() if isinstance(s, dict) and s.get("reasked")),
        "evaluation_overall": story.evaluation.overall if story.evaluation else None,
    }


def _rate(tokens: float, seconds: float) -> float | None:
    return tokens / seconds if tokens > 0 and seconds > 0 else None


def _ratio(a: float, b: float | None) -> float | None:
    return round(a / b, 2) if b else None


def bounds(
    tokens: dict[str, int], rates: dict[str, Any], evaluated: int | None, wall: float, busy: float
) -> dict[str, Any]:
    """The headline numbers: bounds from the probe's rates, and wall time against them.

    A rate the probe could not measure (a server whose latency does not grow with the answer)
    leaves its bound out (None)."""
    decode_tps, prefill_tps = rates.get("decode_tps"), rates.get("prefill_tps")
    prompt = evaluated if evaluated is not None else tokens["prompt_tokens"]
    completion = tokens["completion_tokens"]
    decode_bound = completion / decode_tps if decode_tps else None
    prefill_bound = prompt / prefill_tps if prefill_tps else None
    both = decode_bound + prefill_bound if decode_bound is not None and prefill_bound is not None else None
    return {
        "wall_s": round(wall, 2),
        "model_s": round(busy, 2),
        "pipeline_own_s": round(wall - busy, 2),
        "decode_tps": round(decode_tps, 1) if decode_tps else None,
        "prefill_tps": round(prefill_tps, 1) if prefill_tps else None,
        "decode_bound_s": round(decode_bound, 2) if decode_bound is not None else None,
        "prefill_bound_s": round(prefill_bound, 2) if prefill_bound is not None else None,
        "wall_over_decode_bound": _ratio(wall, decode_bound),
        "wall_over_decode_plus_prefill": _ratio(wall, both),
        "thrown_away_pct": round(100 * tokens["thrown_away_tokens"] / completion, 1) if completion else 0.0,
    }


class FirstWords:
    """When the words of a story become visible (the run's `draft_delta` events, streaming.py): the
    first of the whole story after the run starts, and for each draft the first after its call
    starts (its attempt's `draft_restarted`: the moment the provider is asked)."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.story: float | None = None
        self.asked: dict[str, float] = {}
        self.drafts: dict[str, float] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        now = time.perf_counter()
        kind, name = event.get("event"), str(event.get("name", ""))
        if kind == "run_started" and self.started is None:
            self.started = now
        elif kind == "draft_restarted":
            self.asked[name] = now
        elif kind == "draft_delta" and str(event.get("text", "")).strip():
            if self.story is None and self.started is not None:
                self.story = now - self.started
            if name not in self.drafts and name in self.asked:
                self.drafts[name] = now - self.asked[name]

    def summary(self) -> dict[str, Any]:
        scenes = [s for name, s in self.drafts.items() if name.startswith("scene.")]
        return {
            "first_word_of_story_s": None if self.story is None else round(self.story, 3),
            "first_word_of_scene_median_s": round(statistics.median(scenes), 3) if scenes else None,
            "first_word_of_scene_max_s": round(max(scenes), 3) if scenes else None,
            "first_word_per_draft_s": {k: round(v, 3) for k, v in sorted(self.drafts.items())},
        }


# -- the bench -----------------------------------------------------------------------------------


def _stats_delta(before: ModelStats, after: ModelStats) -> dict[str, float]:
    return {k: round(getattr(after, k) - getattr(before, k), 3) for k in vars(after)}


async def run_story_bench(
    report: Report,
    settings: Settings,
    *,
    scenes: int,
    seed: int,
    progress: Progress,
    save: Path | None = None,
    server_log: Path | None = None,
) -> Report:
    with tempfile.TemporaryDirectory(prefix="storyengine-bench-") as tmp:
        settings = scratch_settings(settings, Path(tmp), cache=False)
        name = primary_provider(settings)
        providers = metered_providers(settings)
        provider = providers[name]
        embedded = _embedded(provider)
        async with build_engine(settings, providers) as engine:
            progress(f"{name}: measuring the model's own rates on a fixed probe")
            model: LoadedModel | None = await embedded.load() if embedded else None
            rates = probe_embedded(model) if model else await probe_server(provider.inner)
            provider.calls.clear()  # the probe is not part of the story
            before = ModelStats(**vars(model.stats)) if model else None
            restored = model.snapshots.restored_tokens if model and model.snapshots else 0
            progress(f"{name}: one {scenes}-scene story, cache off (minutes on a small CPU)")
            log_from = _log_size(server_log)
            started = time.perf_counter()
            story: Story | None = None
            first = FirstWords()
            try:
                story = await engine.generate(PREMISE, scenes=scenes, seed=seed, on_event=first)
            except StoryEngineError as exc:
                report.summary["failed"] = str(exc).split(" — ")[0][:300]
                cause = getattr(exc, "cause", exc)
                tried = [
                    str(a.get("errors", ""))[:300] for a in getattr(cause, "attempts", []) if not a.get("ok")
                ]
                report.summary["failed_attempts"] = tried
                report.notes.extend(f"failed attempt: {why}" for why in tried)
            wall = time.perf_counter() - started
            busy = busy_seconds(all_calls(providers), since=started)
            provider_calls = len(all_calls(providers))
            stats = _stats_delta(before, model.stats) if model and before else None
            if model and model.snapshots:
                restored = model.snapshots.restored_tokens - restored
    if story is not None:
        tokens = token_accounting(story.meta.get("calls", []), story.meta.get("steps", {}))
        quality = story_measures(story)
        wasted = thrown_away_by_component(story.meta.get("calls", []), story.meta.get("steps", {}))
        report.summary["thrown_away_by_component"] = wasted
        reading = reading_by_component(story.meta.get("calls", []))
        report.summary["reading_by_component"] = reading
        for key, entry in reading.items():
            report.notes.append(
                f"spent in {key}: {entry['prompt_evaluated']} prompt tokens evaluated "
                f"({entry['prompt_reused']} of {entry['prompt_sent']} sent reused) and {entry['written']} "
                f"written in {entry['attempts']} attempts"
            )
        for key, entry in wasted.items():
            report.notes.append(
                f"thrown away in {key}: {entry['tokens']} tokens in {entry['attempts']} attempts "
                f"({'; '.join(entry['reasons'])})"
            )
        if save is not None:
            await asyncio.to_thread(save.write_text, story.model_dump_json(indent=2), encoding="utf-8")
    else:  # no call records: count what reached the provider; what was thrown away is unknown
        done = [c.completion for c in all_calls(providers) if c.completion is not None]
        tokens = {
            "attempts": len(all_calls(providers)),
            "attempts_thrown_away": -1,
            "drafts_redrawn_by_check": -1,
            "attempts_cut_off": sum(1 for c in done if c.truncated),
            "attempts_stopped_in_loop": sum(1 for c in done if c.finish_reason == LOOP_STOP),
            "prompt_tokens": sum(c.usage.prompt_tokens for c in done),
            "completion_tokens": sum(c.usage.completion_tokens for c in done),
            "thrown_away_tokens": 0,
            "redrawn_by_check_tokens": 0,
        }
        quality = {"valid": False}
        report.notes.append("the story failed: thrown-away tokens are not known without its call records")
    evaluated = int(stats["prompt_tokens_evaluated"]) if stats else None
    attempts = [c for c in story.meta.get("calls", []) if c.get("kind") == "attempt"] if story else []
    reused = sum(int(c.get("prompt_tokens_reused") or 0) for c in attempts)
    if evaluated is None and reused:  # a server that says what its cache held (OpenAI, vLLM)
        evaluated = tokens["prompt_tokens"] - reused
    if server_log is not None:
        server = server_prefix_hits(await asyncio.to_thread(_log_since, server_log, log_from))
        report.summary["server_cache"] = server
        if evaluated is None:
            evaluated = max(0, tokens["prompt_tokens"] - server["cached_prompt_tokens"])
        report.notes.append(
            f"the server's log: {server['cached_prompt_tokens']} prompt tokens found in its cache "
            f"in {server['requests_with_prefix_hit']} requests, of {tokens['prompt_tokens']} sent"
        )
    headline = bounds(tokens, rates, evaluated, wall, busy)
    _measures(report, headline, tokens, stats, evaluated)
    shown = first.summary()
    spent = spending(tokens, evaluated, delivered_words(story) if story is not None else 0)
    _add(
        report.measure("tokens processed per delivered word", "tok/word", digits=2),
        spent["tokens_processed_per_word"],
    )
    _add(
        report.measure("prompt tokens evaluated ÷ tokens written", "×", digits=2),
        spent["prompt_evaluated_over_written"],
    )
    _add(
        report.measure("prefix hits (prompt tokens not evaluated again)", "%", digits=1),
        spent["prefix_hit_pct"],
    )
    for label, key in (
        ("first visible word of the story (after the run starts)", "first_word_of_story_s"),
        ("first visible word of a scene (median, after its call starts)", "first_word_of_scene_median_s"),
        ("first visible word of a scene (slowest)", "first_word_of_scene_max_s"),
    ):
        _add(report.measure(label, "s", digits=3), shown[key])
    report.summary.update(
        {
            "provider": name,
            "scenes": scenes,
            "seed": seed,
            **headline,
            "provider_calls": provider_calls,
            "tokens": tokens,
            "prompt_tokens_evaluated": evaluated,
            "kv_reused_by_snapshots": restored if model else None,
            "model_stats": stats,
            "probe": {k: (round(v, 1) if isinstance(v, float) else v) for k, v in rates.items()},
            "story": quality,
            "first_words": shown,
            "spending": spent,
        }
    )
    report.notes.append(
        "decode bound = completion tokens of every attempt ÷ decode rate; prefill bound = prompt "
        "tokens the model evaluated ÷ prefill rate; rates from the probe, in the same process"
    )
    if model is not None:
        llama = model.llama
        report.notes.append(
            f"llama.cpp threads: {getattr(llama, 'n_threads', '?')} decoding (n_threads), "
            f"{getattr(llama, 'n_threads_batch', '?')} evaluating prompts (n_threads_batch); on a busy "
            "machine more threads than free cores slow llama.cpp down, prompt evaluation most"
        )
    return report


def _add(measure: Measure, value: float | None) -> None:
    if value is not None:  # an unknown value leaves the measure without runs ("-")
        measure.add(value)


def _measures(
    report: Report,
    headline: dict[str, Any],
    tokens: dict[str, int],
    stats: dict[str, float] | None,
    evaluated: int | None,
) -> None:
    for label, key in (
        ("story wall time", "wall_s"),
        ("time inside the model", "model_s"),
        ("pipeline's own time (wall − model)", "pipeline_own_s"),
        ("decode bound (completion tokens ÷ decode rate)", "decode_bound_s"),
        ("prefill bound (prompt tokens evaluated ÷ prefill rate)", "prefill_bound_s"),
    ):
        _add(report.measure(label, "s", digits=2), headline[key])
    _add(report.measure("wall ÷ decode bound", "×", digits=2), headline["wall_over_decode_bound"])
    _add(report.measure("decode rate (probe)", "tok/s", digits=1), headline["decode_tps"])
    _add(report.measure("prefill rate (probe)", "tok/s", digits=1), headline["prefill_tps"])
    report.measure("completion tokens (all attempts)", "tokens", digits=0).add(tokens["completion_tokens"])
    report.measure("thrown-away completion tokens", "tokens", digits=0).add(tokens["thrown_away_tokens"])
    report.measure("thrown away", "%", digits=1).add(headline["thrown_away_pct"])
    report.measure("prompt tokens sent", "tokens", digits=0).add(tokens["prompt_tokens"])
    if evaluated is not None:
        report.measure("prompt tokens evaluated (after KV reuse)", "tokens", digits=0).add(evaluated)
    if stats is not None:
        # llama.cpp's own timers: indicative only, they overlap (their sum can pass the call's time).
        report.measure("llama.cpp timer: prefill", "s", digits=2).add(stats["prefill_seconds"])
        report.measure("llama.cpp timer: decode", "s", digits=2).add(stats["decode_seconds"])
        report.measure("inside create_chat_completion", "s", digits=2).add(stats["generate_seconds"])
    report.measure("attempts", "calls", digits=0).add(tokens["attempts"])
    report.measure("attempts cut off at max_tokens", "calls", digits=0).add(tokens["attempts_cut_off"])
    report.measure("attempts stopped in a loop", "calls", digits=0).add(tokens["attempts_stopped_in_loop"])
    if tokens["drafts_redrawn_by_check"] >= 0:
        report.measure("drafts a draft check drew again", "calls", digits=0).add(
            tokens["drafts_redrawn_by_check"]
        )
