"""`storyengine bench NAME`: benchmarks as commands; each prints a table, or one JSON object with --json."""

from __future__ import annotations

import asyncio
import json
import shlex
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from ..bench.table import Report, machine
from ..errors import InputError
from .options import route_options

F = TypeVar("F", bound=Callable[..., Any])


def _json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")(
        f
    )


def _command_line(ctx: click.Context) -> str:
    """The command that reproduces this run: every option with the value it had."""
    words = ["storyengine", *ctx.command_path.split()[1:]]  # the same under `python -m` and in tests
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name is None:
            continue
        value = ctx.params.get(param.name)
        flag = max(param.opts, key=len)
        if param.is_flag:
            if value:
                words.append(flag)
        elif value is not None:
            words += [flag, str(value)]
    return shlex.join(words)


def _progress() -> Callable[[str], None]:
    console = Console(stderr=True)

    def show(message: str) -> None:
        console.print(f"[dim]· {message}[/]", highlight=False)

    return show


def _report(ctx: click.Context, name: str) -> Report:
    return Report(bench=name, command=_command_line(ctx), machine=machine())


def _emit(report: Report, as_json: bool) -> None:
    report.finish()
    if as_json:
        click.echo(json.dumps(report.as_dict(), ensure_ascii=False))
    else:
        console = Console()
        if not console.is_terminal:
            console.width = 120  # a file or pipe: wide enough that measure names do not wrap
        report.print(console)


def _run(coroutine: Coroutine[Any, Any, Report]) -> Report:
    return asyncio.run(coroutine)


def _positive(name: str, value: int | float, minimum: float = 1) -> None:
    if value < minimum:
        raise InputError(f"{name} must be at least {minimum:g}, not {value:g}")


@click.group()
def bench() -> None:
    """Benchmarks: each prints the machine, the command, and runs with median, min and max."""


@bench.command("render")
@click.option("--runs", type=int, default=5, show_default=True, help="poml calls to time (about 1 s each).")
@click.option("--repeat", type=int, default=200, show_default=True, help="Warm render() calls per run.")
@_json_option
@click.pass_context
def render_bench(ctx: click.Context, runs: int, repeat: int, as_json: bool) -> None:
    """Per-call cost of poml.poml() (render_slow) against ours (render); checks they are identical."""
    from ..bench.render import run_render_bench

    _positive("--runs", runs)
    _positive("--repeat", repeat)
    report = run_render_bench(_report(ctx, "render"), runs=runs, repeat=repeat, progress=_progress())
    _emit(report, as_json)


@bench.command("overhead")
@click.option("--scenes", type=int, default=3, show_default=True)
@click.option(
    "--runs", type=int, default=1, show_default=True, help="Stories on the configured provider (0: skip)."
)
@click.option(
    "--scripted-runs", type=int, default=10, show_default=True, help="Stories on the scripted provider."
)
@route_options
@_json_option
@click.pass_context
def overhead_bench(
    ctx: click.Context,
    scenes: int,
    runs: int,
    scripted_runs: int,
    provider: str | None,
    config_path: Path | None,
    as_json: bool,
) -> None:
    """The pipeline's own cost: per call with a zero-latency provider, and its share of a real story."""
    from ..bench.harness import bench_settings
    from ..bench.overhead import run_overhead_bench

    _positive("--scenes", scenes)
    _positive("--runs", runs, 0)
    _positive("--scripted-runs", scripted_runs)
    settings = bench_settings(config_path, provider)
    report = _run(
        run_overhead_bench(
            _report(ctx, "overhead"),
            settings,
            scenes=scenes,
            scripted_runs=scripted_runs,
            runs=runs,
            progress=_progress(),
        )
    )
    _emit(report, as_json)


@bench.command("concurrency")
@click.option("--scenes", type=int, default=6, show_default=True)
@click.option(
    "--latency", type=float, default=0.5, show_default=True, help="Seconds the local server takes per call."
)
@click.option(
    "--slots",
    type=int,
    default=None,
    help="Calls the server runs at once (default 4; with --provider its max_parallel).",
)
@click.option(
    "--concurrency", type=int, default=None, help="narrative.concurrency.scenes (default: --slots)."
)
@click.option("--runs", type=int, default=3, show_default=True)
@route_options
@_json_option
@click.pass_context
def concurrency_bench(
    ctx: click.Context,
    scenes: int,
    latency: float,
    slots: int | None,
    concurrency: int | None,
    runs: int,
    provider: str | None,
    config_path: Path | None,
    as_json: bool,
) -> None:
    """A story against a local slow server with k slots: wall time against the critical-path bound."""
    from ..bench.concurrency import run_concurrency_bench
    from ..bench.harness import bench_settings

    _positive("--scenes", scenes)
    _positive("--runs", runs)
    _positive("--latency", latency, 0.001)
    for name, value in (("--slots", slots), ("--concurrency", concurrency)):
        if value is not None:
            _positive(name, value)
    settings = bench_settings(config_path, provider)
    report = _run(
        run_concurrency_bench(
            _report(ctx, "concurrency"),
            settings,
            use_server=provider is None,
            scenes=scenes,
            latency=latency,
            slots=slots,
            concurrency=concurrency,
            runs=runs,
            progress=_progress(),
        )
    )
    _emit(report, as_json)


@bench.command("cache")
@click.option("--scenes", type=int, default=3, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--cache-path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Cache file to use (default: a temporary file, so your cache is untouched).",
)
@route_options
@_json_option
@click.pass_context
def cache_bench(
    ctx: click.Context,
    scenes: int,
    seed: int,
    cache_path: Path | None,
    provider: str | None,
    config_path: Path | None,
    as_json: bool,
) -> None:
    """The same story twice with the same seed: provider calls and wall time, cold and warm."""
    from ..bench.cache import run_cache_bench
    from ..bench.harness import bench_settings

    _positive("--scenes", scenes)
    settings = bench_settings(config_path, provider)
    report = _run(
        run_cache_bench(
            _report(ctx, "cache"),
            settings,
            scenes=scenes,
            seed=seed,
            cache_path=cache_path,
            progress=_progress(),
        )
    )
    _emit(report, as_json)


@bench.command("completion")
@click.option("--premises", type=int, default=20, show_default=True, help="Premises from the project's set.")
@click.option(
    "--first",
    type=int,
    default=1,
    show_default=True,
    help="Number of the first premise (1-based): run a long bench in parts and add them up.",
)
@click.option("--seeds", type=int, default=3, show_default=True, help="Seeds per premise.")
@click.option("--scenes", type=int, default=1, show_default=True)
@route_options
@_json_option
@click.pass_context
def completion_bench(
    ctx: click.Context,
    premises: int,
    first: int,
    seeds: int,
    scenes: int,
    provider: str | None,
    config_path: Path | None,
    as_json: bool,
) -> None:
    """Premises × seeds short stories: complete, complete with a gap, failed; one resume per failure."""
    from ..bench.completion import run_completion_bench
    from ..bench.harness import bench_settings
    from ..bench.premises import premises as premise_set

    for name, value in (("--premises", premises), ("--seeds", seeds), ("--scenes", scenes)):
        _positive(name, value)
    premise_set(premises, first)  # numbers outside the set fail here, before any model loads
    settings = bench_settings(config_path, provider)
    report = _run(
        run_completion_bench(
            _report(ctx, "completion"),
            settings,
            premises=premises,
            seeds=seeds,
            scenes=scenes,
            progress=_progress(),
            first=first,
        )
    )
    _emit(report, as_json)


@bench.command("long")
@click.option("--chapters", type=int, default=12, show_default=True)
@click.option("--scenes-per-chapter", "per_chapter", type=int, default=5, show_default=True)
@click.option("--seed", type=int, default=3, show_default=True)
@click.option("--scripted", is_flag=True, help="A zero-latency scripted model instead of the configured one.")
@click.option(
    "--story",
    "story_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Measure this story.json (a long `generate` already run) instead of writing one.",
)
@route_options
@_json_option
@click.pass_context
def long_bench(
    ctx: click.Context,
    chapters: int,
    per_chapter: int,
    seed: int,
    scripted: bool,
    story_file: Path | None,
    provider: str | None,
    config_path: Path | None,
    as_json: bool,
) -> None:
    """One long story: words, prompt and completion tokens and seconds per scene; measures per chapter."""
    from ..bench.harness import bench_settings
    from ..bench.long import run_long_bench
    from ..pipeline.inputs import check_chapters
    from .eval import read_story

    check_chapters(None, chapters, per_chapter)
    settings = bench_settings(config_path, provider)
    report = _run(
        run_long_bench(
            _report(ctx, "long"),
            settings,
            chapters=chapters,
            per_chapter=per_chapter,
            seed=seed,
            scripted=scripted,
            progress=_progress(),
            written=read_story(story_file)[0] if story_file else None,
        )
    )
    _emit(report, as_json)


@bench.command("story")
@click.option("--scenes", type=int, default=3, show_default=True)
@click.option("--seed", type=int, default=5, show_default=True)
@click.option(
    "--save",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the story (JSON, with its call records).",
)
@click.option(
    "--server-log",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The verbose log of the llama_cpp.server the provider talks to: report the prompt tokens "
    "it found in its own cache.",
)
@route_options
@_json_option
@click.pass_context
def story_bench(
    ctx: click.Context,
    scenes: int,
    seed: int,
    save: Path | None,
    server_log: Path | None,
    provider: str | None,
    config_path: Path | None,
    as_json: bool,
) -> None:
    """One story, cache off: wall time against the decode and prefill bounds of the model's own rates."""
    from ..bench.harness import bench_settings
    from ..bench.story import run_story_bench

    _positive("--scenes", scenes)
    settings = bench_settings(config_path, provider)
    report = _run(
        run_story_bench(
            _report(ctx, "story"),
            settings,
            scenes=scenes,
            seed=seed,
            progress=_progress(),
            save=save,
            server_log=server_log,
        )
    )
    _emit(report, as_json)


@bench.command("validity")
@click.option(
    "--premises", "count", type=int, default=30, show_default=True, help="Built-in premises to use."
)
@click.option("--components", default="plot", show_default=True, help="Comma list: plot,scene,dialogue,...")
@click.option(
    "--modes",
    default="native,prompt-only",
    show_default=True,
    help="Comma list of native, prompt-only, no-schema.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-minutes", type=float, default=None, help="Start no new premise after this long.")
@route_options
@_json_option
@click.pass_context
def validity_bench(
    ctx: click.Context,
    count: int,
    components: str,
    modes: str,
    seed: int,
    max_minutes: float | None,
    provider: str | None,
    config_path: Path | None,
    as_json: bool,
) -> None:
    """Structured validity per mode: first try, after retry/repair, after re-ask, failed."""
    from ..bench.harness import bench_settings
    from ..bench.premises import premises
    from ..bench.validity import parse_components, parse_modes, run_validity_bench

    chosen = premises(count)
    chain, mode_list = parse_components(components), parse_modes(modes)
    settings = bench_settings(config_path, provider)
    report = _run(
        run_validity_bench(
            _report(ctx, "validity"),
            settings,
            premises=chosen,
            components=chain,
            modes=mode_list,
            seed=seed,
            max_minutes=max_minutes,
            progress=_progress(),
        )
    )
    _emit(report, as_json)


@bench.command("peer")
@click.option(
    "--premises", "count", type=int, default=10, show_default=True, help="Built-in premises to use."
)
@click.option(
    "--instructor-retries", type=int, default=3, show_default=True, help="instructor's max_retries."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-minutes", type=float, default=None, help="Start no new premise after this long.")
@route_options
@_json_option
@click.pass_context
def peer_bench(
    ctx: click.Context,
    count: int,
    instructor_retries: int,
    seed: int,
    max_minutes: float | None,
    provider: str | None,
    config_path: Path | None,
    as_json: bool,
) -> None:
    """storyengine's plot component beside instructor on the same model and premises."""
    from ..bench.harness import bench_settings
    from ..bench.peer import run_peer_bench
    from ..bench.premises import premises

    chosen = premises(count)
    _positive("--instructor-retries", instructor_retries, 0)
    settings = bench_settings(config_path, provider)
    report = _run(
        run_peer_bench(
            _report(ctx, "peer"),
            settings,
            premises=chosen,
            retries=instructor_retries,
            seed=seed,
            max_minutes=max_minutes,
            progress=_progress(),
        )
    )
    _emit(report, as_json)


@bench.command("quality")
@click.option(
    "--premises", "count", type=int, default=5, show_default=True, help="Premises of the quality set to use."
)
@click.option("--scenes", type=int, default=3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-minutes", type=float, default=None, help="Start no new premise after this long.")
@click.option(
    "--revise", is_flag=True, help="Also revise each story by its suggestions; count what it changed."
)
@route_options
@_json_option
@click.pass_context
def quality_bench(
    ctx: click.Context,
    count: int,
    scenes: int,
    seed: int,
    max_minutes: float | None,
    revise: bool,
    provider: str | None,
    config_path: Path | None,
    as_json: bool,
) -> None:
    """Whole stories over the project's premise set: medians of the quality report's measures."""
    from ..bench.harness import bench_settings
    from ..bench.quality import run_quality_bench
    from ..bench.quality_premises import quality_premises

    chosen = quality_premises(count)
    _positive("--scenes", scenes)
    settings = bench_settings(config_path, provider)
    report = _run(
        run_quality_bench(
            _report(ctx, "quality"),
            settings,
            premises=chosen,
            scenes=scenes,
            seed=seed,
            max_minutes=max_minutes,
            progress=_progress(),
            revise=revise,
        )
    )
    _emit(report, as_json)


COMMANDS = [bench]
