"""`storyengine providers check`: is each configured provider reachable, is its structured output real,
and does it stream (a tiny free-text request with a listener: did its answer come as a stream)?"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Literal

import click
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table

from .. import streaming
from ..config import load_settings
from ..errors import (
    AuthenticationError,
    ModelLoadError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
)
from ..providers.base import Provider
from ..providers.registry import build_providers
from ..types import CompletionRequest, Message

PROBE_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
    "required": ["answer"],
}
_PROBE_MESSAGES = (
    Message(role="system", content="You answer with a JSON object only."),
    Message(role="user", content='Is water wet? Reply with {"answer": "yes"} or {"answer": "no"}.'),
)


class _ProbeAnswer(BaseModel):
    answer: Literal["yes", "no"]


@dataclass
class CheckResult:
    """What `providers check` found out about one provider."""

    provider: str
    model: str
    reachable: bool
    ok: bool
    structured_mode: str
    structured_honoured: bool | None
    latency_s: float | None
    detail: str
    streaming: str = "-"  # yes, no (answers whole), off (its config says so), - (not asked)

    @property
    def structured_text(self) -> str:
        if self.structured_mode == "none":
            return "none (prompt-only)"
        if self.structured_honoured is None:
            return f"{self.structured_mode}: untested" if self.reachable else "-"
        return f"{self.structured_mode}: {'honoured' if self.structured_honoured else 'not honoured'}"


def _probe(with_schema: bool, timeout: float) -> CompletionRequest:
    return CompletionRequest(
        messages=_PROBE_MESSAGES,
        temperature=0.0,
        seed=0,
        max_tokens=24,
        timeout=timeout,
        json_schema=PROBE_SCHEMA if with_schema else None,
        schema_name="probe",
        component="check",
        stage="check",
    )


def _stream_probe(timeout: float) -> CompletionRequest:
    return CompletionRequest(
        messages=(Message(role="user", content="Count from one to ten in words."),),
        temperature=0.0,
        seed=0,
        max_tokens=16,
        timeout=timeout,
        component="check",
        stage="freeform",  # the stage a viewer listens to
    )


async def _check_stream(provider: Provider, result: CheckResult, request_timeout: float) -> None:
    """Ask a tiny free-text request with a listener: does the answer come as a stream? (An HTTP
    provider counts the answers that came as one; another one streamed if it sent pieces.)"""
    if getattr(getattr(provider, "settings", None), "stream", "auto") == "off":
        result.streaming = "off"
        return
    pieces: list[str] = []
    before = getattr(provider, "streamed_answers", None)
    try:
        with streaming.listening(streaming.Listener(on_delta=pieces.append)):
            await provider.complete(_stream_probe(request_timeout))
    except ProviderError as exc:
        result.streaming = "no"
        result.detail = "; ".join(
            filter(None, [result.detail, f"streamed probe failed: {_reason(provider, exc)}"])
        )
        return
    after = getattr(provider, "streamed_answers", None)
    streamed = after > before if isinstance(before, int) and isinstance(after, int) else len(pieces) > 1
    result.streaming = "yes" if streamed else "no"


def _reason(provider: Provider, exc: BaseException) -> str:
    """An error's message without the provider-name prefix (the table names the provider)."""
    return str(exc).removeprefix(f"{provider.name}: ")


def _honours_schema(text: str) -> tuple[bool, str]:
    try:
        _ProbeAnswer.model_validate_json(text.strip())
    except ValidationError:
        return False, f"the answer does not match the probe schema: {text.strip()[:80]!r}"
    return True, ""


async def check_provider(provider: Provider, request_timeout: float) -> CheckResult:
    """Send a tiny schema-constrained request (and, if it is rejected, a plain one)."""
    mode = provider.structured_mode
    uses_schema = mode != "none"
    result = CheckResult(provider.name, provider.model, False, False, mode, None, None, "")
    started = time.perf_counter()
    try:
        completion = await provider.complete(_probe(uses_schema, request_timeout))
    except (ProviderUnavailable, ProviderTimeout, ModelLoadError) as exc:
        result.detail = _reason(provider, exc)
        return result
    except AuthenticationError as exc:
        result.reachable, result.detail = True, _reason(provider, exc)
        return result
    except ProviderError as exc:
        if not uses_schema:
            result.reachable, result.detail = True, _reason(provider, exc)
            return result
        return await _check_plain(provider, result, request_timeout, rejected=exc)
    result.reachable, result.ok = True, True
    result.latency_s = completion.latency_s or time.perf_counter() - started
    if uses_schema:
        result.structured_honoured, result.detail = _honours_schema(completion.text)
    else:
        result.detail = "structured output off (prompt-only structuring)"
    await _check_stream(provider, result, request_timeout)
    return result


async def _check_plain(
    provider: Provider, result: CheckResult, request_timeout: float, *, rejected: ProviderError
) -> CheckResult:
    """The structured probe failed: does the provider answer a plain request?"""
    result.structured_honoured = False
    try:
        completion = await provider.complete(_probe(False, request_timeout))
    except (ProviderUnavailable, ProviderTimeout) as exc:
        result.detail = _reason(provider, exc)
        return result
    except ProviderError as exc:
        result.reachable, result.detail = True, _reason(provider, exc)
        return result
    result.reachable, result.ok = True, True
    result.latency_s = completion.latency_s
    result.detail = f"structured request rejected: {_reason(provider, rejected)}"
    await _check_stream(provider, result, request_timeout)
    return result


async def check_all(providers: dict[str, Provider], request_timeout: float) -> list[CheckResult]:
    try:
        return list(await asyncio.gather(*(check_provider(p, request_timeout) for p in providers.values())))
    finally:
        for provider in providers.values():
            await provider.aclose()


def _print_table(results: list[CheckResult]) -> None:
    table = Table(title="storyengine providers")
    for column in ("provider", "model", "reachable", "structured output", "streams", "latency"):
        table.add_column(column, no_wrap=column != "model", overflow="fold")
    for r in results:
        reachable = "yes" if r.reachable else "[red]no[/red]"
        latency = f"{r.latency_s:.2f}s" if r.latency_s is not None else "-"
        table.add_row(r.provider, r.model, reachable, r.structured_text, r.streaming, latency)
    Console(soft_wrap=False).print(table)
    # Problems go below the table, one unwrapped line each, so they stay readable.
    for r in results:
        if r.detail and not (r.ok and r.structured_honoured is not False):
            mark = "✗" if not r.ok else "!"
            click.echo(f"{mark} {r.provider}: {r.detail}")


@click.group("providers")
def providers_group() -> None:
    """Inspect the configured model providers."""


@providers_group.command("check")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="Config file (YAML).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for each provider.")
def check_command(config_file: str | None, as_json: bool, timeout: float) -> None:
    """Check that each provider answers, that its structured-output mode is honoured, and whether
    it streams.

    Exits with status 1 when a provider is unreachable or fails.
    """
    settings = load_settings(config_file)
    results = asyncio.run(check_all(build_providers(settings), timeout))
    if as_json:
        click.echo(json.dumps([asdict(r) for r in results], indent=2))
    else:
        _print_table(results)
    if not all(r.ok for r in results):
        sys.exit(1)


COMMANDS = [providers_group]
