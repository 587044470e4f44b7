"""`bench peer`: storyengine's plot component beside instructor, on the same model and premises.

instructor runs in its JSON-schema mode (`instructor.patch(create=..., mode=Mode.JSON_SCHEMA)`):
one call asks for the plot as JSON, instructor validates it with `PlotStructure` and re-asks
with the errors up to --instructor-retries times. storyengine runs its plot component: a
free-writing call, then structuring with repair and one re-ask.

How instructor reaches the model, and what it must be helped with:

- embedded (llama-cpp-python 0.3.36, in-process): the same loaded `Llama` storyengine uses,
  through `Llama.create_chat_completion_openai_v1`. That method ignores a `json_schema`
  response_format (only `json_object` + `schema` becomes a grammar), so the create function
  given to instructor rewrites it into that form. Left alone it decodes unconstrained.
- the schema sent for decoding is storyengine's `decoding_schema(PlotStructure, ...)` on both
  sides: Pydantic's own schema (24 beats, strings up to 300 characters) makes llama.cpp's
  grammar compiler give up ("number of rules ... exceeds sane defaults") and the process
  crash. Validation is by the full `PlotStructure` model on both sides (instructor with
  strict=False, as storyengine validates).
- an OpenAI-compatible provider: instructor's OpenAI client against its base_url, the
  response_format put in the server's structured-output dialect.

Reported per side: valid objects (each re-validated), LLM calls, seconds, valid objects per
call and per second. The sides alternate premise by premise, so machine load hits both alike.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import EmbeddedProviderSettings, OpenAIProviderSettings, Settings, api_key
from ..errors import InputError, StoryEngineError
from ..pipeline.story import DEFAULT_BEATS
from ..providers.embedded import EmbeddedProvider
from ..schemas import PlotStructure
from ..structuring import decoding_schema
from .harness import build_engine, metered_providers, primary_provider, scratch_settings
from .table import Report
from .validity import revalidate

Progress = Callable[[str], None]
Create = Callable[..., Any]

PLOT_SCHEMA_COUNTS = {"beats": DEFAULT_BEATS, "characters": (2, 5)}
SYSTEM = "You are a story planner. You answer with the plot of a story as JSON."
USER = (
    "Outline the plot of this story: a structure type, 5 beats (each with a short name, what it does "
    "for the story, and a tension from 1 to 10), and the main characters.\n\nPremise: {premise}"
)


def plot_decoding_schema() -> dict[str, Any]:
    """The schema storyengine sends for a plot whose beat count is not fixed."""
    return decoding_schema(PlotStructure, counts=dict(PLOT_SCHEMA_COUNTS))


class CountingCreate:
    """A chat-completions `create` for instructor that counts calls and sets the response_format."""

    def __init__(self, send: Create, dialect: str, schema: dict[str, Any]) -> None:
        self.send = send
        self.dialect = dialect
        self.schema = schema
        self.calls = 0

    def __call__(self, **kwargs: Any) -> Any:
        self.calls += 1
        response_format = kwargs.pop("response_format", None)
        if response_format is not None:
            kwargs.update(self.structured(response_format))
        return self.send(**kwargs)

    def structured(self, response_format: dict[str, Any]) -> dict[str, Any]:
        name = (response_format.get("json_schema") or {}).get("name", "PlotStructure")
        if self.dialect == "json_schema":
            spec = {"name": name, "schema": self.schema, "strict": True}
            return {"response_format": {"type": "json_schema", "json_schema": spec}}
        if self.dialect == "json_object_schema":
            return {"response_format": {"type": "json_object", "schema": self.schema}}
        if self.dialect == "ollama_format":
            return {"extra_body": {"format": self.schema}}
        raise InputError(f"the peer bench cannot send a schema in structured_output {self.dialect!r}")


def instructor_create(settings: Settings, name: str) -> CountingCreate:
    """The counting create function for provider `name` (embedded in-process, or a server)."""
    entry = settings.providers[name]
    schema = plot_decoding_schema()
    if isinstance(entry, EmbeddedProviderSettings):
        loaded = EmbeddedProvider(name, entry).load_sync()
        penalty = getattr(entry, "repeat_penalty", None)  # as storyengine's embedded calls use it

        def send(**kwargs: Any) -> Any:
            kwargs.pop("model", None)
            if penalty is not None:
                kwargs.setdefault("repeat_penalty", penalty)
            with loaded.thread_lock:
                return loaded.llama.create_chat_completion_openai_v1(**kwargs)

        return CountingCreate(send, "json_object_schema", schema)
    assert isinstance(entry, OpenAIProviderSettings)
    if entry.structured_output not in ("json_schema", "json_object_schema", "ollama_format"):
        raise InputError(
            f"provider {name!r} has structured_output {entry.structured_output!r}; the peer bench needs "
            "json_schema, json_object_schema or ollama_format (instructor reads the answer's content)"
        )
    import openai

    client = openai.OpenAI(
        base_url=entry.base_url, api_key=api_key(entry.api_key_env) or "none", max_retries=0
    )

    def send_http(**kwargs: Any) -> Any:
        kwargs["model"] = entry.model
        return client.chat.completions.create(**kwargs)

    return CountingCreate(send_http, entry.structured_output, schema)


def patched(create: CountingCreate) -> Create:
    try:
        import instructor
    except ImportError:
        raise InputError(
            "the peer bench needs instructor; install it with `pip install instructor` "
            "(it is in storyengine's `test` extra)"
        ) from None
    # instructor logs every exhausted retry as an ERROR; the report already counts and quotes them.
    logging.getLogger("instructor").setLevel(logging.CRITICAL)
    return instructor.patch(create=create, mode=instructor.Mode.JSON_SCHEMA)


class Side:
    """What one side did: valid objects, calls, time per premise."""

    def __init__(self, report: Report, label: str) -> None:
        self.label = label
        self.valid = 0
        self.calls = 0
        self.seconds = report.measure(f"{label}: seconds per premise", "s")
        self.calls_per_premise = report.measure(f"{label}: LLM calls per premise", "calls", digits=0)
        self.errors: list[str] = []

    def add(self, ok: bool, calls: int, seconds: float, error: str | None = None) -> None:
        self.valid += ok
        self.calls += calls
        self.seconds.add(seconds)
        self.calls_per_premise.add(calls)
        if error:
            self.errors.append(error)

    def as_dict(self) -> dict[str, Any]:
        total = sum(self.seconds.runs)
        return {
            "premises": len(self.seconds.runs),
            "valid": self.valid,
            "llm_calls": self.calls,
            "seconds": round(total, 2),
            "valid_per_call": round(self.valid / self.calls, 3) if self.calls else None,
            "valid_per_second": round(self.valid / total, 4) if total else None,
            "errors": self.errors[:5],
        }


async def run_peer_bench(
    report: Report,
    settings: Settings,
    *,
    premises: list[str],
    retries: int,
    seed: int,
    max_minutes: float | None,
    progress: Progress,
) -> Report:
    name = primary_provider(settings)
    ours, theirs = Side(report, "storyengine"), Side(report, "instructor")
    max_tokens = settings.narrative.defaults.structuring.max_tokens
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="storyengine-bench-") as tmp:
        run_settings = scratch_settings(settings, Path(tmp), cache=False, strict=True)
        providers = metered_providers(run_settings)
        async with build_engine(run_settings, providers) as engine:
            create = instructor_create(run_settings, name)
            client = patched(create)
            for index, premise in enumerate(premises):
                if max_minutes is not None and time.perf_counter() - started > max_minutes * 60:
                    report.notes.append(f"stopped after {index} of {len(premises)} premises (--max-minutes)")
                    break
                progress(f"premise {index + 1}/{len(premises)} · instructor")
                before = create.calls
                clock = time.perf_counter()
                error = None
                try:
                    value = await asyncio.to_thread(
                        client,
                        response_model=PlotStructure,
                        max_retries=retries,
                        strict=False,
                        messages=[
                            {"role": "system", "content": SYSTEM},
                            {"role": "user", "content": USER.format(premise=premise)},
                        ],
                        temperature=0.0,
                        seed=seed + index,
                        max_tokens=max_tokens,
                    )
                    ok = revalidate(value, PlotStructure, None)
                except Exception as exc:  # instructor raises its own retry/validation errors
                    ok, error = False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                theirs.add(ok, create.calls - before, time.perf_counter() - clock, error)

                progress(f"premise {index + 1}/{len(premises)} · storyengine")
                marks = sum(len(p.calls) for p in providers.values())
                clock = time.perf_counter()
                error = None
                try:
                    plot = await engine.plot(premise, seed=seed + index)
                    ok = revalidate(plot, PlotStructure, None)
                except StoryEngineError as exc:
                    ok, error = False, f"{type(exc).__name__}: {str(exc)[:160]}"
                calls = sum(len(p.calls) for p in providers.values()) - marks
                ours.add(ok, calls, time.perf_counter() - clock, error)
    report.summary.update(
        {
            "provider": name,
            "premises": len(ours.seconds.runs),
            "instructor_retries": retries,
            "sides": {"storyengine": ours.as_dict(), "instructor": theirs.as_dict()},
        }
    )
    columns = ["side", "premises", "valid", "LLM calls", "seconds", "valid/call", "valid/s"]
    rows = []
    for side in (ours, theirs):
        d = side.as_dict()
        rows.append([side.label, d["premises"], d["valid"], d["llm_calls"], d["seconds"],
                     d["valid_per_call"], d["valid_per_second"]])  # fmt: skip
    report.tables.append(("valid PlotStructure objects", columns, rows))
    report.notes.append(
        "both sides decode with storyengine's plot decoding schema and validate with PlotStructure; "
        "storyengine's calls include its free-writing stage"
    )
    return report
