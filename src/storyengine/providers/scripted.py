"""A provider driven by a function: how tests and benchmarks play exact scenarios."""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections.abc import Awaitable, Callable

from .. import streaming
from ..types import Completion, CompletionRequest, Usage
from .base import estimate_tokens
from .profiles import PROFILES, Profile, ProfileName

Reply = str | Completion | BaseException
Script = Callable[[CompletionRequest], Reply | Awaitable[Reply]]


class ScriptedProvider:
    """Answers each request with `script(request)`.

    The script returns the text, a full `Completion`, or an exception to raise. Every
    request is kept in `.requests` so tests can assert what was sent. `latency` sleeps
    before answering (asyncio, so concurrency is real). `profile` is the model profile it plays
    (providers/profiles.py), read by a `Retrying` built around it alone; by default `tiny`, the
    packaged model most scenarios stand in for. (A router asks it as its config entry says.)
    """

    def __init__(
        self,
        script: Script,
        *,
        name: str = "scripted",
        model: str = "scripted",
        context_window: int = 8192,
        structured_mode: str = "json_schema",
        latency: float = 0.0,
        profile: ProfileName | Profile = "tiny",
    ) -> None:
        self.script = script
        self.name = name
        self.model = model
        self.context_window = context_window
        self.structured_mode = structured_mode
        self.latency = latency
        self.profile = PROFILES[profile] if isinstance(profile, str) else profile
        self.requests: list[CompletionRequest] = []

    @property
    def calls(self) -> int:
        return len(self.requests)

    async def complete(self, request: CompletionRequest) -> Completion:
        started = time.perf_counter()
        self.requests.append(request)
        if self.latency:
            await asyncio.sleep(self.latency)
        reply = self.script(request)
        if inspect.isawaitable(reply):
            reply = await reply
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, Completion):
            return reply
        if streaming.wanted():  # plays a stream: the answer in pieces, as a model writes it
            for piece in re.findall(r"\S*\s*", reply):
                streaming.delta(piece)
                if self.latency:
                    await asyncio.sleep(0)
        prompt = "".join(m.content for m in request.messages)
        completion_tokens = self.count_tokens(reply)
        finish = "length" if completion_tokens > request.max_tokens else "stop"
        return Completion(
            text=reply,
            finish_reason=finish,
            usage=Usage(prompt_tokens=self.count_tokens(prompt), completion_tokens=completion_tokens),
            model=self.model,
            provider=self.name,
            latency_s=time.perf_counter() - started,
            structured_mode=self.structured_mode if request.json_schema else "none",
        )

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    async def aclose(self) -> None:
        return None
