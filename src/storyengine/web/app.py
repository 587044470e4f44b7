"""The web app: a JSON API under /api (schema at /openapi.json) and one page at / that uses it.

Runs and their versions are kept in the run store of the data directory (see `runs.py`): the
page lists every run, also those the CLI made, and opens any version after a restart. Making
and steering a story are operations of the run engine; this module only checks requests and
starts them. Beat and scene indexes in the API count from 0; versions count from 1.

Every error is JSON, `{"error": "..."}`: 4xx for anything the client can fix (404 for a run or
version that does not exist, 409 for a busy run, 422 for bad input), 502/503 when a model
provider failed, 500 with a message for anything else (see `errors.py`). Before any of that,
`guard.py` checks who asks and what they send (Host, Origin, JSON only, the token, the size).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Header, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..config import Settings, load_settings
from ..epub import to_epub
from ..errors import InputError
from ..export import to_fountain, to_json, to_markdown
from ..pipeline.checkpoint import CheckpointStore, checkpoint_dir
from ..pipeline.engine import StoryEngine
from ..pipeline.inputs import MAX_SCENES, check_inputs
from ..pipeline.runstore import RunStore, Version
from ..pipeline.steering import Steer, bible_dependents, edited_bible
from ..schemas import MAX_CHAPTERS, MAX_SCENES_PER_CHAPTER
from ..seeds import SEED_MAX, fresh_seed
from . import jobs
from .compare import changed_parts, line_diff
from .errors import Conflict, install_error_handlers
from .guard import DEFAULT_MAX_BODY_BYTES, Guard
from .runs import LiveRun, Runs

STATIC = Path(__file__).parent / "static"
EngineFactory = Callable[[str | None], StoryEngine]

VERSION_MAX = 2**63 - 1
"""The highest version number the run store can hold (SQLite's INTEGER): a larger one is a 422."""
VersionNumber = Annotated[int, PathParam(le=VERSION_MAX, description="counts from 1")]

EXPORTS = {
    "json": (to_json, "application/json", "json"),
    "markdown": (to_markdown, "text/markdown; charset=utf-8", "md"),
    "fountain": (to_fountain, "text/plain; charset=utf-8", "fountain"),
    "epub": (to_epub, "application/epub+zip", "epub"),
}


def _unencodable(value: Any, where: str = "") -> str | None:
    """Where `value` holds text that is not Unicode (a lone surrogate such as \\ud800), or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"{where or 'the body'}: {exc.object[exc.start : exc.end]!r} at character {exc.start}"
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _unencodable(key, where) if isinstance(key, str) else None
        found = found or _unencodable(item, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


class Body(BaseModel):
    """A request body: unknown fields refused, and text that UTF-8 cannot hold (a lone surrogate,
    which JSON's \\u escapes allow) refused before it reaches a file or the run store."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _text_is_unicode(cls, data: Any) -> Any:
        found = _unencodable(data)
        if found:
            raise ValueError(f"text that is not valid Unicode (a lone surrogate): {found}; send UTF-8 text")
        return data


class RunRequest(Body):
    premise: str = Field(description="one or two sentences")
    scenes: int | None = Field(default=None, ge=1, le=MAX_SCENES, description="default: one per plot beat")
    chapters: int | None = Field(
        default=None,
        ge=1,
        le=MAX_CHAPTERS,
        description="a long story of this many chapters (not with scenes)",
    )
    scenes_per_chapter: int | None = Field(
        default=None, ge=1, le=MAX_SCENES_PER_CHAPTER, description="with chapters; default 5"
    )
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX)
    provider: str | None = Field(
        default=None, description="route every component to this configured provider"
    )


class SteerRequest(Body):
    base: int | None = Field(
        default=None, ge=1, le=VERSION_MAX, description="version to start from (default: the latest)"
    )
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX, description="default: a fresh random seed")
    reevaluate: bool = Field(default=True, description="evaluate and enhance the new story again")


class BeatEdit(Body):
    name: str | None = None
    purpose: str | None = None
    tension: int | None = None
    description: str | None = None
    base: int | None = Field(
        default=None, ge=1, le=VERSION_MAX, description="version to start from (default: the latest)"
    )
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX, description="default: a fresh random seed")


class BibleEdit(Body):
    bible: dict[str, Any] = Field(description="the whole bible: characters, setting, facts")
    dry_run: bool = Field(default=False, description="only say which scenes the edit would regenerate")
    base: int | None = Field(
        default=None, ge=1, le=VERSION_MAX, description="version to start from (default: the latest)"
    )
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX, description="default: a fresh random seed")


class Engines:
    """One engine per provider choice, made on first use and closed with the app."""

    def __init__(self, factory: EngineFactory, settings: Settings) -> None:
        self.factory = factory
        self.settings = settings
        self._engines: dict[str | None, StoryEngine] = {}
        self._building = asyncio.Lock()

    async def get(self, provider: str | None) -> StoryEngine:
        """The engine for `provider`, built off the event loop the first time (it may open files)."""
        if provider is not None and provider not in self.providers():
            known = ", ".join(self.providers())
            raise InputError(f"unknown provider {provider!r}; the config defines: {known}")
        async with self._building:
            if provider not in self._engines:
                self._engines[provider] = await asyncio.to_thread(self.factory, provider)
        return self._engines[provider]

    def providers(self) -> list[str]:
        """The configured provider names (read from the settings: no engine is built)."""
        return sorted(self.settings.providers)

    async def aclose(self) -> None:
        for engine in self._engines.values():
            await engine.aclose()
        self._engines.clear()


class ConfigEngines:
    """Engines from config.yaml (read once); `provider` is the default route (the CLI's --provider)."""

    def __init__(self, config_path: str | Path | None = None, provider: str | None = None) -> None:
        self.settings = load_settings(config_path)
        self.provider = provider

    def __call__(self, choice: str | None) -> StoryEngine:
        return StoryEngine.from_config(settings=self.settings, provider=choice or self.provider)


def config_engine_factory(
    config_path: str | Path | None = None, provider: str | None = None
) -> EngineFactory:
    return ConfigEngines(config_path, provider)


def create_app(
    engine_factory: EngineFactory | None = None,
    *,
    settings: Settings | None = None,
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    hosts: Iterable[str] = (),
) -> FastAPI:
    """The app. `engine_factory(provider_or_None)` builds the engine for a run (tests inject one).

    `settings` (default: the factory's `.settings`, else the config) name the providers and the
    data directory whose run store the app lists; engines built by the factory must share it.
    With a `token`, every /api/ request must carry it (see guard.py); request bodies are bounded
    by `max_body_bytes` either way. `hosts`: the address the server is bound to, allowed in the
    `Host` header beside the loopback names (guard.py refuses any other name: DNS rebinding).
    """
    factory = engine_factory or config_engine_factory()
    settings = settings or getattr(factory, "settings", None) or load_settings()
    engines = Engines(factory, settings)
    checkpoints = CheckpointStore(checkpoint_dir(settings))
    store = RunStore.beside(checkpoints.directory)
    runs = Runs(store, checkpoints)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await runs.cancel_all()
        await engines.aclose()
        store.close()

    app = FastAPI(
        title="storyengine",
        summary="Write, watch and steer a story generated by language models.",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.store = runs
    app.state.engines = engines
    install_error_handlers(app)
    app.add_middleware(Guard, token=token, max_body_bytes=max_body_bytes, hosts=tuple(hosts))
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
        """Every run in the data directory (this server's and the CLI's), newest first."""
        return await runs.all()

    @app.post("/api/runs", status_code=202)
    async def start_run(body: RunRequest) -> dict[str, Any]:
        """Start a run in the background and return its id at once; watch it at /events."""
        # checked before a provider's engine is built for it
        check_inputs(body.premise, body.scenes, body.chapters, body.scenes_per_chapter)
        engine = await engines.get(body.provider)
        record = await engine.open_run(
            body.premise,
            body.scenes,
            body.seed,
            provider=body.provider,
            chapters=body.chapters,
            scenes_per_chapter=body.scenes_per_chapter,
        )
        run = runs.new(record.id)
        run.start_job("generate")
        run.task = asyncio.create_task(jobs.generate(run, engine, store))
        return runs.summary(record)

    @app.get("/api/runs/{run_id}")
    async def get_run(run_id: str) -> dict[str, Any]:
        """The run's state, and its latest story once it has one."""
        record = await runs.record(run_id)
        latest = await runs.version(run_id) if record.versions else None
        return {
            **runs.summary(record),
            "version": latest.number if latest else None,
            "story": latest.the_story().model_dump(mode="json") if latest else None,
        }

    @app.get("/api/runs/{run_id}/events", response_class=StreamingResponse)
    async def events(
        run_id: str,
        after: Annotated[int, Query(ge=-1, description="replay only events with a higher seq")] = -1,
        last_event_id: Annotated[str | None, Header()] = None,
        drafts: Annotated[
            bool,
            Query(
                description="also the text of the drafts being written, as it grows (draft_delta and "
                "draft_restarted events, without a seq: they are not kept, so never replayed)"
            ),
        ] = False,
    ) -> StreamingResponse:
        """Server-sent events: every event so far, then live ones; the stream ends when the run is idle."""
        run = await runs.live(await runs.record(run_id))
        if last_event_id and last_event_id.isdigit():
            after = max(after, int(last_event_id))
        return StreamingResponse(
            _sse(run, after, drafts),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.post("/api/runs/{run_id}/resume", status_code=202)
    async def resume(run_id: str) -> dict[str, Any]:
        """Continue a failed run from its checkpoint, or try again the parts a finished story went
        without (its gaps: a completed story becomes a new version); finished steps are not asked
        for again."""
        record = await runs.record(run_id)
        run = await runs.live(record)
        with run.claimed("resume") as after:
            if record.status == "running":
                # Not this server's job (it would be busy): another process has it, or had it and died.
                if not record.orphaned or not await asyncio.to_thread(store.take_over, run_id):
                    raise Conflict(
                        f"run {run.id} is being written by another process ({record.owner_text()}); "
                        "wait for it to finish"
                    )
            else:
                gaps = record.versions and (await runs.version(run_id)).the_story().gaps
                if record.status != "failed" and not gaps:
                    raise Conflict(
                        f"run {run.id} is {record.status} with nothing missing; only a failed run, a "
                        "run whose process stopped, or a story with a missing part, can be resumed"
                    )
            engine = await engines.get(record.provider)
            run.task = asyncio.create_task(jobs.generate(run, engine, store, resume=True))
        return {"run": run.id, "job": "resume", "after": after}

    @app.post("/api/runs/{run_id}/stop")
    async def stop(run_id: str) -> dict[str, Any]:
        """Stop the job this server runs for the run: its model calls in flight end, every stage it
        finished is kept in the run's checkpoint, and a resume goes on from there (a stopped
        generation ends with a `run_stopped` event that says what is kept; a steering job with
        `steer_failed`). 409 when no job of this server is running for it."""
        run = await runs.live(await runs.record(run_id))
        task = run.task
        if not run.busy or task is None or task.done() or run.stopping:
            raise Conflict(f"run {run.id} has no job running on this server; there is nothing to stop")
        run.stopping = True
        task.cancel()
        await asyncio.wait({task})
        last = run.events[-1] if run.events else {}
        return {"run": run.id, "stopped": True, **{k: v for k, v in last.items() if k != "run_id"}}

    @app.get("/api/runs/{run_id}/versions")
    async def versions(run_id: str) -> list[dict[str, Any]]:
        return [v.summary() for v in (await runs.record(run_id)).versions]

    @app.get("/api/runs/{run_id}/versions/{number}")
    async def version(run_id: str, number: VersionNumber) -> dict[str, Any]:
        found = await runs.version(run_id, number)
        return {**found.summary(), "story": found.the_story().model_dump(mode="json")}

    @app.post("/api/runs/{run_id}/versions/{number}/restore", status_code=201)
    async def restore(run_id: str, number: VersionNumber) -> dict[str, Any]:
        """Make version `number` the latest again, as a new version (nothing is overwritten)."""
        run = await runs.live(await runs.record(run_id))
        summary = (await asyncio.to_thread(store.restore, run_id, number)).summary()
        run.publish({"event": "version_added", "version": summary})
        return summary

    @app.get("/api/runs/{run_id}/compare")
    async def compare(
        run_id: str,
        a: Annotated[int, Query(le=VERSION_MAX)],
        b: Annotated[int, Query(le=VERSION_MAX)],
    ) -> dict[str, Any]:
        """What changed from version a to version b, and a line diff of their Markdown."""
        left, right = (await runs.version(run_id, a)).the_story(), (await runs.version(run_id, b)).the_story()
        return {"a": a, "b": b, "changed": changed_parts(left, right), "diff": line_diff(left, right)}

    @app.get("/api/runs/{run_id}/versions/{number}/export/{fmt}")
    async def export(
        run_id: str, number: VersionNumber, fmt: Literal["json", "markdown", "fountain", "epub"]
    ) -> Response:
        """Download one version as JSON, Markdown, Fountain or EPUB."""
        story = (await runs.version(run_id, number)).the_story()
        render, media_type, extension = EXPORTS[fmt]
        filename = f"story-{run_id}-v{number}.{extension}"
        return Response(
            render(story),
            media_type=media_type,
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    async def steer(run_id: str, operation: Steer, base: int | None, seed: int | None) -> dict[str, Any]:
        """Check a steering request, then start it; its events follow on the run's stream."""
        record = await runs.record(run_id)
        run = await runs.live(record)
        with run.claimed(operation.label) as after:  # before any await: one job per run
            engine = await engines.get(record.provider)
            found = await runs.version(run_id, base)
            started = start(run, engine, operation, found, seed, after)
        return started

    def start(
        run: LiveRun, engine: StoryEngine, operation: Steer, found: Version, seed: int | None, after: int
    ) -> dict[str, Any]:
        """Start the steering job of a claimed run (the last step of its `claimed` block)."""
        operation.check(found.the_story())
        seed = seed if seed is not None else fresh_seed()
        run.task = asyncio.create_task(jobs.steer(run, engine, operation, found.number, seed))
        return {"run": run.id, "job": operation.label, "base": found.number, "seed": seed, "after": after}

    @app.post("/api/runs/{run_id}/revise", status_code=202)
    async def revise(run_id: str, body: SteerRequest | None = None) -> dict[str, Any]:
        """Apply the suggestions of a version: rewrite the scenes they target, as a new version.
        The answer says which suggestions apply to which scenes and which name nothing (not applied)."""
        body = body or SteerRequest()
        record = await runs.record(run_id)
        run = await runs.live(record)
        with run.claimed("revise") as after:  # before the latest version is read: one job per run
            engine = await engines.get(record.provider)
            found = await runs.version(run_id, body.base)
            operation = engine.revision_of(found, provider=record.provider)
            run.job = operation.label
            started = start(run, engine, operation, found, body.seed, after)
        plan = operation.changes["revision"]
        return {**started, "applied": plan["applied"], "untargeted": plan["untargeted"]}

    @app.post("/api/runs/{run_id}/bible")
    async def edit_bible(run_id: str, body: BibleEdit) -> Response:
        """Replace the story bible and regenerate the scenes that depend on what changed (a changed
        setting or fact: every scene; else the scenes of a removed or changed character). With
        `dry_run`, only say which scenes that would be, and which characters it removes."""
        found = await runs.version(run_id, body.base)
        story = found.the_story()
        bible = edited_bible(body.bible)
        scenes, removed = bible_dependents(story, bible)
        plan = {"scenes": [i + 1 for i in scenes], "removed": removed, "base": found.number}
        if body.dry_run:
            return JSONResponse(plan)
        operation = Steer("edit_bible", 0, {"bible": bible.model_dump(mode="json")})
        started = await steer(run_id, operation, found.number, body.seed)
        return JSONResponse({**started, **plan}, status_code=202)

    @app.post("/api/runs/{run_id}/beats/{index}", status_code=202)
    async def edit_beat(run_id: str, index: int, body: BeatEdit) -> dict[str, Any]:
        """Edit beat `index`, then make again the scenes from it on, their dialogue and the evaluation."""
        changes = body.model_dump(exclude_none=True, exclude={"base", "seed"})
        return await steer(run_id, Steer("edit_beat", index, changes), body.base, body.seed)

    @app.post("/api/runs/{run_id}/scenes/{index}/regenerate", status_code=202)
    async def regenerate_scene(run_id: str, index: int, body: SteerRequest | None = None) -> dict[str, Any]:
        """Make scene `index` and its dialogue again (and, by default, the evaluation)."""
        body = body or SteerRequest()
        operation = Steer("regenerate_scene", index, reevaluate=body.reevaluate)
        return await steer(run_id, operation, body.base, body.seed)

    @app.post("/api/runs/{run_id}/scenes/{index}/dialogue/regenerate", status_code=202)
    async def regenerate_dialogue(
        run_id: str, index: int, body: SteerRequest | None = None
    ) -> dict[str, Any]:
        """Make the dialogue of scene `index` again (and, by default, the evaluation)."""
        body = body or SteerRequest()
        operation = Steer("regenerate_dialogue", index, reevaluate=body.reevaluate)
        return await steer(run_id, operation, body.base, body.seed)

    return app


def _version() -> str:
    try:
        return package_version("storyengine")
    except PackageNotFoundError:
        return "unknown"


async def _sse(run: LiveRun, after: int, drafts: bool = False) -> AsyncIterator[str]:
    yield "retry: 5000\n\n"
    async for event in run.follow(after, drafts=drafts):
        if event is None:
            yield ": keepalive\n\n"
            continue
        data = f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
        yield f"id: {event['seq']}\n{data}" if "seq" in event else data  # a draft's text: no id
