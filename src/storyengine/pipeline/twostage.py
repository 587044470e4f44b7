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
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ..bible import FactCheck
from ..budget import Budget, clip_middle
from ..config import Settings, StageDefaults
from ..errors import (
    AllProvidersFailed,
    ProviderError,
    SchemaValidationError,
    StoryEngineError,
    StructuringError,
)
from ..failures import InvalidOutputLog
from ..hashing import prompt_hash
from ..prompts.render import RenderedPrompt, render
from ..providers.base import LOOP_STOP
from ..routing.instrument import short_error
from ..routing.router import Route, Router
from ..seeds import StepSeeds
from ..structuring import decoding_schema, format_errors, validate_json_payload
from ..text.language import detect
from ..text.review import Finding, kept
from ..text.rules import Context
from ..types import Completion, CompletionRequest
from .parts import Part, answer_token_bound, instruction_echo

logger = logging.getLogger("storyengine")
R = TypeVar("R")
Plan = Sequence[Part | Callable[[dict[str, Any]], Part]]
# A stage-1 draft's problems ([] when it is fine); a check that asks a model returns them awaitable.
DraftCheck = Callable[[str], list[str] | Awaitable[list[str]]]
# How good a draft is, by code, given its text and its problems (higher is better).
DraftScore = Callable[[str, list[str]], float]
# A route that fails with one of these hands the step to the next route of the chain.
_ROUTE_FAILURES = (ProviderError, AllProvidersFailed, StructuringError, SchemaValidationError)

T = TypeVar("T", bound=BaseModel)

# Context values that may be summarized when a prompt does not fit, most expendable first.
SUMMARIZABLE = ("previous", "earlier", "story", "plot", "evaluation", "draft", "text")
SUMMARY_WORDS = 90
PART_MAX_TOKENS = 200  # one part is a few short fields (when its schema does not bound it)


def without_patterns(schema: Any) -> Any:
    """`schema` without its `pattern` keys (what a prompt shows; the grammar keeps them)."""
    if isinstance(schema, dict):
        return {k: without_patterns(v) for k, v in schema.items() if k != "pattern"}
    if isinstance(schema, list):
        return [without_patterns(v) for v in schema]
    return schema


def _as_schema_error(exc: ValidationError, assembled: dict[str, Any]) -> SchemaValidationError:
    errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return SchemaValidationError(str(exc), raw_text=json.dumps(assembled), validation_errors=errors)


def _placed(field: str, where: str, scalar: str | None) -> str:
    """A part's finding's field as a path in the object ("facts[0]" for the scalar part "fact")."""
    if not where:
        return field
    if scalar is not None and field.split(".")[0].split("[")[0] == scalar:
        return where + field[len(scalar) :]
    return f"{where}.{field}"


@dataclass(frozen=True)
class Checked:
    """A validated value and what the text rules found in it."""

    value: Any
    findings: list[Finding]

    @property
    def open(self) -> list[Finding]:
        return [f for f in self.findings if f.action == "reask"]


class TextFindings(SchemaValidationError):
    """A shape-valid answer with text findings no code could repair: re-asked once, not redrawn."""

    retryable = False


@dataclass
class _TextPolicy:
    """Text findings are re-asked once; after that the better of the two answers is kept."""

    final: bool = False
    held: tuple[Completion, Checked] | None = None


@dataclass
class StepMeta:
    """What one component call did: raw texts, mode, attempts, what was summarized."""

    component: str
    seeds: StepSeeds | None = None  # its seeds (seeds.py); None: the config's, for a lone call
    round: int = 0  # the resume round of the run that made it (0: its first attempt)
    start: int = 0  # where in its chain it was asked first (a resume moves a failed step on)
    first_provider: str = ""  # that provider, when it is not the chain's first
    seed: int | None = None  # the stage-1 seed of the draft it kept
    redraws: int = 0  # drafts drawn again because a check found problems
    drafts: list[dict[str, Any]] = field(default_factory=list)  # each draft's seed, score, problems
    draft_problems: list[str] = field(default_factory=list)  # what the kept draft still has
    stage1_text: str = ""
    stage1_cut_off: bool = False  # cut off at max_tokens or stopped in a loop; kept as far as it went
    stage2_text: str = ""
    structured_mode: str = ""
    provider: str = ""  # who answered the last call of the step
    model: str = ""
    profile: str = ""
    fallbacks: list[dict[str, Any]] = field(default_factory=list)  # routes that failed before it
    attempts: int = 0
    reasked: bool = False
    parts_left_out: list[str] = field(default_factory=list)  # optional parts the model could not write
    summarized: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=lambda: {"prompt": 0, "completion": 0})
    fact_checks: list[str] = field(default_factory=list)  # what each check of the bible's facts found
    # What the text rules found in the answer kept (text/review.py): repaired, dropped or nulled by
    # code, or kept with the text after one re-ask (a word never fails a step).
    findings: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.seeds is None:
            self.seeds = StepSeeds(None, self.component, self.round)
        self.round = self.seeds.round

    def add_usage(self, completion: Completion) -> None:
        self.tokens["prompt"] += completion.usage.prompt_tokens
        self.tokens["completion"] += completion.usage.completion_tokens
        self.provider, self.model = completion.provider, completion.model

    def as_dict(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "round": self.round,
            **({"start": self.start, "first_provider": self.first_provider} if self.start else {}),
            "seed": self.seed,
            "redraws": self.redraws,
            **({"drafts": self.drafts} if self.drafts else {}),
            "draft_problems": self.draft_problems,
            **({"fact_checks": self.fact_checks} if self.fact_checks else {}),
            "findings": self.findings,
            "stage1_text": self.stage1_text,
            "stage1_cut_off": self.stage1_cut_off,
            "stage2_text": self.stage2_text,
            "structured_mode": self.structured_mode,
            "provider": self.provider,
            "model": self.model,
            "profile": self.profile,
            "fallbacks": self.fallbacks,
            "attempts": self.attempts,
            "reasked": self.reasked,
            "parts_left_out": self.parts_left_out,
            "summarized": self.summarized,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "tokens": dict(self.tokens),
        }


class TwoStage:
    """Runs the two stages of a component against a router, route by route."""

    def __init__(
        self, router: Router, settings: Settings, invalid_log: InvalidOutputLog | None = None
    ) -> None:
        self.router = router
        self.settings = settings
        self.invalid_log = invalid_log
        self.strict = settings.structuring.strict

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
    ) -> str:
        """Stage 1: the draft. `drafts` drafts are drawn (each its own seed of `meta.seeds`); the best is
        kept: the one with the highest `score` (computed by code, drafts.draft_score, which counts
        the problems `check` finds: a draft that loops, ignores its beat, invents people), or
        without a score the one with the fewest problems. When the
        best still has problems, more are drawn, up to `retry.attempts` draws in all, as long as
        each is better than the best before it (a redraw that is no better says another is
        unlikely to help: each costs a whole draft). The kept draft's problems, and every draft's
        seed, score and problem count, stay in the metadata."""
        started = time.perf_counter()
        defaults = self.settings.narrative.defaults.freeform
        assert meta.seeds is not None
        wanted = max(1, drafts)
        best: tuple[tuple[float, float], str, bool, int | None, list[str]] | None = None
        drawn: list[dict[str, Any]] = []
        for draw in range(max(wanted, self.settings.retry.attempts if check else 1)):
            draw_seed = meta.seeds.draft(draw, defaults.seed)

            async def ask(route: Route, draw_seed: int | None = draw_seed) -> Completion:
                request = await self._fitted(
                    f"{component}_freeform", component, context, defaults, meta, route
                )
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
        request = await self._fitted("factcheck_structuring", component, context, defaults, asked, route)
        request = request.model_copy(
            update={"json_schema": schema if self.strict else None, "schema_name": FactCheck.__name__}
        )

        def validate(answer: str) -> FactCheck:
            return validate_json_payload(answer, FactCheck, context={"facts": len(facts)}, repair=self.strict)

        try:
            completion = await self._ask(component, request, validate, asked, route, reask=False)
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
                return await self._structure_parts(
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

        return await self._by_route(component, meta, attempt)

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
        request = await self._fitted(template, component, context, defaults, meta, route)
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
            completion = await self._ask(component, request, validate, meta, route, reask=self.strict)
        finally:
            meta.seconds["structuring"] = time.perf_counter() - started
        meta.stage2_text = completion.text
        meta.structured_mode = completion.structured_mode if self.strict else "none"
        value: T = completion.value
        return value

    async def _ask(
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
        invalid: list[tuple[Completion, SchemaValidationError, int]] = []
        policy = _TextPolicy()
        check = self._checker(validate, attempts, invalid, policy)
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
            if invalid and self.invalid_log is not None:  # file writes: off the event loop
                await asyncio.to_thread(self._log_invalid, request, invalid)
        meta.add_usage(completion)
        value = completion.value
        if isinstance(value, Checked):
            meta.findings += [f.as_dict() for f in kept(value.findings)]
            completion = completion.model_copy(update={"value": value.value})
        return completion

    # -- stage 2, in parts (small models) --
    async def _structure_parts(
        self,
        component: str,
        draft: str,
        plan: Plan,
        model: type[T],
        meta: StepMeta,
        route: Route,
        reviewing: Context,
        *,
        validation_context: dict[str, Any] | None = None,
    ) -> T:
        """Fill the object one `Part` at a time (see parts.py), then validate it whole."""
        started = time.perf_counter()
        meta.structured_mode = f"{route.structured_mode} (in parts)"
        meta.parts_left_out = []
        assembled: dict[str, Any] = {}
        earlier: list[str] = []
        answers: list[str] = []
        try:
            left_out: set[str | None] = set()
            for entry in plan:
                part = entry if isinstance(entry, Part) else entry(assembled)
                if part.item_of is not None and part.item_of in left_out:
                    meta.parts_left_out.append(f"{part.what}: left out with the rest of its list")
                    continue
                try:
                    value, text = await self._part(
                        component, draft, part, assembled, earlier, meta, route, reviewing
                    )
                except StructuringError as exc:
                    made = self._from_notes(part, draft, assembled)
                    if made is not None:
                        value, text = made, json.dumps(made, ensure_ascii=False)
                        meta.parts_left_out.append(f"{part.what}: made from the draft (no valid answer)")
                        part.merge(assembled, value)
                        earlier.append(part.describe(value))
                        answers.append(text)
                        continue
                    if not part.optional:
                        raise
                    left_out.add(part.item_of)
                    last = (exc.attempts or [{}])[-1].get("errors", "")
                    meta.parts_left_out.append(f"{part.what}: no valid answer ({str(last).strip()[:200]})")
                    continue
                part.merge(assembled, value)
                earlier.append(part.describe(value))
                answers.append(text)
        finally:
            meta.seconds["structuring"] = time.perf_counter() - started
        meta.stage2_text = "\n".join(answers)
        try:
            return model.model_validate(assembled, context=validation_context)
        except ValidationError as exc:
            raise StructuringError(
                f"{component}: the parts the model wrote do not make a valid {component}: "
                f"{format_errors(_as_schema_error(exc, assembled))}",
                component=component,
                attempts=[{"ok": False, "assembled": assembled}],
            ) from exc

    @staticmethod
    def _from_notes(part: Part, draft: str, assembled: dict[str, Any]) -> dict[str, Any] | None:
        """A required part's value made by code from the notes, when it passes the part's checks."""
        if part.from_notes is None:
            return None
        fields = set(part.schema["properties"])
        try:
            value = part.model.model_validate(part.from_notes(part.notes(draft))).model_dump(include=fields)
        except ValidationError:
            return None
        return None if part.check and part.check(value, assembled) else value

    async def _part(
        self,
        component: str,
        draft: str,
        part: Part,
        assembled: dict[str, Any],
        earlier: list[str],
        meta: StepMeta,
        route: Route,
        reviewing: Context,
    ) -> tuple[dict[str, Any], str]:
        defaults = self.settings.narrative.defaults.structuring
        # The prompt shows the part's shape; its patterns (names, openers) are for the grammar, which
        # enforces them anyway, and would cost a tiny model hundreds of tokens of regex to read.
        # (Measured: a shorter shape, `{"name": "", "purpose": ""}`, saved a fifth of the prompt
        # tokens but SmolLM2 then copied its beat's opener into the name, or the placeholder
        # "<up to 160 characters>" into a line: the lengths and types of the schema keep it apart.)
        schema_text = json.dumps(without_patterns(part.schema), separators=(",", ":"), ensure_ascii=False)
        shown = "\n".join(earlier) if part.sees_earlier else ""
        context = {"draft": part.notes(draft), "earlier": shown, "what": part.what, "schema": schema_text}
        request = await self._fitted("part_structuring", component, context, defaults, meta, route)
        request = request.model_copy(
            update={
                "json_schema": part.schema,
                "schema_name": part.model.__name__,
                "max_tokens": min(request.max_tokens, answer_token_bound(part.schema, PART_MAX_TOKENS)),
            }
        )
        fields = set(part.schema["properties"])
        where = f"{part.item_of}[{len(assembled.get(part.item_of) or [])}]" if part.item_of else ""

        def validate(text: str) -> Checked:
            findings: list[Finding] = []
            try:
                value = validate_json_payload(
                    text, part.model, reviewing=reviewing, findings=findings
                ).model_dump(include=fields)
                problem = instruction_echo(part, value, assembled) or (
                    part.check(value, assembled) if part.check else None
                )
                if problem:
                    errors = [{"loc": [], "msg": problem, "type": "value_error"}]
                    raise SchemaValidationError(problem, raw_text=text, validation_errors=errors)
            except SchemaValidationError as exc:
                # A part that can be left out or made from the notes gets one answer and one re-ask:
                # measured, a tiny model's further draws of a repeated fact repeat it (7 attempts
                # thrown away in one story).
                exc.retryable = not (part.optional or part.from_notes)
                raise
            # Where the finding sits in the object: a scalar item's field is the item itself.
            return Checked(value, [replace(f, field=_placed(f.field, where, part.scalar)) for f in findings])

        completion = await self._ask(component, request, validate, meta, route, reask=True)
        meta.structured_mode = f"{completion.structured_mode} (in parts)"
        return completion.value, completion.text

    def _checker(
        self,
        validate: Callable[[str], Any],
        attempts: list[dict[str, Any]],
        invalid: list[tuple[Completion, SchemaValidationError, int]],
        policy: _TextPolicy,
    ) -> Callable[[Completion], Any]:
        """A `check` for the router: validates (each answer is checked once), logs invalid ones, and
        applies the text policy: a whole answer whose words have findings no code repaired is held
        and re-asked once (`TextFindings`, not redrawn by the retry layer); the re-ask's answer is
        kept unless it has more open findings than the held one."""

        def check(completion: Completion) -> Any:
            try:
                value = validate(completion.text)
                if isinstance(value, Checked) and value.open:
                    if not policy.final:
                        policy.held = (completion, value)
                        errors = [
                            {"loc": [f.field], "msg": f.message, "type": f"text:{f.rule}"} for f in value.open
                        ]
                        raise TextFindings(
                            f"{len(value.open)} text finding(s): {value.open[0].message}",
                            raw_text=completion.text,
                            validation_errors=errors,
                        )
                    if policy.held is not None and len(policy.held[1].open) < len(value.open):
                        raise TextFindings(
                            "the re-ask has more text findings than the first answer: the first is kept",
                            raw_text=completion.text,
                        )
            except SchemaValidationError as exc:
                attempts.append({"provider": completion.provider, "ok": False, "errors": format_errors(exc)})
                invalid.append((completion, exc, len(attempts)))
                raise
            attempts.append({"provider": completion.provider, "ok": True, "cached": completion.cached})
            return value

        return check

    def _log_invalid(
        self, base: CompletionRequest, invalid: list[tuple[Completion, SchemaValidationError, int]]
    ) -> None:
        assert self.invalid_log is not None
        for completion, exc, attempt in invalid:
            self.invalid_log.record(
                component=base.component,
                stage="structuring",
                attempt=attempt,
                prompt_hash=prompt_hash(base.messages),
                provider=completion.provider,
                model=completion.model,
                errors=format_errors(exc),
                raw_text=completion.text,
                repaired_text=exc.repaired_text,
            )

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
            f"are in {self.invalid_log.directory if self.invalid_log else 'the run log'}).",
            component=component,
            attempts=attempts,
        )

    # -- budgeting --
    async def _fitted(
        self,
        template: str,
        component: str,
        context: dict[str, Any],
        defaults: StageDefaults,
        meta: StepMeta,
        route: Route,
    ) -> CompletionRequest:
        """Render `template`, summarizing long context values until the request fits `route`'s window.

        Counting tokens may load an embedded model's tokenizer: it runs off the event loop."""
        budget = route.budget()
        context = dict(context)
        prompt = render(template, context)
        for key in SUMMARIZABLE:
            over = await asyncio.to_thread(budget.overflow, prompt.messages, defaults.max_tokens)
            if over <= 0:
                break
            value = context.get(key)
            if (
                not isinstance(value, str)
                or await asyncio.to_thread(budget.count_tokens, value) < 2 * SUMMARY_WORDS
            ):
                continue
            summary = await self.summarize(value, words=SUMMARY_WORDS)
            meta.summarized.append(
                {
                    "template": template,
                    "field": key,
                    "reason": f"{over} tokens over the {budget.context_window}-token window",
                    "chars_before": len(value),
                    "chars_after": len(summary),
                }
            )
            context[key] = summary
            prompt = render(template, context)
        room = await asyncio.to_thread(budget.room_for_answer, prompt.messages)
        request = self._request(prompt, component, defaults, budget, room)
        if request.stage == "structuring" and meta.seeds is not None:
            # The step's own seed (seeds.py): a resumed run's round asks a failed step differently.
            request = request.model_copy(update={"seed": meta.seeds.structuring(defaults.seed)})
        return request

    def _request(
        self, prompt: RenderedPrompt, component: str, defaults: StageDefaults, budget: Budget, room: int
    ) -> CompletionRequest:
        # Config wins: the request carries narrative.defaults; a template adds only its stop sequences.
        params = defaults.model_dump()
        if room < 32:
            raise StructuringError(
                f"{component}: the prompt for {prompt.name} does not fit the {budget.context_window}-token "
                "context window even after summarizing; use a provider with a larger context_window",
                component=component,
                attempts=[],
            )
        return CompletionRequest(
            messages=prompt.messages,
            temperature=params["temperature"],
            top_p=params["top_p"],
            seed=params.get("seed"),
            max_tokens=min(defaults.max_tokens, room),
            stop=tuple(prompt.params.get("stop") or ()),
            timeout=defaults.timeout,
            component=component,
            stage="structuring" if prompt.name.endswith("_structuring") else "freeform",
        )

    async def summarize(self, text: str, *, words: int) -> str:
        """Summarize `text` with the `summarize` template (component "summarize")."""
        defaults = self.settings.narrative.defaults.freeform
        structuring = self.settings.narrative.defaults.structuring

        async def ask(route: Route) -> Completion:
            budget = route.budget()
            clipped = clip_middle(text, max(400, int((budget.context_window - defaults.max_tokens) * 2.5)))
            prompt = render("summarize", {"text": clipped, "words": words})
            room = await asyncio.to_thread(budget.room_for_answer, prompt.messages)
            request = CompletionRequest(
                messages=prompt.messages,
                temperature=structuring.temperature,
                top_p=structuring.top_p,
                seed=structuring.seed,
                max_tokens=min(words * 2, max(32, room)),
                stop=tuple(prompt.params.get("stop") or ()),
                timeout=defaults.timeout,
                component="summarize",
                stage="summarize",
            )
            return await route.generator.generate(request, None)

        completion = await self._by_route("summarize", StepMeta("summarize"), ask)
        return completion.text.strip()
