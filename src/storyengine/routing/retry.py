"""Retrying: ask one provider again when a call fails or its answer is unusable.

Failed calls (connection, timeout, 5xx, 429, garbage) are retried after an exponential
backoff with jitter; a 429's Retry-After wins. A Retry-After longer than `backoff_max` ends the
provider's attempts at once with `ProviderBusy` (no sleep: a shorter wait would only earn another
429), and the circuit breaker skips the provider that long (breaker.py). Unusable answers
(empty, cut off, not schema-valid) are retried at once with an adjusted request:

    empty / invalid   lower temperature (min(t, 0.2), then 0); structuring: a JSON-clamped system prompt
    cut off           double max_tokens within the context window; if it cannot grow,
                      shorten the longest user message (keeping its head and tail)

How a cut-off answer is treated beyond that is a model quirk, read from the profile of the route
being called (providers/profiles.py; `tiny` has them, `standard` has none):

    redraws_loops         a sampled answer that was cut off also gets another (reproducible) seed,
                          and one that repeats itself (see `looping`) is redrawn at the same
                          max_tokens: more room would only hold more of the loop
    keeps_cut_off_drafts  a stage-1 draft (stage "freeform") cut off at max_tokens is kept at once,
                          as far as it goes, when it does not loop or its writing before the loop
                          is at least half of it (each sentence once): it already holds
                          max_tokens of usable writing, and drawing it again with twice the room
                          would throw all of it away

For every profile, a free-writing answer still cut off after the last attempt is returned as far
as it goes: its unfinished last sentence, a runaway loop and any repeated sentences removed, its
paragraphs and lines kept, its finish_reason left "length" so the metadata shows it. A cut-off draft loses its
tail; a failed one would lose the story. (An answer with no finished sentence is retried; a
structuring answer that is cut off is never accepted.)

Errors that a retry cannot fix (401/403, other 4xx, a model that will not load) propagate
at once. Each attempt is one call of `ask` (by default `Asked(provider)`; the router puts the
attempt recorder around it): Retrying itself records nothing.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable

from .. import streaming
from ..errors import (
    EmptyOutput,
    ProviderBusy,
    ProviderError,
    SchemaValidationError,
    TruncatedOutput,
    is_output_problem,
)
from ..providers.base import Provider
from ..providers.profiles import Profile, profile_of
from ..seeds import attempt_seed
from ..text.loops import before_loop
from ..text.segment import sentences, word_key, words
from ..types import Completion, CompletionRequest, Message
from .base import Check, Generator

Sleep = Callable[[float], Awaitable[object]]

JSON_CLAMP = "Output only one JSON object. No prose, no markdown. Start with { and end with }."
_LOW_TEMPERATURE = 0.2
_RESAMPLE_TEMPERATURE = 0.5


def _next_seed(request: CompletionRequest) -> int:
    """Another seed for the next attempt, reproducible from the request's own (seeds.py)."""
    return attempt_seed(request.seed, request.attempt)


_ELLIPSIS = "\n[…]\n"
# A cut-off draft that loops is kept (up to its loop, each sentence once) when that keeps this
# share of its words; less, and it is drawn again.
KEPT_BEFORE_LOOP = 0.5


class Asked:
    """One attempt as a Generator: the provider's answer, vetted (not empty, not cut off) and checked.

    Returns the completion with `value` set to what `check` returned; a refused answer's error
    carries it as `error.completion`.
    """

    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    async def generate(self, request: CompletionRequest, check: Check | None = None) -> Completion:
        streaming.attempt_started()  # a viewer drops what an earlier attempt showed
        completion = await self.provider.complete(request)
        try:
            self._vet(completion, request)
            value = check(completion) if check is not None else None
        except (ProviderError, SchemaValidationError) as exc:
            exc.completion = completion
            raise
        return completion.model_copy(update={"value": value})

    def _vet(self, completion: Completion, request: CompletionRequest) -> None:
        where = f"{self.provider.name} ({request.component}/{request.stage}, attempt {request.attempt})"
        if completion.truncated:
            raise TruncatedOutput(
                f"{where}: the answer was cut off at max_tokens={request.max_tokens}; "
                "raise max_tokens in narrative.defaults or shorten the input",
                provider=self.provider.name,
            )
        if not completion.text.strip():
            raise EmptyOutput(
                f"{where}: the model returned an empty answer; try another model or a lower temperature",
                provider=self.provider.name,
            )


class Retrying:
    """A Generator over one provider that makes up to `attempts` calls for one request.

    `profile` says how a cut-off answer is asked again (see the module docstring): the router
    passes its route's; without one, the provider's own (`profiles.profile_of`: `standard` for a
    provider that declares none)."""

    def __init__(
        self,
        provider: Provider,
        *,
        attempts: int = 3,
        backoff_initial: float = 0.5,
        backoff_max: float = 20.0,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        ask: Generator | None = None,
        profile: Profile | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.provider = provider
        self.ask = ask or Asked(provider)
        self.attempts = attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.profile = profile or profile_of(provider)

    @property
    def name(self) -> str:
        return self.provider.name

    async def generate(self, request: CompletionRequest, check: Check | None = None) -> Completion:
        current = request
        for number in range(1, self.attempts + 1):
            attempt = current.model_copy(update={"attempt": number})
            try:
                return await self.ask.generate(attempt, check)
            except (ProviderError, SchemaValidationError) as exc:
                busy = self._busy(exc)
                if busy is not None:
                    raise busy from None
                last = number == self.attempts or not is_retryable(exc)
                keep = last or self._keep_cut_off_draft(attempt, exc.completion, exc)
                usable = self._as_far_as_it_goes(attempt, exc.completion, exc) if keep else None
                if usable is not None:
                    return usable
                if last:
                    raise
                if is_output_problem(exc):
                    current = self.adjust(current, exc)
                else:
                    await self.sleep(self.backoff(number, exc))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _keep_cut_off_draft(
        self, request: CompletionRequest, completion: Completion | None, error: BaseException
    ) -> bool:
        """Whether a cut-off answer is a stage-1 draft to keep now (see the module docstring): one
        that does not loop, or whose writing before its loop is most of it (a sentence said again
        is dropped from what is kept; measured, SmolLM2's 400-token scene drafts that said one
        sentence twice were drawn again whole, 800 of a story's 2,326 thrown-away tokens)."""
        if not (
            self.profile.keeps_cut_off_drafts
            and isinstance(error, TruncatedOutput)
            and request.stage == "freeform"
            and completion is not None
        ):
            return False
        text = completion.text
        if not looping(text):
            return True
        kept = whole_sentences(before_loop(text))
        return len(words(kept)) >= KEPT_BEFORE_LOOP * len(words(text))

    @staticmethod
    def _as_far_as_it_goes(
        request: CompletionRequest, completion: Completion | None, error: BaseException
    ) -> Completion | None:
        """A cut-off free-writing answer made usable (see the module docstring), else None."""
        if not isinstance(error, TruncatedOutput) or completion is None or request.stage == "structuring":
            return None
        text = whole_sentences(before_loop(completion.text))
        return completion.model_copy(update={"text": text}) if text else None

    def _busy(self, error: BaseException) -> ProviderBusy | None:
        """`error` as a ProviderBusy when it asks for a longer wait than `backoff_max`, else None."""
        retry_after = getattr(error, "retry_after", None)
        if isinstance(error, ProviderBusy) or retry_after is None or retry_after <= self.backoff_max:
            return None
        name = self.provider.name
        busy = ProviderBusy(
            f"{error}; that wait is longer than retry.backoff_max ({self.backoff_max:g}s), so it is not "
            f"slept on: {name} is skipped for {retry_after:g}s (raise retry.backoff_max to wait instead)",
            provider=getattr(error, "provider", "") or name,
            retry_after=float(retry_after),
        )
        busy.completion = getattr(error, "completion", None)
        return busy

    # -- between attempts --

    def backoff(self, number: int, error: BaseException) -> float:
        """Seconds to wait after failed attempt `number`: Retry-After if given, else 2^n with jitter."""
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            return min(max(0.0, float(retry_after)), self.backoff_max)
        base = min(self.backoff_max, self.backoff_initial * 2 ** (number - 1))
        return base * (0.5 + 0.5 * self.rng.random())

    def adjust(self, request: CompletionRequest, error: BaseException) -> CompletionRequest:
        """The request for the next attempt after an unusable answer."""
        if isinstance(error, TruncatedOutput):
            if not self.profile.redraws_loops:
                return self._more_room(request)
            if self._redraw_loop(request, getattr(error, "completion", None)):
                return self._fresh_draw(request)
            return self._fresh_draw(self._more_room(request))
        update: dict[str, object] = {
            "temperature": min(request.temperature, _LOW_TEMPERATURE)
            if request.temperature > _LOW_TEMPERATURE
            else 0.0
        }
        if request.stage == "structuring":
            clamped = clamp_to_json(request.messages)
            if clamped == request.messages and request.temperature == 0:
                # Already clamped and greedy: the same request would give the same answer again.
                update = {"temperature": _RESAMPLE_TEMPERATURE, "seed": _next_seed(request)}
            update["messages"] = clamped
        return request.model_copy(update=update)

    @staticmethod
    def _redraw_loop(request: CompletionRequest, completion: Completion | None) -> bool:
        """Whether a cut-off answer is a sampled free-writing loop, to redraw at the same budget."""
        return (
            request.stage != "structuring"
            and request.temperature > 0
            and request.seed is not None
            and completion is not None
            and looping(completion.text)
        )

    @staticmethod
    def _fresh_draw(request: CompletionRequest) -> CompletionRequest:
        """A sampled answer that ran on is usually a loop (profile `redraws_loops`), and more room
        alone would only lengthen it: a sampled request also gets another (still reproducible) seed.
        Not a cooler temperature: measured on SmolLM2, colder sampling loops more, not less."""
        if request.temperature <= 0 or request.seed is None:
            return request
        return request.model_copy(update={"seed": _next_seed(request)})

    def _more_room(self, request: CompletionRequest) -> CompletionRequest:
        window = self.provider.context_window
        prompt = self._prompt_tokens(request.messages)
        wanted = request.max_tokens * 2
        room = min(wanted, window - prompt)
        if room > request.max_tokens:
            return request.model_copy(update={"max_tokens": room})
        messages = self._shorten(request.messages, wanted - (window - prompt))
        room = min(wanted, window - self._prompt_tokens(messages))
        return request.model_copy(update={"messages": messages, "max_tokens": max(room, request.max_tokens)})

    def _prompt_tokens(self, messages: tuple[Message, ...]) -> int:
        return sum(self.provider.count_tokens(m.content) for m in messages)

    def _shorten(self, messages: tuple[Message, ...], tokens_to_free: int) -> tuple[Message, ...]:
        users = [i for i, m in enumerate(messages) if m.role == "user"]
        if not users:
            return messages
        index = max(users, key=lambda i: len(messages[i].content))
        text = messages[index].content
        tokens = max(1, self.provider.count_tokens(text))
        chars_per_token = len(text) / tokens
        # Free what the answer needs, but keep at least half of the message.
        free_chars = int(tokens_to_free * chars_per_token) + len(_ELLIPSIS)
        keep = max(len(text) // 2, len(text) - free_chars)
        if keep >= len(text) - len(_ELLIPSIS):
            return messages
        shortened = keep_head_and_tail(text, keep)
        return (
            *messages[:index],
            messages[index].model_copy(update={"content": shortened}),
            *messages[index + 1 :],
        )


# A sentence ends at its final mark in any script (not after a digit: "3." numbers a list).
_SENTENCE_END = re.compile(r"(?<!\d)[.!?…。！？؟।][\"')\]”’」』]*(?=\s|$)|[。！？][」』]*")


def whole_sentences(text: str) -> str:
    """`text` without its unfinished last sentence and without sentences it already said.

    Lines are kept (a numbered outline stays an outline), and so are paragraph breaks (one blank
    line between paragraphs); a line left empty is dropped. Sentences are text/segment's.
    """
    lines = [line.strip() for line in text.strip().splitlines()]
    if lines:
        ends = list(_SENTENCE_END.finditer(lines[-1]))
        lines[-1] = lines[-1][: ends[-1].end()] if ends else ""
    seen: set[str] = set()
    kept: list[str] = []
    for line in lines:
        if not line:
            if kept and kept[-1]:
                kept.append("")  # a paragraph break
            continue
        fresh = []
        for sentence in sentences(line):
            key = word_key(sentence)
            if key and key not in seen:
                seen.add(key)
                fresh.append(sentence)
        if re.search(r"[^\W\d_]", " ".join(fresh)):  # some words left, not only a list number
            kept.append(" ".join(fresh))
    return "\n".join(kept).strip()


_LOOP_SENTENCE_WORDS = 4  # a repeated sentence this long is a loop, not a refrain ("Yes.")
_LOOP_SHINGLE = 6  # ... as is any run of this many words said three times
_LOOP_SHINGLE_REPEATS = 3


def looping(text: str) -> bool:
    """Whether `text` repeats itself the way a small model's runaway does.

    A loop: a sentence of four words or more said twice, or a run of six words said three times
    (a loop without punctuation). Prose that only shares short phrases is not a loop. Words and
    sentences are text/segment's (any script).
    """
    seen: set[str] = set()
    for sentence in sentences(text):
        key = word_key(sentence)
        if len(key.split()) < _LOOP_SENTENCE_WORDS:
            continue
        if key in seen:
            return True
        seen.add(key)
    tokens = words(text)
    counts: dict[tuple[str, ...], int] = {}
    for i in range(len(tokens) - _LOOP_SHINGLE + 1):
        shingle = tuple(tokens[i : i + _LOOP_SHINGLE])
        counts[shingle] = counts.get(shingle, 0) + 1
        if counts[shingle] >= _LOOP_SHINGLE_REPEATS:
            return True
    return False


def is_retryable(error: BaseException) -> bool:
    if isinstance(error, SchemaValidationError):
        return error.retryable
    return isinstance(error, ProviderError) and error.retryable


def clamp_to_json(messages: tuple[Message, ...]) -> tuple[Message, ...]:
    """The messages with the JSON clamp leading the system prompt (added once)."""
    if messages and messages[0].role == "system":
        system = messages[0].content
        if system.startswith(JSON_CLAMP):
            return messages
        clamped = Message(role="system", content=f"{JSON_CLAMP}\n\n{system}" if system else JSON_CLAMP)
        return (clamped, *messages[1:])
    return (Message(role="system", content=JSON_CLAMP), *messages)


def keep_head_and_tail(text: str, keep: int) -> str:
    """`text` cut to about `keep` characters: its beginning and its end, joined by a marker."""
    if keep >= len(text):
        return text
    head = keep // 2
    tail = keep - head
    return text[:head].rstrip() + _ELLIPSIS + text[len(text) - tail :].lstrip()
