"""`Cached`: a Generator that answers repeated requests from a `ResponseCache`.

The key (format v1)::

    v1:<provider>:<model>:sha256(messages JSON):sha256(params JSON)

Both JSONs are canonical (`sort_keys=True, separators=(",", ":")`, UTF-8), so dict order,
also inside `json_schema`, never changes a key, while any change to what the model sees
(a message's role or content) or how it is asked (`request.params()`: temperature, top_p,
seed, max_tokens, stop, json_schema, schema_name) does. `component`, `stage` and `attempt`
are left out: they do not change the answer.

`provider` and `model` name the whole chain this `Cached` wraps, because a chain can fall
back: "lmstudio>embedded" with models "qwen2.5-7b>smollm2" (see `chain_identity`). The stored
completion keeps the `provider` and `model` that actually answered.

Only validated output is cached: a completion is stored when its text is non-empty, it was
not cut off (`finish_reason != "length"`) and `check` accepted it — the inner chain only
returns answers its attempt checked, so a miss is not checked again. A hit is checked once
before it is served (its `value` set), and one that now fails is deleted and treated as a
miss. Hits come back with `cached=True`.

Creative calls (stage "freeform" at temperature > 0) bypass the cache unless the request
has a seed, so a rerun does not freeze creative output (`cache_creative_with_seed_only`).

Legacy keys: the format before v1 is the roadmap's sketch
`v0:<provider>:sha256(contents joined by "\\n"):sha256(params JSON)` (the roadmap printed
"v1:", but it predates the model in the key; it is stored as "v0:"). For one release, a v1
miss looks the legacy key up once and, when it holds a valid answer, moves it to the v1 key
(`legacy_keys`). Remove that path in the release after.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable

from ..config import CacheSettings
from ..hashing import canonical_json
from ..providers.base import Provider
from ..types import Completion, CompletionRequest
from .base import Check, Generator
from .cache_store import ResponseCache

logger = logging.getLogger("storyengine")

KEY_VERSION = "v1"
LEGACY_KEY_VERSION = "v0"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _key_part(name: str) -> str:
    # ":" separates the parts of a key; escape it (and the escape character) so names stay distinct.
    return name.replace("%", "%25").replace(":", "%3A")


def cache_key(request: CompletionRequest, *, provider: str, model: str) -> str:
    """The v1 key of `request` sent to the chain `provider` / `model`."""
    messages = [{"role": m.role, "content": m.content} for m in request.messages]
    return ":".join(
        (
            KEY_VERSION,
            _key_part(provider),
            _key_part(model),
            _sha256(canonical_json(messages)),
            _sha256(canonical_json(request.params())),
        )
    )


def legacy_cache_key(request: CompletionRequest, *, provider: str) -> str:
    """The pre-v1 key (the roadmap's sketch): no model, no roles, ASCII-escaped params JSON."""
    prompt = "\n".join(m.content for m in request.messages)
    params_json = json.dumps(request.params(), sort_keys=True, separators=(",", ":"))
    return f"{LEGACY_KEY_VERSION}:{provider or 'active'}:{_sha256(prompt)}:{_sha256(params_json)}"


def chain_identity(providers: Iterable[Provider]) -> tuple[str, str]:
    """(provider, model) naming a fallback chain for the key: names and models joined by ">"."""
    chain = list(providers)
    return ">".join(p.name for p in chain), ">".join(p.model for p in chain)


def is_creative(request: CompletionRequest) -> bool:
    """A freeform call sampled at temperature > 0: its answer is meant to vary."""
    return request.stage == "freeform" and request.temperature > 0


def keepable(completion: Completion) -> bool:
    """True when an answer the chain returned (and so checked) is worth keeping: text, not cut off."""
    return bool(completion.text.strip()) and completion.finish_reason != "length"


def checked(completion: Completion, check: Check | None) -> Completion | None:
    """A stored answer made ready to serve: `value` set by `check`, or None when it is no longer valid."""
    if not keepable(completion):
        return None
    if check is None:
        return completion
    try:
        value = check(completion)
    except Exception:
        return None
    return completion.model_copy(update={"value": value})


class Cached:
    """Serve repeated requests from `store`; ask `inner` on a miss and keep only valid answers."""

    def __init__(
        self,
        inner: Generator,
        store: ResponseCache,
        *,
        provider_id: str,
        model: str = "",
        cache_creative_with_seed_only: bool = True,
        legacy_keys: bool = True,
    ) -> None:
        self.inner = inner
        self.store = store
        self.provider_id = provider_id
        self.model = model
        self.cache_creative_with_seed_only = cache_creative_with_seed_only
        self.legacy_keys = legacy_keys

    @classmethod
    def from_settings(
        cls, inner: Generator, store: ResponseCache, settings: CacheSettings, *, provider_id: str, model: str
    ) -> Cached:
        return cls(
            inner,
            store,
            provider_id=provider_id,
            model=model,
            cache_creative_with_seed_only=settings.cache_creative_with_seed_only,
            legacy_keys=settings.legacy_keys,
        )

    def cacheable(self, request: CompletionRequest) -> bool:
        if self.cache_creative_with_seed_only and is_creative(request) and request.seed is None:
            return False
        return True

    def key(self, request: CompletionRequest) -> str:
        return cache_key(request, provider=self.provider_id, model=self.model)

    async def generate(self, request: CompletionRequest, check: Check | None = None) -> Completion:
        key = self._key_or_none(request)
        if key is None:
            return await self.inner.generate(request, check)
        hit = await self._lookup(key, request, check)
        await self.store.record(request.component, hit=hit is not None, key=key)
        if hit is not None:
            return hit
        completion = await self.inner.generate(request, check)
        if check is not None and completion.value is None:
            # An inner generator that did not check its answer: check it here, once.
            ready = checked(completion, check)
            if ready is None:
                return completion
            completion = ready
        if keepable(completion):
            await self.store.put(key, completion, request.component)
        return completion

    def _key_or_none(self, request: CompletionRequest) -> str | None:
        if not self.cacheable(request):
            return None
        try:
            return self.key(request)
        except (TypeError, ValueError) as exc:  # a json_schema that is not plain JSON
            logger.debug("not caching a %s call: its request is not JSON (%s)", request.component, exc)
            return None

    async def _lookup(self, key: str, request: CompletionRequest, check: Check | None) -> Completion | None:
        hit = await self._valid_entry(key, check)
        if hit is not None or not self.legacy_keys:
            return hit
        old_key = legacy_cache_key(request, provider=self.provider_id)
        hit = await self._valid_entry(old_key, check)
        if hit is not None:
            await self.store.rename(old_key, key)
        return hit

    async def _valid_entry(self, key: str, check: Check | None) -> Completion | None:
        entry = await self.store.get(key)
        if entry is None:
            return None
        served = checked(entry.completion.model_copy(deep=True, update={"cached": True}), check)
        if served is None:
            await self.store.delete(key)
        return served
