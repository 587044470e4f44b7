"""One component call in two stages: free writing, then structuring into a typed object.

Stage 1 renders `{component}_freeform` and asks for text. Stage 2 renders
`{component}_structuring` with the stage-1 text and the decoding schema, asks with the
provider's native structured output (strict mode), validates, repairs once, and when that
still fails re-asks once with the validation errors shown to the model. Every request is
first fitted into the provider chain's context window (summarizing long inputs).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ..budget import Budget, clip_middle
from ..config import Settings, StageDefaults
from ..errors import AllProvidersFailed, SchemaValidationError, StructuringError
from ..failures import InvalidOutputLog
from ..prompts.render import RenderedPrompt, render
from ..routing.base import Generator
from ..routing.instrument import prompt_hash
from ..structuring import format_errors, validate_json_payload
from ..types import Completion, CompletionRequest
from .parts import Part

T = TypeVar("T", bound=BaseModel)

# Context values that may be summarized when a prompt does not fit, most expendable first.
SUMMARIZABLE = ("previous", "story", "plot", "evaluation", "draft", "text")
SUMMARY_WORDS = 90
PART_MAX_TOKENS = 200  # one part is a few short fields


def _as_schema_error(exc: ValidationError, assembled: dict[str, Any]) -> SchemaValidationError:
    errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return SchemaValidationError(str(exc), raw_text=json.dumps(assembled), validation_errors=errors)


@dataclass
class StepMeta:
    """What one component call did: raw texts, mode, attempts, what was summarized."""

    component: str
    stage1_text: str = ""
    stage1_cut_off: bool = False  # the draft reached max_tokens on every attempt; kept as far as it went
    stage2_text: str = ""
    structured_mode: str = ""
    attempts: int = 0
    reasked: bool = False
    parts_left_out: list[str] = field(default_factory=list)  # optional parts the model could not write
    summarized: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=lambda: {"prompt": 0, "completion": 0})

    def add_usage(self, completion: Completion) -> None:
        self.tokens["prompt"] += completion.usage.prompt_tokens
        self.tokens["completion"] += completion.usage.completion_tokens

    def as_dict(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "stage1_text": self.stage1_text,
            "stage1_cut_off": self.stage1_cut_off,
            "stage2_text": self.stage2_text,
            "structured_mode": self.structured_mode,
            "attempts": self.attempts,
            "reasked": self.reasked,
            "parts_left_out": self.parts_left_out,
            "summarized": self.summarized,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "tokens": dict(self.tokens),
        }


class TwoStage:
    """Runs the two stages of a component against a router (any `Generator`)."""

    def __init__(
        self,
        router: Generator,
        settings: Settings,
        budgets: Mapping[str, Budget],
        modes: Mapping[str, str],
        invalid_log: InvalidOutputLog | None = None,
        in_parts: Mapping[str, bool] | None = None,
    ) -> None:
        self.router = router
        self.settings = settings
        self.budgets = budgets
        self.modes = modes
        self.invalid_log = invalid_log
        self.strict = settings.structuring.strict
        self._in_parts = in_parts or {}

    def in_parts(self, component: str) -> bool:
        """Whether `component` is structured piece by piece (strict mode, provider setting)."""
        return self.strict and self._in_parts.get(component, False)

    # -- stage 1 --
    async def freeform(
        self, component: str, context: dict[str, Any], meta: StepMeta, *, seed: int | None
    ) -> str:
        started = time.perf_counter()
        defaults = self.settings.narrative.defaults.freeform
        request = await self._fitted(f"{component}_freeform", component, context, defaults, meta)
        request = request.model_copy(update={"seed": seed if seed is not None else defaults.seed})
        completion = await self.router.generate(request, check=None)
        meta.add_usage(completion)
        meta.stage1_text = completion.text.strip()
        meta.stage1_cut_off = completion.truncated
        meta.seconds["freeform"] = time.perf_counter() - started
        return meta.stage1_text

    # -- stage 2 --
    async def structure(
        self,
        component: str,
        context: dict[str, Any],
        model: type[T],
        schema: dict[str, Any],
        meta: StepMeta,
        *,
        validation_context: dict[str, Any] | None = None,
    ) -> T:
        started = time.perf_counter()
        defaults = self.settings.narrative.defaults.structuring
        context = {**context, "schema": json.dumps(schema, separators=(",", ":"))}
        template = f"{component}_structuring"
        request = await self._fitted(template, component, context, defaults, meta)
        request = request.model_copy(
            update={"json_schema": schema if self.strict else None, "schema_name": model.__name__}
        )
        meta.structured_mode = self.modes.get(component, "none") if self.strict else "none"

        def validate(text: str) -> T:
            return validate_json_payload(text, model, context=validation_context, repair=self.strict)

        try:
            completion = await self._ask(component, request, validate, meta, reask=self.strict)
        finally:
            meta.seconds["structuring"] = time.perf_counter() - started
        meta.stage2_text = completion.text
        return validate(completion.text)

    async def _ask(
        self,
        component: str,
        request: CompletionRequest,
        validate: Callable[[str], Any],
        meta: StepMeta,
        *,
        reask: bool,
    ) -> Completion:
        """One structuring call through the router; when it stays invalid, one re-ask with the errors."""
        attempts: list[dict[str, Any]] = []
        check = self._checker(validate, attempts, request)
        try:
            completion = await self._generate_structured(request, check)
        except SchemaValidationError as exc:
            if not reask:
                raise self._give_up(component, attempts) from exc
            meta.reasked = True
            try:
                completion = await self._generate_structured(self._reask_request(request, exc), check)
            except SchemaValidationError as final:
                raise self._give_up(component, attempts) from final
        finally:
            meta.attempts += len(attempts) or 1
        meta.add_usage(completion)
        return completion

    # -- stage 2, in parts (small models) --
    async def structure_parts(
        self,
        component: str,
        draft: str,
        plan: Sequence[Part | Callable[[dict[str, Any]], Part]],
        model: type[T],
        meta: StepMeta,
        *,
        validation_context: dict[str, Any] | None = None,
    ) -> T:
        """Fill the object one `Part` at a time (see parts.py), then validate it whole."""
        started = time.perf_counter()
        meta.structured_mode = f"{self.modes.get(component, 'none')} (in parts)"
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
                    value, text = await self._part(component, draft, part, assembled, earlier, meta)
                except StructuringError as exc:
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

    async def _part(
        self,
        component: str,
        draft: str,
        part: Part,
        assembled: dict[str, Any],
        earlier: list[str],
        meta: StepMeta,
    ) -> tuple[dict[str, Any], str]:
        defaults = self.settings.narrative.defaults.structuring
        schema_text = json.dumps(part.schema, separators=(",", ":"))
        shown = "" if part.slice_of else "\n".join(earlier)
        context = {"draft": part.notes(draft), "earlier": shown, "what": part.what, "schema": schema_text}
        request = await self._fitted("part_structuring", component, context, defaults, meta)
        request = request.model_copy(
            update={
                "json_schema": part.schema,
                "schema_name": part.model.__name__,
                "max_tokens": min(request.max_tokens, PART_MAX_TOKENS),
            }
        )
        fields = set(part.schema["properties"])

        def validate(text: str) -> dict[str, Any]:
            value = validate_json_payload(text, part.model).model_dump(include=fields)
            problem = part.check(value, assembled) if part.check else None
            if problem:
                errors = [{"loc": [], "msg": problem, "type": "value_error"}]
                raise SchemaValidationError(problem, raw_text=text, validation_errors=errors)
            return value

        completion = await self._ask(component, request, validate, meta, reask=True)
        return validate(completion.text), completion.text

    async def _generate_structured(
        self, request: CompletionRequest, check: Callable[[Completion], Any]
    ) -> Completion:
        try:
            return await self.router.generate(request, check=check)
        except AllProvidersFailed as exc:
            invalid = [err for _, err in exc.failures if isinstance(err, SchemaValidationError)]
            if invalid and len(invalid) == len(exc.failures):
                raise invalid[-1] from exc
            raise

    def _checker(
        self,
        validate: Callable[[str], Any],
        attempts: list[dict[str, Any]],
        base: CompletionRequest,
    ) -> Callable[[Completion], Any]:
        """A `check` for the router: validates, counts each answer once, logs invalid ones."""
        seen: list[Completion] = []

        def check(completion: Completion) -> Any:
            # Wrappers may check the same completion twice (retry, then cache): count it once.
            first_look = not any(completion is c for c in seen)
            seen.append(completion)
            try:
                value = validate(completion.text)
            except SchemaValidationError as exc:
                if first_look:
                    attempts.append(
                        {"provider": completion.provider, "ok": False, "errors": format_errors(exc)}
                    )
                    self._log_invalid(base, completion, exc, len(attempts))
                raise
            if first_look:
                attempts.append({"provider": completion.provider, "ok": True, "cached": completion.cached})
            return value

        return check

    def _log_invalid(
        self, base: CompletionRequest, completion: Completion, exc: SchemaValidationError, attempt: int
    ) -> None:
        if self.invalid_log is not None:
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

    def _reask_request(self, request: CompletionRequest, exc: SchemaValidationError) -> CompletionRequest:
        reask = render("reask", {"previous": clip_middle(exc.raw_text, 1500), "errors": format_errors(exc)})
        messages = request.messages + reask.messages
        budget = self.budgets[request.component]
        max_tokens = min(request.max_tokens, max(64, budget.room_for_answer(messages)))
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
    ) -> CompletionRequest:
        """Render `template`, summarizing long context values until the request fits the window."""
        budget = self.budgets[component]
        context = dict(context)
        prompt = render(template, context)
        for key in SUMMARIZABLE:
            over = budget.overflow(prompt.messages, defaults.max_tokens)
            if over <= 0:
                break
            value = context.get(key)
            if not isinstance(value, str) or budget.count_tokens(value) < 2 * SUMMARY_WORDS:
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
        return self._request(prompt, component, defaults, budget)

    def _request(
        self, prompt: RenderedPrompt, component: str, defaults: StageDefaults, budget: Budget
    ) -> CompletionRequest:
        params = {**defaults.model_dump(), **prompt.params}
        room = budget.room_for_answer(prompt.messages)
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
            stop=tuple(params.get("stop") or ()),
            timeout=defaults.timeout,
            component=component,
            stage="structuring" if prompt.name.endswith("_structuring") else "freeform",
        )

    async def summarize(self, text: str, *, words: int) -> str:
        """Summarize `text` with the `summarize` template (component "summarize")."""
        defaults = self.settings.narrative.defaults.freeform
        budget = self.budgets["summarize"]
        text = clip_middle(text, max(400, int((budget.context_window - defaults.max_tokens) * 2.5)))
        prompt = render("summarize", {"text": text, "words": words})
        request = CompletionRequest(
            messages=prompt.messages,
            temperature=0.0,
            top_p=1.0,
            seed=0,
            max_tokens=min(words * 2, max(32, budget.room_for_answer(prompt.messages))),
            stop=tuple(prompt.params.get("stop") or ()),
            timeout=defaults.timeout,
            component="summarize",
            stage="summarize",
        )
        completion = await self.router.generate(request, check=None)
        return completion.text.strip()
