"""Model output -> typed object: extract the JSON, parse, validate, repair once, re-validate.

Also derives the schema sent for constrained decoding from the same Pydantic models, and
formats validation errors for the re-ask prompt.

Decisions (each one keeps invalid output out, at the price of a re-ask):
- Output whose JSON is cut off (an object or array never closed) is rejected without repair:
  json_repair would close it and could turn a half-written plot into a "valid" shorter one.
- Repair runs only when the text does not parse; repairing valid JSON cannot change its value.
- Duplicate keys in an object (`{"tension": 3, "tension": 9}`) are an error that no repair
  resolves (it would silently keep one of the values).
- A top-level array is never unwrapped into an object.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from json_repair import repair_json
from pydantic import BaseModel, ValidationError

from .errors import SchemaValidationError
from .text.review import Finding, review
from .text.rules import Context

T = TypeVar("T", bound=BaseModel)

_BOM = "\ufeff"
_THINK_OPEN = re.compile(r"^\s*<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_FENCE_OPEN = re.compile(r"^\s*```[\w-]*[ \t]*\n?")
_FENCE_CLOSE = re.compile(r"\n?```\s*$")
# A "{" or "[" only starts JSON when what follows looks like JSON, so prose such as
# "{braces}" or "[see below]" is never taken for the payload.
_JSON_START = re.compile(r"""\{\s*(?:["'}]|\w+\s*:)|\[\s*[-\d"'{\[\]tfn]""")

FORMAT_ERRORS_LIMIT = 1200
_INPUT_LIMIT = 200


# -- extraction --


@dataclass(frozen=True)
class _Extracted:
    text: str
    closed: bool


def _strip_wrappers(text: str) -> str:
    """Without BOM, reasoning and code fences. A think tag inside the JSON payload is content."""
    text = text.lstrip(_BOM)
    while (opening := _THINK_OPEN.match(text)) is not None:
        closing = _THINK_CLOSE.search(text, opening.end())
        if closing is None:  # an unfinished think block: the model never answered
            return ""
        text = text[closing.end() :]
    # "reasoning</think>{...}" (the opening tag was in the prompt), or a block after some prose
    while (closing := _THINK_CLOSE.search(text)) is not None:
        span = _payload(text)
        if span is not None and span[0] < closing.start() < span[1]:
            break
        text = text[closing.end() :]
    text = _FENCE_OPEN.sub("", text, count=1)
    return _FENCE_CLOSE.sub("", text).strip()


def _span_end(text: str, start: int) -> int | None:
    """Index after the bracket that closes text[start], or None when the text ends first.

    Brackets are counted whatever their kind: a mismatch such as `[1, 2}` is the parser's
    (and the repair's) business; only depth decides where a value ends.
    """
    depth = 0
    in_string = escaped = False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return index + 1
    return None


def _payload(text: str) -> tuple[int, int, bool] | None:
    """(start, end, closed) of the longest JSON value in `text`; a cut-off one runs to the end."""
    spans: list[tuple[int, int]] = []
    position = 0
    while (match := _JSON_START.search(text, position)) is not None:
        start = match.start()
        end = _span_end(text, start)
        if end is None:  # everything after `start` is inside this unclosed value
            if not spans or len(text) - start > max(e - s for s, e in spans):
                return start, len(text), False
            break
        spans.append((start, end))
        position = end
    if not spans:
        return None
    start, end = max(spans, key=lambda span: span[1] - span[0])
    return start, end, True


def _extract(text: str) -> _Extracted:
    cleaned = _strip_wrappers(text)
    span = _payload(cleaned)
    if span is None:
        return _Extracted(cleaned, closed=True)
    start, end, closed = span
    return _Extracted(cleaned[start:end].strip(), closed=closed)


def extract_json(text: str) -> str:
    """The JSON payload in model output: without BOM, <think> blocks, code fences and prose.

    The payload is the longest balanced JSON object or array (strings respected); when the
    JSON is cut off, everything from its opening bracket on. With no JSON at all, the cleaned
    text. A top-level array is returned as an array.
    """
    return _extract(text).text


# -- parse, validate, repair --


class _DuplicateKey(ValueError):
    """An object names a key twice; which value is meant is unknown, so no repair guesses."""


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(f"the key {key!r} appears twice in one object; give it once")
        result[key] = value
    return result


def _loads(text: str) -> Any:
    return json.loads(text, object_pairs_hook=_reject_duplicate_keys)


def _json_safe_errors(exc: ValidationError) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = json.loads(exc.json(include_url=False))
    for error in errors:
        value = error.get("input")
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if len(shown) > _INPUT_LIMIT:
            if isinstance(value, str):
                error["input"] = value[:_INPUT_LIMIT] + "…"
            else:
                error.pop("input", None)
    return errors


class _Attempt:
    """One parse + review + validate of one text; remembers why it failed, and what the review found."""

    def __init__(self, reviewing: Context | None = None) -> None:
        self.parse_error: str | None = None
        self.repairable = False
        self.validation_errors: list[dict[str, Any]] = []
        self.reviewing = reviewing
        self.findings: list[Finding] = []

    def run(self, text: str, model: type[T], context: dict[str, Any] | None) -> T | None:
        try:
            data = _loads(text)
        except _DuplicateKey as exc:
            self.parse_error = str(exc)
            return None
        except ValueError as exc:  # json.JSONDecodeError
            self.parse_error = f"not valid JSON: {exc}"
            self.repairable = True
            return None
        if self.reviewing is not None:
            reviewed = review(model, data, self.reviewing)
            data, self.findings = reviewed.data, reviewed.findings
        try:
            return model.model_validate(data, context=context)
        except ValidationError as exc:
            self.validation_errors = _json_safe_errors(exc)
            return None


def validate_json_payload(
    text: str,
    model: type[T],
    *,
    context: dict[str, Any] | None = None,
    repair: bool = True,
    reviewing: Context | None = None,
    findings: list[Finding] | None = None,
) -> T:
    """Parse and validate model output as `model`, with one json_repair pass when it is not JSON.

    Raises SchemaValidationError (a ValueError) carrying the raw text, the parse error, the
    validation errors and the repaired text. `repair=False` skips the repair pass. With
    `reviewing`, the parsed data is reviewed by the text rules first (text/review.py: repairs
    applied, findings appended to `findings`); the rules never raise, shape does.
    """
    name = model.__name__
    if not text or not text.strip(_BOM + " \t\r\n"):
        raise SchemaValidationError(
            f"the model returned empty output instead of a {name} object; ask again", raw_text=text or ""
        )
    extracted = _extract(text)
    if not extracted.text:
        raise SchemaValidationError(
            f"the output holds no {name} object (only an unfinished <think> block or an empty fence); "
            "raise max_tokens or turn thinking off",
            raw_text=text,
        )
    if not extracted.closed:
        raise SchemaValidationError(
            f"the {name} JSON is cut off (a bracket is never closed); the model probably ran out of "
            "tokens: raise max_tokens or ask for less",
            raw_text=text,
            parse_error="the JSON is cut off before its closing bracket; write a shorter, complete object",
        )
    first = _Attempt(reviewing)
    value = first.run(extracted.text, model, context)
    if value is not None:
        if findings is not None:
            findings += first.findings
        return value
    if not (first.repairable and repair):
        raise _invalid(name, text, first, first.validation_errors, None)
    repaired = _repair(extracted.text)
    second = _Attempt(reviewing)
    value = second.run(repaired, model, context) if repaired else None
    if value is not None:
        if findings is not None:
            findings += second.findings
        return value
    raise _invalid(name, text, first, second.validation_errors, repaired, repaired_parse=second.parse_error)


def _repair(text: str) -> str:
    try:
        repaired = repair_json(text, ensure_ascii=False)
    except Exception:  # json_repair may fail on odd input; that only means "no repair"
        return ""
    return repaired if isinstance(repaired, str) else ""


def _invalid(
    name: str,
    raw_text: str,
    first: _Attempt,
    validation_errors: list[dict[str, Any]],
    repaired: str | None,
    *,
    repaired_parse: str | None = None,
) -> SchemaValidationError:
    after = " after one repair pass" if repaired is not None else ""
    if validation_errors:
        detail = f"{len(validation_errors)} validation error(s)"
    else:
        detail = repaired_parse or first.parse_error or "not valid JSON"
    return SchemaValidationError(
        f"the output is not a valid {name}{after}: {detail}; re-ask with the errors or use a stronger model",
        raw_text=raw_text,
        parse_error=first.parse_error,
        validation_errors=validation_errors,
        repaired_text=repaired,
    )


# -- errors for the re-ask prompt --


def _location(loc: list[Any]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(the whole object)"


def _message(error: Mapping[str, Any]) -> str:
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return "must not be blank"
    if kind == "missing":
        return "is required but missing"
    if kind == "model_type":
        return "must be one JSON object (not an array, string or number)"
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if kind in {"int_type", "int_parsing", "string_type", "less_than_equal", "greater_than_equal"}:
        message += f" (got {json.dumps(error.get('input'), ensure_ascii=False)})"
    return message


def format_errors(exc: SchemaValidationError) -> str:
    """What is wrong with the output, one line per problem, for the re-ask prompt (≤ ~1200 chars)."""
    lines = [f"- {_location(e.get('loc', []))}: {_message(e)}" for e in exc.validation_errors]
    if not lines:
        lines = [f"- {exc.parse_error or str(exc)}"]
    kept: list[str] = []
    used = 0
    for index, line in enumerate(lines):
        line = line if len(line) <= 400 else line[:399] + "…"
        if used + len(line) + 1 > FORMAT_ERRORS_LIMIT - 40:
            kept.append(f"- … and {len(lines) - index} more")
            break
        kept.append(line)
        used += len(line) + 1
    return "\n".join(kept)


# -- the decoding schema --

DEFAULT_MAX_ITEMS = 32
_DROPPED_KEYWORDS = {
    "title",
    "description",
    "default",
    "examples",
    "uniqueItems",
    "pattern",
    "format",
    "$schema",
    "discriminator",
    "$defs",
    "definitions",
    "exclusiveMinimum",
    "exclusiveMaximum",
}
_ENUM_SPAN_LIMIT = 256


class _Deriver:
    def __init__(
        self,
        defs: Mapping[str, Any],
        counts: Mapping[str, tuple[int, int]],
        enums: Mapping[str, list[str]],
        max_string: int,
    ) -> None:
        self.defs = defs
        self.counts = counts
        self.enums = enums
        self.max_string = max_string
        self.used: set[str] = set()

    def resolve(self, node: Mapping[str, Any]) -> dict[str, Any]:
        node = dict(node)
        while "$ref" in node:
            target = self.defs[str(node.pop("$ref")).rsplit("/", 1)[-1]]
            node = {**target, **node}
        for key in ("anyOf", "oneOf", "allOf"):
            branches = [b for b in node.get(key, []) if self.resolve(b).get("type") != "null"]
            if key in node and len(branches) == 1:
                node.pop(key)
                node = {**self.resolve(branches[0]), **node}
        return node

    def convert(self, node: Mapping[str, Any], field: str | None) -> dict[str, Any]:
        node = self.resolve(node)
        kind = node.get("type")
        if kind == "object":
            return self.object(node)
        if kind == "array":
            return self.array(node, field)
        if kind == "string":
            return self.string(node, field)
        if kind == "integer":
            return self.integer(node)
        out = {k: v for k, v in node.items() if k not in _DROPPED_KEYWORDS}
        for key in ("anyOf", "oneOf"):
            if key in out:
                out[key] = [self.convert(b, field) for b in out[key]]
        return out

    def object(self, node: Mapping[str, Any]) -> dict[str, Any]:
        if "properties" not in node:
            return {"type": "object"}
        required = set(node.get("required", []))
        properties = {
            name: self.convert(schema, name)
            for name, schema in node["properties"].items()
            if name in required or name in self.counts or name in self.enums
        }
        return {
            "type": "object",
            "properties": properties,
            "required": list(properties),
            "additionalProperties": False,
        }

    def array(self, node: Mapping[str, Any], field: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "array", "items": self.convert(node.get("items", {}), field)}
        low, high = node.get("minItems", 0), node.get("maxItems", DEFAULT_MAX_ITEMS)
        if field is not None and field in self.counts:
            self.used.add(field)
            low, high = self.counts[field]
        if low:
            out["minItems"] = low
        out["maxItems"] = high
        return out

    def string(self, node: Mapping[str, Any], field: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string"}
        enum = node.get("enum")
        if field is not None and field in self.enums:
            self.used.add(field)
            enum = list(self.enums[field])
        if enum is not None:
            out["enum"] = list(enum)
        out["minLength"] = max(1, node.get("minLength", 1))
        out["maxLength"] = min(self.max_string, node.get("maxLength", self.max_string))
        if enum:
            out["maxLength"] = max(len(v) for v in enum)
        return out

    def integer(self, node: Mapping[str, Any]) -> dict[str, Any]:
        low = node.get("minimum", node["exclusiveMinimum"] + 1 if "exclusiveMinimum" in node else None)
        high = node.get("maximum", node["exclusiveMaximum"] - 1 if "exclusiveMaximum" in node else None)
        if "enum" in node:
            return {"type": "integer", "enum": list(node["enum"])}
        if low is not None and high is not None and high - low < _ENUM_SPAN_LIMIT:
            return {"type": "integer", "enum": list(range(int(low), int(high) + 1))}
        out: dict[str, Any] = {"type": "integer"}
        if low is not None:
            out["minimum"] = low
        if high is not None:
            out["maximum"] = high
        return out


def _check_options(counts: Mapping[str, tuple[int, int]], enums: Mapping[str, Collection[str]]) -> None:
    for field, (low, high) in counts.items():
        if not 0 <= low <= high:
            raise ValueError(f"counts[{field!r}] = ({low}, {high}) needs 0 <= min <= max")
    for field, values in enums.items():
        if not values or not all(isinstance(v, str) and v.strip() for v in values):
            raise ValueError(f"enums[{field!r}] must be a non-empty list of non-blank strings")


def decoding_schema(
    model: type[BaseModel],
    *,
    counts: dict[str, tuple[int, int]] | None = None,
    enums: dict[str, list[str]] | None = None,
    max_string: int = 300,
) -> dict[str, Any]:
    """The JSON schema sent for constrained decoding, derived from `model.model_json_schema()`.

    Grammar-based decoders (llama.cpp) enforce only part of JSON Schema, and every optional
    token costs time on a small model, so the schema is reshaped:
    - `$ref`s are inlined (no `$defs`); nullable unions collapse to their non-null branch;
    - optional fields are dropped, unless `counts` or `enums` names them (then they are kept);
      every kept property is required and objects get `additionalProperties: false`;
    - a bounded integer becomes an `enum` of its allowed values (min/max are not enforced by
      llama.cpp grammars, enums are);
    - every string gets minLength 1 and maxLength = min(max_string, the field's max_length);
    - every array gets maxItems (the field's, else DEFAULT_MAX_ITEMS); `counts[name] = (min, max)`
      overrides the bounds of every array property called `name`, at any depth;
    - `enums[name]` restricts every string property called `name`, or the string items of an
      array property called `name` (e.g. a scene's characters);
    - keywords decoders ignore or reject (title, description, default, uniqueItems, pattern,
      format) are removed; descriptions too, to save prompt tokens.
    Raises ValueError when `counts` or `enums` names no suitable property of `model`.
    """
    counts = dict(counts or {})
    enums = dict(enums or {})
    _check_options(counts, enums)
    root = model.model_json_schema()
    deriver = _Deriver(root.get("$defs", {}), counts, enums, max_string)
    schema = deriver.convert(root, None)
    unused = sorted((set(counts) | set(enums)) - deriver.used)
    if unused:
        raise ValueError(
            f"{', '.join(unused)}: not an array (counts) or string (enums) field of {model.__name__}"
        )
    return schema


__all__ = ["decoding_schema", "extract_json", "format_errors", "validate_json_payload"]
