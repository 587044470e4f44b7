"""The web app: a JSON API under /api (schema at /openapi.json) and one page at / that uses it.

Runs live in memory in this server process (see `runs.py`): restart the server and they are
gone, though the engine's checkpoints stay on disk. Beat and scene indexes in the API count
from 0; versions count from 1. Every error is JSON, `{"error": "..."}`, with a 4xx status
for anything the client can fix.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from ..errors import ConfigError, InputError
from ..export import to_fountain, to_json, to_markdown
from ..pipeline.checkpoint import new_run_id
from ..pipeline.engine import MAX_SCENES, StoryEngine, check_inputs
from ..schemas import Story
from . import jobs
from .compare import changed_parts, line_diff
from .guard import DEFAULT_MAX_BODY_BYTES, Guard
from .runs import Run, RunStore, UnknownRun
from .steer import Steering, check_scene_index, edited_plot

STATIC = Path(__file__).parent / "static"
EngineFactory = Callable[[str | None], StoryEngine]
SEED_MAX = 2**31 - 1

EXPORTS = {
    "json": (to_json, "application/json", "json"),
    "markdown": (to_markdown, "text/markdown; charset=utf-8", "md"),
    "fountain": (to_fountain, "text/plain; charset=utf-8", "fountain"),
}


class Conflict(Exception):
    """The run cannot do that now: it is busy (one job at a time), or not in the state it needs."""


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    premise: str = Field(description="one or two sentences")
    scenes: int | None = Field(default=None, ge=1, le=MAX_SCENES, description="default: one per plot beat")
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX)
    provider: str | None = Field(
        default=None, description="route every component to this configured provider"
    )


class SteerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base: int | None = Field(default=None, ge=1, description="version to start from (default: the latest)")
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX, description="default: a fresh random seed")
    reevaluate: bool = Field(default=True, description="evaluate and enhance the new story again")


class BeatEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    purpose: str | None = None
    tension: int | None = None
    description: str | None = None
    base: int | None = Field(default=None, ge=1, description="version to start from (default: the latest)")
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX, description="default: a fresh random seed")


class Engines:
    """One engine per provider choice, made on first use and closed with the app."""

    def __init__(self, factory: EngineFactory) -> None:
        self.factory = factory
        self._engines: dict[str | None, StoryEngine] = {}

    def get(self, provider: str | None) -> StoryEngine:
        if provider not in self._engines:
            if provider is not None and provider not in self.providers():
                known = ", ".join(self.providers())
                raise InputError(f"unknown provider {provider!r}; the config defines: {known}")
            self._engines[provider] = self.factory(provider)
        return self._engines[provider]

    def providers(self) -> list[str]:
        return sorted(self.get(None).settings.providers)

    async def aclose(self) -> None:
        for engine in self._engines.values():
            await engine.aclose()
        self._engines.clear()


def config_engine_factory(
    config_path: str | Path | None = None, provider: str | None = None
) -> EngineFactory:
    """Engines from config.yaml; `provider` is the default route (the CLI's --provider)."""

    def make(choice: str | None) -> StoryEngine:
        return StoryEngine.from_config(config_path, provider=choice or provider)

    return make


def create_app(
    engine_factory: EngineFactory | None = None,
    *,
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    """The app. `engine_factory(provider_or_None)` builds the engine for a run (tests inject one).

    With a `token`, every /api/ request must carry it (see guard.py); request bodies are bounded
    by `max_body_bytes` either way."""
    engines = Engines(engine_factory or config_engine_factory())
    store = RunStore()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await store.cancel_all()
        await engines.aclose()

    app = FastAPI(
        title="storyengine",
        summary="Write, watch and steer a story generated by language models.",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.engines = engines
    _error_handlers(app)
    app.add_middleware(Guard, token=token, max_body_bytes=max_body_bytes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/providers")
    async def providers() -> dict[str, Any]:
        """The providers defined in the config (each can serve a whole run)."""
        return {"providers": engines.providers()}

    @app.get("/api/runs")
    async def list_runs() -> list[dict[str, Any]]:
        """Every run of this server process, newest first."""
        return [run.summary() for run in store.all()]

    @app.post("/api/runs", status_code=202)
    async def start_run(body: RunRequest) -> dict[str, Any]:
        """Start a run in the background and return its id at once; watch it at /events."""
        premise = check_inputs(body.premise, body.scenes)
        engine = engines.get(body.provider)
        run_id = new_run_id()
        while _exists(store, run_id):
            run_id = new_run_id()
        run = store.add(Run(run_id, premise, body.scenes, body.seed, body.provider))
        run.task = asyncio.create_task(jobs.generate(run, engine))
        return run.summary()

    @app.get("/api/runs/{run_id}")
    async def get_run(run_id: str) -> dict[str, Any]:
        """The run's state, and its latest story once it has one."""
        run = store.get(run_id)
        latest = run.versions[-1] if run.versions else None
        return {
            **run.summary(),
            "version": latest.number if latest else None,
            "story": latest.story.model_dump(mode="json") if latest else None,
        }

    @app.get("/api/runs/{run_id}/events", response_class=StreamingResponse)
    async def events(
        run_id: str,
        after: Annotated[int, Query(ge=-1, description="replay only events with a higher seq")] = -1,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:
        """Server-sent events: every event so far, then live ones; the stream ends when the run is idle."""
        run = store.get(run_id)
        if last_event_id and last_event_id.isdigit():
            after = max(after, int(last_event_id))
        return StreamingResponse(
            _sse(run, after),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.post("/api/runs/{run_id}/resume", status_code=202)
    async def resume(run_id: str) -> dict[str, Any]:
        """Continue a failed run from its checkpoint: finished steps are not asked for again."""
        run = _idle(store.get(run_id))
        if run.status != "failed":
            raise Conflict(f"run {run.id} is {run.status}; only a failed run can be resumed")
        engine = engines.get(run.provider)
        run.status, run.error = "running", None
        after = run.start_job("resume")
        run.task = asyncio.create_task(jobs.generate(run, engine, resume=True))
        return {"run": run.id, "job": "resume", "after": after}

    @app.get("/api/runs/{run_id}/versions")
    async def versions(run_id: str) -> list[dict[str, Any]]:
        return [v.summary() for v in store.get(run_id).versions]

    @app.get("/api/runs/{run_id}/versions/{number}")
    async def version(run_id: str, number: int) -> dict[str, Any]:
        found = store.get(run_id).version(number)
        return {**found.summary(), "story": found.story.model_dump(mode="json")}

    @app.post("/api/runs/{run_id}/versions/{number}/restore", status_code=201)
    async def restore(run_id: str, number: int) -> dict[str, Any]:
        """Make version `number` the latest again, as a new version (nothing is overwritten)."""
        run = store.get(run_id)
        old = run.version(number)
        return run.add_version(old.story, f"restored version {number}", number).summary()

    @app.get("/api/runs/{run_id}/compare")
    async def compare(run_id: str, a: int, b: int) -> dict[str, Any]:
        """What changed from version a to version b, and a line diff of their Markdown."""
        run = store.get(run_id)
        left, right = run.version(a).story, run.version(b).story
        return {"a": a, "b": b, "changed": changed_parts(left, right), "diff": line_diff(left, right)}

    @app.get("/api/runs/{run_id}/versions/{number}/export/{fmt}")
    async def export(run_id: str, number: int, fmt: Literal["json", "markdown", "fountain"]) -> Response:
        """Download one version as JSON, Markdown or Fountain."""
        run = store.get(run_id)
        render, media_type, extension = EXPORTS[fmt]
        filename = f"story-{run.id}-v{number}.{extension}"
        return Response(
            render(run.version(number).story),
            media_type=media_type,
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    @app.post("/api/runs/{run_id}/beats/{index}", status_code=202)
    async def edit_beat(run_id: str, index: int, body: BeatEdit) -> dict[str, Any]:
        """Edit beat `index`, then make again the scenes from it on, their dialogue and the evaluation."""
        run = _idle(store.get(run_id))
        base = run.version(body.base)
        changes = body.model_dump(exclude_none=True, exclude={"base", "seed"})
        plot = edited_plot(base.story.plot, index, changes)
        label = f"edited beat {index + 1}, regenerated from it"
        return _steer(engines, run, base.number, body.seed, label, lambda s: s.from_beat(plot, index))

    @app.post("/api/runs/{run_id}/scenes/{index}/regenerate", status_code=202)
    async def regenerate_scene(run_id: str, index: int, body: SteerRequest | None = None) -> dict[str, Any]:
        """Make scene `index` and its dialogue again (and, by default, the evaluation)."""
        body = body or SteerRequest()
        run = _idle(store.get(run_id))
        base = run.version(body.base)
        check_scene_index(base.story, index)
        label = f"regenerated scene {index + 1}"
        reevaluate = body.reevaluate
        return _steer(
            engines, run, base.number, body.seed, label, lambda s: s.scene(index, reevaluate=reevaluate)
        )

    @app.post("/api/runs/{run_id}/scenes/{index}/dialogue/regenerate", status_code=202)
    async def regenerate_dialogue(
        run_id: str, index: int, body: SteerRequest | None = None
    ) -> dict[str, Any]:
        """Make the dialogue of scene `index` again (and, by default, the evaluation)."""
        body = body or SteerRequest()
        run = _idle(store.get(run_id))
        base = run.version(body.base)
        check_scene_index(base.story, index)
        label = f"regenerated dialogue of scene {index + 1}"
        reevaluate = body.reevaluate
        return _steer(
            engines, run, base.number, body.seed, label, lambda s: s.dialogue(index, reevaluate=reevaluate)
        )

    return app


def _version() -> str:
    try:
        return package_version("storyengine")
    except PackageNotFoundError:
        return "unknown"


def _exists(store: RunStore, run_id: str) -> bool:
    try:
        store.get(run_id)
    except UnknownRun:
        return False
    return True


def _idle(run: Run) -> Run:
    if run.busy:
        raise Conflict(f"run {run.id} is busy ({run.job}); wait for it to finish, then try again")
    return run


def _steer(
    engines: Engines,
    run: Run,
    base: int,
    seed: int | None,
    label: str,
    work: Callable[[Steering], Awaitable[Story]],
) -> dict[str, Any]:
    """Start one steering job on `run` from version `base`; its events follow on the run's stream."""
    _idle(run)
    seed = seed if seed is not None else random.randint(0, SEED_MAX)
    steering = Steering(engines.get(run.provider), run.version(base).story, run.id, run.publish, seed)
    after = run.start_job(label)
    run.task = asyncio.create_task(jobs.steer(run, label, base, lambda: work(steering)))
    return {"run": run.id, "job": label, "base": base, "seed": seed, "after": after}


async def _sse(run: Run, after: int) -> AsyncIterator[str]:
    yield "retry: 5000\n\n"
    async for event in run.follow(after):
        if event is None:
            yield ": keepalive\n\n"
            continue
        yield f"id: {event['seq']}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"


def _error_handlers(app: FastAPI) -> None:
    def error(status: int, message: str, **extra: Any) -> JSONResponse:
        return JSONResponse({"error": message, **extra}, status_code=status)

    @app.exception_handler(UnknownRun)
    async def unknown(_: Request, exc: UnknownRun) -> JSONResponse:
        return error(404, str(exc))

    @app.exception_handler(InputError)
    async def bad_input(_: Request, exc: InputError) -> JSONResponse:
        return error(422, str(exc))

    @app.exception_handler(ConfigError)
    async def bad_config(_: Request, exc: ConfigError) -> JSONResponse:
        return error(422, str(exc))

    @app.exception_handler(Conflict)
    async def conflict(_: Request, exc: Conflict) -> JSONResponse:
        return error(409, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return error(400, 'the request body is not valid JSON; send an object like {"premise": "..."}')
        text = "; ".join(f"{'.'.join(str(x) for x in p['loc'])}: {p['msg']}" for p in problems)
        details = [{"loc": list(p["loc"]), "msg": p["msg"], "type": p["type"]} for p in problems]
        return error(422, f"invalid request: {text}", details=details)
