"""Every error of the web app is a JSON answer, `{"error": "..."}`, with the status that says whose it is.

    404  NotFound                 no such run or version in the run store
    409  Conflict                 the run is busy, or not in the state the request needs
    400  malformed JSON body
    422  InputError, request validation: the client can fix the request
    503  ProviderUnavailable, ProviderTimeout, RateLimited, ModelLoadError; AllProvidersFailed
         when every provider was unreachable: try again later
    502  any other ProviderError, AllProvidersFailed, StructuringError, SchemaValidationError:
         a model provider answered, but not usably
    500  ConfigError, TemplateError, any other StoryEngineError, and any other exception (with
         its type and message; the traceback goes to the server log only)

A RunFailed answers with the status of its cause.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import (
    AllProvidersFailed,
    InputError,
    ModelLoadError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    RunFailed,
    SchemaValidationError,
    StoryEngineError,
    StructuringError,
)
from ..pipeline.runstore import NotFound

logger = logging.getLogger("storyengine.web")

UNAVAILABLE = (ProviderUnavailable, ProviderTimeout, RateLimited, ModelLoadError)


class Conflict(Exception):
    """The run cannot do that now: it is busy (one job at a time), or not in the state it needs."""


def status_of(exc: BaseException) -> int:
    """The HTTP status of a storyengine error (see the table above)."""
    if isinstance(exc, RunFailed):
        return status_of(exc.cause)
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, InputError):
        return 422
    if isinstance(exc, UNAVAILABLE):
        return 503
    if isinstance(exc, AllProvidersFailed):
        causes = [error for _, error in exc.failures]
        return 503 if causes and all(isinstance(e, UNAVAILABLE) for e in causes) else 502
    if isinstance(exc, ProviderError | StructuringError | SchemaValidationError):
        return 502
    return 500


def error(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StoryEngineError)
    async def storyengine_error(_: Request, exc: StoryEngineError) -> JSONResponse:
        status = status_of(exc)
        if status == 500:
            logger.error("request failed: %s: %s", type(exc).__name__, exc)
        headers = None
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            headers = {"Retry-After": str(max(1, round(exc.retry_after)))}
        return error(status, str(exc), headers)

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

    app.add_middleware(UnexpectedErrors)


class UnexpectedErrors:
    """Any other exception of a request: a JSON 500 with its type and message, never an HTML page.

    (Starlette's own handler for `Exception` answers and then raises again; this middleware
    answers and logs, so a client and a test client both see the JSON.)
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            logger.exception("request %s %s failed", scope.get("method"), scope.get("path"))
            if started:  # a stream already under way cannot change its status
                raise
            answer = error(500, f"internal error: {type(exc).__name__}: {_scrubbed(str(exc))}")
            await answer(scope, receive, send)


def _scrubbed(text: str) -> str:
    """An error text without any configured key, on one line, cut to 300 characters."""
    from ..config import secret_values
    from ..secrets import scrub

    return " ".join(scrub(text, secret_values()).split())[:300] or "no details"
