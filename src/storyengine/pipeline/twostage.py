"""One component call in two stages: free writing, then structuring into a typed object.

Stage 1 renders `{component}_freeform` and asks for text. Stage 2 renders
`{component}_structuring` with the stage-1 text and the decoding schema, asks with the
provider's native structured output (strict mode), validates, repairs once, and when that
still fails re-asks once with the validation errors shown to the model.

The answering provider decides how it is asked: a component's chain is walked route by route
(routing/router.py: consecutive providers sharing a model profile), and each route gets the
step the way its profile needs (in parts for `tiny`, whole objects for `standard`), fitted
into its own context window with its own tokenizer. The step metadata says which provider
answered, with which profile and mode, and which routes failed before it.

`TwoStage` walks the routes and runs the stages; the rest is in modules of its own, re-exported
here: what a step records (stepmeta.py), how an answer is judged and its text findings re-asked
(answer_checks.py), fitting a request into a route's window (fitting.py), and stage 2 in parts
for small models (structure_parts.py).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from pydantic import BaseModel

from .. import streaming
from ..bible import FactCheck
from ..budget import clip_middle
from ..config import Settings, StageDefaults
from ..errors import (
    AllProvidersFailed,
    ProviderError,
    SchemaValidationError,
    StoryEngineError,
    StructuringError,
)
from ..prompts.render import render
from ..providers.base import LOOP_STOP
from ..routing.instrument import short_error
from ..routing.router import Route, Router
from ..structuring import decoding_schema, format_errors, validate_json_payload
from ..text.language import detect
from ..text.review import Finding, kept
from ..text.rules import Context
from ..types import Completion, CompletionRequest, Message
from .answer_checks import Checked as Checked
from .answer_checks import TextFindings as TextFindings
from .answer_checks import TextPolicy, checker
from .fitting import SUMMARIZABLE as SUMMARIZABLE
from .fitting import SUMMARY_WORDS as SUMMARY_WORDS
from .fitting import build_request, fitted, summary_request
from .growing_json import growing
from .stepmeta import StepMeta as StepMeta
from .structure_parts import PART_MAX_TOKENS as PART_MAX_TOKENS
from .structure_parts import Plan as Plan
from .structure_parts import structure_in_parts
from .structure_parts import without_patterns as without_patterns

logger = logging.getLogger("storyengine")
# What a next-turn structuring prompt says where its template puts the draft: it is the answer above.
NEXT_TURN_DRAFT = "(your text above)"
# Scene conversations kept for their dialogues: a dialogue is drafted soon after its scene (at most
# `concurrency` scenes are in flight), so a few cover every one.
KEPT_CONVERSATIONS = 16
R = TypeVar("R")
# A stage-1 draft's problems ([] when it is fine); a check that asks a model returns them awaitable.
DraftCheck = Callable[[str], list[str] | Awaitable[list[str]]]
# How good a draft is, by code, given its text and its problems (higher is better).
DraftScore = Callable[[str, list[str]], float]
# A route that fails with one of these hands the step to the next route of the chain.
_ROUTE_FAILURES = (ProviderError, AllProvidersFailed, StructuringError, SchemaValidationError)

T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class Continuation:
    """A draft asked as the next turn of an earlier one's conversation: that draft's component and
    text, and the context its own template is rendered with there (what the conversation already
    holds is left out)."""

    component: str
    draft: str
    context: dict[str, Any]


class TwoStage:
    """Runs the two stages of a component against a router, route by route."""

    def __init__(self, router: Router, settings: Settings) -> None:
        self.router = router
        self.settings = settings
        self.strict = settings.structuring.strict
        # The messages each kept draft was written from, by (component, draft): stage 2 may go on
        # with that conversation (`next_turn_request`), and a scene's dialogue with its scene's
        # (`freeform(after=...)`); one entry per draft not yet structured, and the last
        # KEPT_CONVERSATIONS scene conversations for their dialogues.
        self.conversations: dict[tuple[str, str], tuple[Message, ...]] = {}
        self.kept_conversations: dict[tuple[str, str], tuple[Message, ...]] = {}

    def next_turn(self, route: Route) -> bool:
        """Whether `route` structures a whole object as the next turn of its draft's conversation."""
        layout = self.settings.structuring.layout
        return layout == "next_turn" or (layout == "auto" and route.profile.structures_next_turn)

    def drafts_next_turn(self, route: Route) -> bool:
        """Whether `route` drafts a step that goes on from an earlier draft (a dialogue from its
        scene's) as the next turn of that draft's conversation."""
        layout = self.settings.structuring.layout
        return layout == "next_turn" or (layout == "auto" and route.profile.drafts_next_turn)

    def keep_conversation(self, component: str, draft: str) -> None:
        """Keep the conversation `draft` was written in past its structuring, for a later step to go
        on with (a scene's, for its dialogue); the oldest beyond KEPT_CONVERSATIONS are dropped."""
        conversation = self.conversations.get((component, draft))
        if conversation is None:
            return
        self.kept_conversations[(component, draft)] = conversation
        while len(self.kept_conversations) > KEPT_CONVERSATIONS:
            self.kept_conversations.pop(next(iter(self.kept_conversations)))

    def in_parts(self, route: Route) -> bool:
        """Whether `route` structures piece by piece (strict mode and its profile)."""
        return self.strict and route.profile.structure_in_parts

    async def _by_route(self, component: str, meta: StepMeta, step: Callable[[Route], Awaitable[R]]) -> R:
        """`step` on the component's first route; on failure, on the next one, asked its own way.

        A step with `meta.start` set begins at that provider of the chain (a resumed step that failed)."""
        routes = self.router.routes(component, start=meta.start)
        if meta.start:
            meta.first_provider = routes[0].names[0]
        for index, route in enumerate(routes):
            meta.profile = route.profile.name
            try:
                return await step(route)
            except _ROUTE_FAILURES as exc:
                if index + 1 == len(routes):
                    raise
                target = routes[index + 1]
                reason = short_error(exc)
                meta.fallbacks.append({"from": route.names, "to": target.names, "error": reason})
                logger.warning(
                    "%s: %s failed (%s); asking %s (%s profile)",
                    component,
                    "+".join(route.names),
                    reason,
                    "+".join(target.names),
                    target.profile.name,
                )
        raise AssertionError("unreachable: a chain has at least one route")

    # -- stage 1 --
    async def freeform(
        self,
        component: str,
        context: dict[str, Any],
        meta: StepMeta,
        *,
        check: DraftCheck | None = None,
        drafts: int = 1,
        score: DraftScore | None = None,
        after: Continuation | None = None,
    ) -> str:
        """Stage 1: the draft. `drafts` drafts are drawn (each its own seed of `meta.seeds`); the best is
        kept: the one with the highest `score` (computed by code, drafts.draft_score, which counts
        the problems `check` finds: a draft that loops, ignores its beat, invents people), or
        without a score the one with the fewest problems. When the
        best still has problems, more are drawn, up to `retry.attempts` draws in all, as long as
        each is better than the best before it (a redraw that is no better says another is
        unlikely to help: each costs a whole draft). The kept draft's problems, and every draft's
        seed, score and problem count, stay in the metadata.

        With `after` (a dialogue after its scene) the draft is asked as the next turn of that earlier
        draft's conversation where the route's profile says so and the conversation is known and
        leaves room (`meta.layout` "next_turn"), else from its own prompt ("fresh")."""
        started = time.perf_counter()
        defaults = self.settings.narrative.defaults.freeform
        assert meta.seeds is not None
        wanted = max(1, drafts)
        best: tuple[tuple[float, float], str, bool, int | None, list[str]] | None = None
        drawn: list[dict[str, Any]] = []
        asked: dict[int | None, tuple[Message, ...]] = {}  # each draw's messages, by its seed
        for draw in range(max(wanted, self.settings.retry.attempts if check else 1)):
            draw_seed = meta.seeds.draft(draw, defaults.seed)

            async def ask(route: Route, draw_seed: int | None = draw_seed) -> Completion:
                template = f"{component}_freeform"
                request = None
                if after is not None and self.drafts_next_turn(route):
                    request = await self.continued_request(template, component, after, defaults, route)
                if after is not None:
                    meta.layout = "fresh" if request is None else "next_turn"
                if request is None:
                    request = await self.fitted_request(template, component, context, defaults, meta, route)
                asked[draw_seed] = request.messages
                return await route.generator.generate(request.model_copy(update={"seed": draw_seed}), None)

            completion = await self._by_route(component, meta, ask)
            meta.add_usage(completion)
            text = completion.text.strip()
            problems = check(text) if check else []
            if inspect.isawaitable(problems):  # a check that asks a model (the bible's facts)
                problems = await problems
            value = score(text, problems) if score else 0.0
            drawn.append({"seed": draw_seed, "score": value, "problems": len(problems)})
            # The score by code counts the problems already; without one, fewer problems are better.
            key = (value, 0) if score else (-len(problems), 0.0)
            # A redraw goes on only while each has fewer problems (a better score alone does not
            # earn another whole draft).
            fewer = best is None or len(problems) < len(best[4])
            if best is None or key > best[0]:
                # Cut off at max_tokens, or stopped by the provider in a loop (the loop cut off).
                stopped = completion.truncated or completion.finish_reason == LOOP_STOP
                best = (key, text, stopped, draw_seed, problems)
            if draw + 1 >= wanted and (not best[4] or not fewer):
                break
        assert best is not None
        _, meta.stage1_text, meta.stage1_cut_off, meta.seed, meta.draft_problems = best
        if meta.seed in asked and meta.stage1_text:
            self.conversations[(component, meta.stage1_text)] = asked[meta.seed]
        meta.redraws = len(drawn) - wanted if len(drawn) > wanted else 0
        meta.drafts = drawn if wanted > 1 or score else []
        meta.seconds["freeform"] = time.perf_counter() - started
        return meta.stage1_text

    async def check_facts(self, component: str, facts: list[str], text: str, meta: StepMeta) -> list[str]:
        """The bible's `facts` that `text` contradicts, asked of the first route of `component` whose
        profile checks facts (none: no check). Advisory: a provider failure or an answer that stays
        invalid finds nothing (said in `meta.fact_checks`); its tokens count in `meta`."""
        route = next((r for r in self.router.routes(component) if r.profile.checks_facts), None)
        if route is None or not facts:
            return []
        schema = decoding_schema(FactCheck)
        context = {
            "facts": "\n".join(f"{i}. {fact}" for i, fact in enumerate(facts, 1)),
            "scene": text,
            "schema": json.dumps(schema, separators=(",", ":")),
        }
        asked = StepMeta(component, seeds=meta.seeds)
        defaults = self.settings.narrative.defaults.structuring
        request = await self.fitted_request(
            "factcheck_structuring", component, context, defaults, asked, route
        )
        request = request.model_copy(
            update={"json_schema": schema if self.strict else None, "schema_name": FactCheck.__name__}
        )

        def validate(answer: str) -> FactCheck:
            return validate_json_payload(answer, FactCheck, context={"facts": len(facts)}, repair=self.strict)

        try:
            completion = await self.ask_checked(component, request, validate, asked, route, reask=False)
        except StoryEngineError as exc:
            meta.fact_checks.append(f"no answer ({short_error(exc)})")
            return []
        finally:
            for kind, count in asked.tokens.items():
                meta.tokens[kind] += count
        found: FactCheck = completion.value
        meta.fact_checks.append(f"contradicted: {found.contradicted or 'none'}")
        why = f": {found.why}" if found.why else ""
        return [f"contradicts the bible's fact {n} ({facts[n - 1]}){why}" for n in found.contradicted]

    # -- stage 2 --
    async def structure(
        self,
        component: str,
        context: dict[str, Any],
        model: type[T],
        schema: dict[str, Any],
        meta: StepMeta,
        *,
        parts: tuple[str, Plan] | None = None,
        validation_context: dict[str, Any] | None = None,
        review: Context | None = None,
    ) -> T:
        """The typed object, from each route in turn: in `parts` (notes, plan) where its profile
        says so, else whole, from `context` and the decoding `schema`. Every answer is reviewed by
        the text rules (`review`: what they may know; the language is detected from the draft)."""
        draft = str(context.get("draft") or (parts[0] if parts else ""))
        reviewing = review or Context()
        if not reviewing.language:
            reviewing = replace(reviewing, language=detect(draft))

        async def attempt(route: Route) -> T:
            meta.findings = []  # what a route that failed found is not in the object kept
            if parts is not None and self.in_parts(route):
                notes, plan = parts
                return await structure_in_parts(
                    self,
                    component,
                    notes,
                    plan,
                    model,
                    meta,
                    route,
                    reviewing,
                    validation_context=validation_context,
                )
            return await self._structure_whole(
                component,
                context,
                model,
                schema,
                meta,
                route,
                reviewing,
                validation_context=validation_context,
            )

        try:
            return await self._by_route(component, meta, attempt)
        finally:
            self.conversations.pop((component, draft), None)

    async def _structure_whole(
        self,
        component: str,
        context: dict[str, Any],
        model: type[T],
        schema: dict[str, Any],
        meta: StepMeta,
        route: Route,
        reviewing: Context,
        *,
        validation_context: dict[str, Any] | None = None,
    ) -> T:
        started = time.perf_counter()
        defaults = self.settings.narrative.defaults.structuring
        context = {**context, "schema": json.dumps(schema, separators=(",", ":"))}
        template = f"{component}_structuring"
        request = await self.next_turn_request(template, component, context, defaults, meta, route)
        if request is None:
            meta.layout = "fresh"
            request = await self.fitted_request(template, component, context, defaults, meta, route)
        request = request.model_copy(
            update={"json_schema": schema if self.strict else None, "schema_name": model.__name__}
        )
        meta.structured_mode = route.structured_mode if self.strict else "none"

        def validate(text: str) -> Checked:
            findings: list[Finding] = []
            value = validate_json_payload(
                text,
                model,
                context=validation_context,
                repair=self.strict,
                reviewing=reviewing,
                findings=findings,
            )
            return Checked(value, findings)

        try:
            with streaming.listening(growing(model, reviewing) or streaming.current()):
                completion = await self.ask_checked(
                    component, request, validate, meta, route, reask=self.strict
                )
        finally:
            meta.seconds["structuring"] = time.perf_counter() - started
        meta.stage2_text = completion.text
        meta.structured_mode = completion.structured_mode if self.strict else "none"
        value: T = completion.value
        return value

    async def ask_checked(
        self,
        component: str,
        request: CompletionRequest,
        validate: Callable[[str], Any],
        meta: StepMeta,
        route: Route,
        *,
        reask: bool,
    ) -> Completion:
        """One structuring call on `route`; when it stays invalid, one re-ask with the errors.

        The completion returned carries the validated value (`completion.value`)."""
        attempts: list[dict[str, Any]] = []
        policy = TextPolicy()
        check = checker(validate, attempts, policy)
        try:
            completion = await route.generator.generate(request, check)
        except SchemaValidationError as exc:
            if not reask:
                raise self._give_up(component, attempts) from exc
            meta.reasked = True
            policy.final = True
            try:
                reasked = await self._reask_request(request, exc, route)
                completion = await route.generator.generate(reasked, check)
            except SchemaValidationError as final:
                if policy.held is None:
                    raise self._give_up(component, attempts) from final
                # The first answer was whole and only its words had findings: it is kept.
                held, checked = policy.held
                completion = held.model_copy(update={"value": checked})
        finally:
            meta.attempts += len(attempts) or 1
        meta.add_usage(completion)
        value = completion.value
        if isinstance(value, Checked):
            meta.findings += [f.as_dict() for f in kept(value.findings)]
            completion = completion.model_copy(update={"value": value.value})
        return completion

    async def _reask_request(
        self, request: CompletionRequest, exc: SchemaValidationError, route: Route
    ) -> CompletionRequest:
        reask = render("reask", {"previous": clip_middle(exc.raw_text, 1500), "errors": format_errors(exc)})
        messages = request.messages + reask.messages
        room = await asyncio.to_thread(route.budget().room_for_answer, messages)
        max_tokens = min(request.max_tokens, max(64, room))
        return request.model_copy(
            update={"messages": messages, "attempt": request.attempt + 1, "max_tokens": max_tokens}
        )

    def _give_up(self, component: str, attempts: list[dict[str, Any]]) -> StructuringError:
        tried = len(attempts) or 1
        return StructuringError(
            f"{component}: the model gave no valid {component} object in {tried} attempt(s). "
            f"Try a larger model or another provider (see `storyengine logs --failed`; the raw outputs "
            f"are in {self.router.invalid_outputs.directory}).",
            component=component,
            attempts=attempts,
        )

    # -- budgeting --
    async def fitted_request(
        self,
        template: str,
        component: str,
        context: dict[str, Any],
        defaults: StageDefaults,
        meta: StepMeta,
        route: Route,
    ) -> CompletionRequest:
        """`template` rendered into a request that fits `route`'s window (fitting.fitted), long
        context values summarized by `summarize`."""
        return await fitted(template, component, context, defaults, meta, route, self.summarize)

    async def next_turn_request(
        self,
        template: str,
        component: str,
        context: dict[str, Any],
        defaults: StageDefaults,
        meta: StepMeta,
        route: Route,
    ) -> CompletionRequest | None:
        """Stage 2 as the next turn of stage 1 (where `next_turn` says so): the draft's own messages,
        the draft as the model's answer, then `template` (its guardrails and schema too) as one user
        turn that points at the text above instead of repeating it. The prefix is the same bytes as
        the draft's request, so a server's prompt cache and the embedded KV read it once. None when
        the route lays it out fresh, the draft's messages are not known (a resumed run) or the
        conversation leaves too little room for the answer."""
        draft = str(context.get("draft") or "")
        if not self.next_turn(route):
            return None
        after = Continuation(component, draft, {**context, "draft": NEXT_TURN_DRAFT})
        request = await self.continued_request(template, component, after, defaults, route)
        if request is None:
            return None
        meta.layout = "next_turn"
        if meta.seeds is not None:
            request = request.model_copy(update={"seed": meta.seeds.structuring(defaults.seed)})
        return request

    async def continued_request(
        self,
        template: str,
        component: str,
        after: Continuation,
        defaults: StageDefaults,
        route: Route,
    ) -> CompletionRequest | None:
        """`template` (rendered with `after.context`) as one user turn after the conversation
        `after.draft` was written in and that draft as the model's answer: the same bytes as the
        draft's request up to there, so a server's prompt cache and the embedded KV read them once.
        None when that conversation is not known (a resumed run) or leaves too little room."""
        key = (after.component, after.draft)
        conversation = self.conversations.get(key) or self.kept_conversations.get(key)
        if conversation is None:
            return None
        prompt = render(template, after.context)
        ask = "\n\n".join(m.content for m in prompt.messages)
        messages = (
            *conversation,
            Message(role="assistant", content=after.draft),
            Message(role="user", content=ask),
        )
        budget = route.budget()
        room = await asyncio.to_thread(budget.room_for_answer, messages)
        if room < defaults.max_tokens:
            return None
        return build_request(replace(prompt, messages=messages), component, defaults, budget, room)

    async def summarize(self, text: str, *, words: int) -> str:
        """Summarize `text` with the `summarize` template (component "summarize")."""
        defaults = self.settings.narrative.defaults.freeform
        structuring = self.settings.narrative.defaults.structuring

        async def ask(route: Route) -> Completion:
            request = await summary_request(text, words, route.budget(), defaults, structuring)
            return await route.generator.generate(request, None)

        completion = await self._by_route("summarize", StepMeta("summarize"), ask)
        return completion.text.strip()
