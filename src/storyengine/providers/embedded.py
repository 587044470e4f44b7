"""The embedded provider: a GGUF model run in-process by llama-cpp-python.

The model is loaded lazily, once per process, and shared by every provider that names the same
file and context size; generation runs in a worker thread (`asyncio.to_thread`) so the event loop
never blocks, and calls to one model are serialized (llama_model.py). Prompts that share a prefix
with an earlier call reuse its KV cells (kv_snapshots.py).

A request's timeout is a deadline for its generation (not for the wait for the model): when it
passes, the current decode stops within a token and the call fails with `ProviderTimeout`. Any
exception llama.cpp raises while generating becomes a `ProviderError` subclass. A call whose
awaiting task is cancelled stops its generation within a token (`CallStop`), freeing the model.

When someone listens (storyengine.streaming), a free-text answer's text is sent on as its tokens
are sampled (`TextFeed`); the answer is the same with or without a listener. JSON streams only to
someone who reads it as it grows (pipeline/growing_json.py); a summary never streams.

What is model-specific comes from the provider's profile (providers/profiles.py, chosen by its
config entry): with `stops_loops` (the tiny profile: the packaged SmolLM2), a free-text answer is
ended at its first loop while it is generated, its finish_reason "loop" (loop_watch.py); a GGUF
file configured `profile: standard` writes until it stops or reaches max_tokens.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from pathlib import Path
from typing import Any

from .. import streaming
from ..config import EmbeddedProviderSettings
from ..errors import ModelError, ProviderError, ProviderTimeout
from ..types import Completion, CompletionRequest, Usage
from .kv_snapshots import PrefixSnapshots as PrefixSnapshots
from .llama_model import DEFAULT_MODEL_FILE as DEFAULT_MODEL_FILE
from .llama_model import CallStop, GenerationDeadline, LoadedModel, load_model
from .llama_model import ModelStats as ModelStats
from .llama_model import _models as _models
from .llama_model import _prefix_reusing as _prefix_reusing
from .llama_model import default_model_path as default_model_path
from .llama_model import model_threads as model_threads
from .loop_watch import LoopWatch as LoopWatch
from .loop_watch import TextFeed
from .loop_watch import stop_at_loop as stop_at_loop
from .profiles import profile_for


class EmbeddedProvider:
    """A GGUF model run in-process. structured_mode "grammar": the schema constrains decoding."""

    structured_mode = "grammar"

    def __init__(self, name: str = "embedded", settings: EmbeddedProviderSettings | None = None) -> None:
        self.settings = settings or EmbeddedProviderSettings(type="embedded")
        self.name = name
        self.context_window = self.settings.context_window
        self._path = self.settings.model_path
        self.model = (self._path.name if self._path else DEFAULT_MODEL_FILE).removesuffix(".gguf")
        self.profile = profile_for(self.settings)  # the packaged SmolLM2 is tiny unless configured
        self._loaded: LoadedModel | None = None

    def __repr__(self) -> str:
        return f"EmbeddedProvider(name={self.name!r}, model={self.model!r}, n_ctx={self.context_window})"

    @property
    def model_path(self) -> Path:
        """The GGUF file this provider runs (the packaged SmolLM2 unless configured)."""
        return self._path.expanduser() if self._path else default_model_path()

    def load_sync(self) -> LoadedModel:
        """Load (or reuse) the model, blocking the caller."""
        if self._loaded is None:
            self._loaded = load_model(
                self.model_path, self.context_window, self.settings.threads, provider=self.name
            )
        return self._loaded

    async def load(self) -> LoadedModel:
        """Load (or reuse) the model in a worker thread."""
        if self._loaded is None:
            await asyncio.to_thread(self.load_sync)
        assert self._loaded is not None
        return self._loaded

    async def complete(self, request: CompletionRequest) -> Completion:
        model = await self.load()
        kwargs = self._chat_arguments(request)
        stop = CallStop()
        feed = self._feed(model, request, stop)
        async with model.async_lock():
            # Generation only: not the one-time load, nor the wait for another call to finish.
            started = time.perf_counter()
            try:
                answer = await asyncio.to_thread(
                    model.chat, kwargs, request.timeout, stop_loops=self._stops_loops(request), feed=feed,
                    stop=stop,
                )  # fmt: skip
            except asyncio.CancelledError:  # the caller is gone: free the model within a token
                stop.set()
                raise
            except GenerationDeadline:
                raise ProviderTimeout(
                    f"{self.name}: generation did not finish within {request.timeout:g}s and was stopped "
                    f"there (max_tokens {request.max_tokens}); raise timeout in narrative.defaults, "
                    "lower max_tokens, or use a faster model",
                    provider=self.name,
                ) from None
            except ValueError as exc:
                # llama-cpp-python raises ValueError for a prompt longer than the context.
                raise ProviderError(
                    f"{self.name}: the model refused the request ({exc}); shorten the prompt or raise "
                    f"context_window (now {self.context_window})",
                    provider=self.name,
                    retryable=False,
                ) from None
            except Exception as exc:  # RuntimeError from llama_decode, a grammar error, ...
                raise ModelError(
                    f"{self.name}: the model failed while generating ({type(exc).__name__}: {exc}); "
                    "if it keeps failing, check the model file and context_window "
                    f"(now {self.context_window})",
                    provider=self.name,
                ) from None
        try:
            completion = self._completion(answer, request, time.perf_counter() - started)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError(
                f"{self.name}: llama.cpp returned an answer of an unexpected shape "
                f"({type(exc).__name__}: {exc})",
                provider=self.name,
            ) from None
        if feed is not None and completion.text.startswith(feed.shown):
            streaming.delta(completion.text[len(feed.shown) :])  # what the feed held back
        return completion

    def _feed(self, model: LoadedModel, request: CompletionRequest, stop: CallStop) -> TextFeed | None:
        """A `TextFeed` for a free-text call someone listens to: each piece reaches the listener on
        the event loop, in order (the generating thread hands it over); none once the call stops."""
        detokenize = getattr(model.llama, "detokenize", None)
        if not streaming.wanted() or request.stage not in ("freeform", "structuring"):
            return None  # a draft, or a whole object's JSON someone reads as it grows; no summary
        if detokenize is None:  # a stand-in model in tests
            return None
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()

        def emit(piece: str) -> None:
            if not stop.requested:
                try:
                    loop.call_soon_threadsafe(streaming.delta, piece, context=context)
                except RuntimeError:  # the loop is closed: nobody listens any more
                    pass

        return TextFeed(detokenize, emit, request.stop)

    def _stops_loops(self, request: CompletionRequest) -> bool:
        """Whether this call is followed by a `LoopWatch`: free writing, when the profile stops loops
        (`stops_loops`: tiny); JSON (a schema, or a structuring call) never is."""
        return self.profile.stops_loops and request.json_schema is None and request.stage != "structuring"

    def _chat_arguments(self, request: CompletionRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_tokens": request.max_tokens,
            "stop": list(request.stop),
            "repeat_penalty": self.settings.repeat_penalty,
        }
        if request.seed is not None:
            kwargs["seed"] = request.seed
        if request.json_schema is not None:
            # In-process llama-cpp-python turns only "json_object" (+ schema) into a grammar;
            # a "json_schema" response_format is silently ignored.
            kwargs["response_format"] = {"type": "json_object", "schema": request.json_schema}
        return kwargs

    def _completion(self, answer: dict[str, Any], request: CompletionRequest, latency: float) -> Completion:
        choice = answer["choices"][0]
        text = choice.get("message", {}).get("content") or ""
        usage = answer.get("usage") or {}
        prompt = int(usage.get("prompt_tokens", 0))
        evaluated = usage.get("prompt_tokens_evaluated")  # llama_model.LoadedModel counts it
        return Completion(
            text=text,
            finish_reason=choice.get("finish_reason") or "stop",
            usage=Usage(
                prompt_tokens=prompt,
                completion_tokens=int(usage.get("completion_tokens", 0)),
                prompt_tokens_reused=max(prompt - int(evaluated), 0) if evaluated is not None else 0,
            ),
            model=self.model,
            provider=self.name,
            latency_s=latency,
            structured_mode=self.structured_mode if request.json_schema is not None else "none",
        )

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` by the model's own tokenizer (loads the model on first use)."""
        if not text:
            return 0
        llama = self.load_sync().llama
        return len(llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    async def aclose(self) -> None:
        # The loaded model is shared across providers; it lives as long as the process.
        self._loaded = None
