"""Stage 2 in parts, for small models: an object filled one `Part` at a time, then validated whole.

A route whose model profile structures in parts (providers/profiles.py: `tiny`) gets its object
from a plan (pipeline/parts.py): each part is asked on its own (`ask_part`), with its slice of
the schema and of the notes, checked against what is already assembled and re-asked once. An
optional part the model cannot write is left out with the rest of its list; a required one may
be made by code from the notes (`part_from_notes`); either is said in the step's metadata.

The calls go through the two-stage runner (twostage.TwoStage), which fits each request into the
route's window and asks with the text policy; `PartStage` is what this module needs of it.

Each part that passes (or is made from the notes) is told to whoever listens (streaming.py:
`parts_started()` when an object is begun, again on a retry; `part_passed(what, list, value)`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from .. import streaming
from ..config import Settings, StageDefaults
from ..errors import SchemaValidationError, StructuringError
from ..routing.router import Route
from ..structuring import format_errors, validate_json_payload
from ..text.review import Finding, review_assembled
from ..text.rules import Context
from ..types import Completion, CompletionRequest
from .answer_bound import answer_token_bound
from .answer_checks import Checked
from .part import Part, instruction_echo
from .stepmeta import StepMeta

T = TypeVar("T", bound=BaseModel)
Plan = Sequence[Part | Callable[[dict[str, Any]], Part]]
PART_MAX_TOKENS = 200  # one part is a few short fields (when its schema does not bound it)


def _passed(part: Part, value: dict[str, Any]) -> None:
    streaming.part_passed(part.what, part.item_of, value)


class PartStage(Protocol):
    """What structuring in parts needs of the two-stage runner (twostage.TwoStage): its settings,
    a request fitted to the route's window, and one checked structuring call with a re-ask."""

    settings: Settings

    async def fitted_request(
        self,
        template: str,
        component: str,
        context: dict[str, Any],
        defaults: StageDefaults,
        meta: StepMeta,
        route: Route,
    ) -> CompletionRequest: ...

    async def ask_checked(
        self,
        component: str,
        request: CompletionRequest,
        validate: Callable[[str], Any],
        meta: StepMeta,
        route: Route,
        *,
        reask: bool,
    ) -> Completion: ...


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


async def structure_in_parts(
    stage: PartStage,
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
    required = from_notes = 0
    streaming.parts_started()
    try:
        left_out: set[str | None] = set()
        for entry in plan:
            part = entry if isinstance(entry, Part) else entry(assembled)
            required += not part.optional
            if part.item_of is not None and part.item_of in left_out:
                meta.parts_left_out.append(f"{part.what}: left out with the rest of its list")
                continue
            exact = part_by_code(part, draft, assembled, reviewing) if part.code_first else None
            if exact is not None:  # exact from the notes and clean: no model call
                meta.parts_by_code.append(part.what)
                part.merge(assembled, exact)
                _passed(part, exact)
                earlier.append(part.describe(exact))
                answers.append(json.dumps(exact, ensure_ascii=False))
                continue
            try:
                before = len(meta.findings)
                value, text = await ask_part(
                    stage, component, draft, part, assembled, earlier, meta, route, reviewing
                )
                value, text = _clean_from_notes(part, draft, assembled, reviewing, meta, before) or (
                    value,
                    text,
                )
            except StructuringError as exc:
                made = part_from_notes(part, draft, assembled)
                if made is not None:
                    from_notes += 1
                    value, text = made, json.dumps(made, ensure_ascii=False)
                    meta.parts_left_out.append(f"{part.what}: made from the draft (no valid answer)")
                    part.merge(assembled, value)
                    _passed(part, made)
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
            _passed(part, value)
            earlier.append(part.describe(value))
            answers.append(text)
    finally:
        meta.seconds["structuring"] = time.perf_counter() - started
    meta.stage2_text = "\n".join(answers)
    if required and from_notes == required:  # code wrote all of it: the model gave no valid object
        raise StructuringError(
            f"{component}: the model wrote none of its {required} required part(s) validly",
            component=component,
            attempts=[{"ok": False, "assembled": assembled}],
        )
    whole = review_assembled(model, assembled, reviewing)
    assembled = whole.data
    meta.findings += [f.as_dict() for f in whole.findings]
    try:
        return model.model_validate(assembled, context=validation_context)
    except ValidationError as exc:
        raise StructuringError(
            f"{component}: the parts the model wrote do not make a valid {component}: "
            f"{format_errors(_as_schema_error(exc, assembled))}",
            component=component,
            attempts=[{"ok": False, "assembled": assembled}],
        ) from exc


def part_from_notes(part: Part, draft: str, assembled: dict[str, Any]) -> dict[str, Any] | None:
    """A required part's value made by code from the notes, when it passes the part's checks."""
    if part.from_notes is None:
        return None
    fields = set(part.schema["properties"])
    try:
        value = part.model.model_validate(part.from_notes(part.notes(draft))).model_dump(include=fields)
    except ValidationError:
        return None
    return None if part.check and part.check(value, assembled) else value


def _clean_from_notes(
    part: Part, draft: str, assembled: dict[str, Any], reviewing: Context, meta: StepMeta, before: int
) -> tuple[dict[str, Any], str] | None:
    """A part whose answer the text rules still flag after its re-ask (kept with a
    warning), replaced by its value from the notes when that one is clean: code's clean text beats
    the model's flagged one. The kept findings become one repair. None: the answer stands."""
    flagged = [f for f in meta.findings[before:] if f.get("action") == "kept"]
    if not flagged or part.from_notes is None:
        return None
    made = part_by_code(part, draft, assembled, reviewing)
    if made is None:
        return None
    first = flagged[0]
    meta.findings[before:] = [f for f in meta.findings[before:] if f not in flagged] + [
        {
            **first,
            "message": f"{first['message']}; the answer was made from the draft instead",
            "action": "repaired",
        }
    ]
    return made, json.dumps(made, ensure_ascii=False)


def part_by_code(
    part: Part, draft: str, assembled: dict[str, Any], reviewing: Context
) -> dict[str, Any] | None:
    """A `code_first` part's value from the notes, when it passes everything a model's answer must
    (the schema, the text rules with nothing to repair or keep, the echo and cross checks)."""
    value = part_from_notes(part, draft, assembled)
    if value is None:
        return None
    findings: list[Finding] = []
    try:
        validate_json_payload(json.dumps(value), part.model, reviewing=reviewing, findings=findings)
    except SchemaValidationError:
        return None
    return None if findings or instruction_echo(part, value, assembled) else value


async def ask_part(
    stage: PartStage,
    component: str,
    draft: str,
    part: Part,
    assembled: dict[str, Any],
    earlier: list[str],
    meta: StepMeta,
    route: Route,
    reviewing: Context,
) -> tuple[dict[str, Any], str]:
    """One part asked on `route`: its slice of the schema and of the notes, checked (shape, text
    rules, echoed instructions, its cross-check) and re-asked once. Its value and answer text."""
    defaults = stage.settings.narrative.defaults.structuring
    # The prompt shows the part's shape; its patterns (names, openers) are for the grammar, which
    # enforces them anyway, and would cost a tiny model hundreds of tokens of regex to read.
    # (Measured: a shorter shape, `{"name": "", "purpose": ""}`, saved a fifth of the prompt
    # tokens but SmolLM2 then copied its beat's opener into the name, or the placeholder
    # "<up to 160 characters>" into a line: the lengths and types of the schema keep it apart.)
    schema_text = json.dumps(without_patterns(part.schema), separators=(",", ":"), ensure_ascii=False)
    shown = "\n".join(earlier) if part.sees_earlier else ""
    context = {"draft": part.notes(draft), "earlier": shown, "what": part.what, "schema": schema_text}
    request = await stage.fitted_request("part_structuring", component, context, defaults, meta, route)
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

    completion = await stage.ask_checked(component, request, validate, meta, route, reask=True)
    meta.structured_mode = f"{completion.structured_mode} (in parts)"
    return completion.value, completion.text
