"""`bench render`: the per-call cost of `poml.poml()` (render_slow) against ours (render).

Each run renders one template (the templates in turn) with a context no earlier run used,
once with `render_slow` (a real poml call, Node started each time) and `repeat` times with
`render` (skeletons warm); `identical` compares the two outputs of every run. The cold
cost of `render` (the first call of a template, which builds its skeleton with one poml
call) is measured separately after clearing the skeletons.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..pipeline.steps import CONTRACT
from ..prompts.render import ContextValue, clear_cache, render, render_slow
from .table import Report

Progress = Callable[[str], None]


def context_for(template: str, run: int) -> dict[str, ContextValue]:
    """A context for `template` whose values differ from every other run's."""
    values: dict[str, ContextValue] = {}
    for name, kind in CONTRACT[template].items():
        if kind is int:
            values[name] = 3 + run
        elif name == "schema":
            values[name] = '{"type":"object","properties":{"title":{"type":"string"}},"required":["title"]}'
        else:
            values[name] = f"Run {run}: the {name} of a story about a lighthouse keeper.\nSecond line {run}."
    return values


def run_render_bench(report: Report, *, runs: int, repeat: int, progress: Progress) -> Report:
    templates = sorted(CONTRACT)
    naive = report.measure("poml.poml() per call (render_slow)", "ms")
    ours = report.measure("render() per call, warm", "ms", digits=4)
    cold = report.measure("render() first call of a template (builds the skeleton)", "ms")
    identical = True
    clear_cache()
    for run in range(runs):
        name = templates[run % len(templates)]
        context = context_for(name, run)
        progress(f"run {run + 1}/{runs}: {name}")
        started = time.perf_counter()
        slow = render_slow(name, context)
        naive.add((time.perf_counter() - started) * 1000)
        if run < len(templates):
            started = time.perf_counter()
            first = render(name, context)
            cold.add((time.perf_counter() - started) * 1000)
            identical = identical and first == slow
        started = time.perf_counter()
        for _ in range(repeat):
            fast = render(name, context)
        ours.add((time.perf_counter() - started) * 1000 / repeat)
        identical = identical and fast == slow
    report.summary.update(
        {
            "naive_ms": naive.median,
            "ours_ms": ours.median,
            "ours_cold_ms": cold.median,
            "identical": identical,
            "speedup": round(naive.median / ours.median, 1) if naive.median and ours.median else None,
            "templates": templates[: min(runs, len(templates))],
        }
    )
    report.notes.append(
        f"ours_ms is the mean of {repeat} warm calls per run; the first call of each template "
        "costs one poml call (ours_cold_ms), once per process"
    )
    return report
