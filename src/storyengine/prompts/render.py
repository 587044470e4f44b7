"""Render POML templates: byte-identical to `poml.poml()`, but fast after the first call.

`poml.poml()` starts Node for every call (about a second). `render` calls it once per
template and *shape* (which variables are empty), with every variable set to a sentinel,
and keeps the result as a skeleton; later calls fill the real values into the skeleton.

Why filling in is exact. Every variable sits in a `<p whiteSpace="pre">` (or a message with
`whiteSpace="pre"`), where POML inserts a value's text verbatim. The sentinel proves this for
each place it lands: it carries leading and trailing whitespace, tabs, CR LF, runs of spaces,
markup (`<b>&amp;</b>`), `{{ }}`, quotes and a backslash, and a skeleton is used only if
every sentinel came back byte for byte and no fragment of one is left anywhere else. What a
sentinel cannot stand for, `render` hands to `render_slow` (a real `poml.poml()` call):

- an empty value (`""`, `0`) drops its paragraph or `if` block: it is part of the shape,
  so it gets its own skeleton, rendered with the real empty value;
- a value made only of whitespace also drops its paragraph: rendered slowly;
- lone surrogates (U+D800..U+DFFF) come back from Node as U+FFFD: rendered slowly;
- integers beyond 2**53 lose precision in JavaScript: rendered slowly.

Template sources may use only bare variables (`{{ name }}`, `if="name"`), no `for`, no
`<let>`, so a sentinel and the real value always take the same branches.

Skeletons are also kept on disk (`templates/` in the user cache directory), keyed by the
template's text, the poml version, this module's skeleton format and the shape, so a new
process renders its first prompt without starting Node. A file that is missing, unreadable or
does not match its key is ignored and the skeleton is built again.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import poml
from platformdirs import user_cache_dir
from pydantic import ValidationError

from ..errors import TemplateError
from ..types import Message, Role

logger = logging.getLogger("storyengine.prompts")

TEMPLATE_DIR = Path(__file__).resolve().parent
ContextValue = str | int

_VARIABLE = re.compile(r"\{\{\s*(.*?)\s*\}\}", re.DOTALL)
_CONDITION = re.compile(r"""\bif\s*=\s*(["'])(.*?)\1""", re.DOTALL)
_UNSUPPORTED = re.compile(r"""\bfor\s*=|<let\b""")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SURROGATE = re.compile("[\ud800-\udfff]")
_SAFE_INT = 2**53 - 1

# A sentinel is LEAD + OPEN + name + MID + PAYLOAD + CLOSE + TRAIL.
_OPEN, _MID, _CLOSE = "\ue000", "\ue002", "\ue001"
_LEAD, _TRAIL = " \n\t", "\t\r\n "
_PAYLOAD = "  <b>&amp;</b>\r\n{{ x }}\t\\\"'é "
_MARKERS = re.compile(f"[{_OPEN}{_MID}{_CLOSE}]")
_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class RenderedPrompt:
    """A rendered template: chat messages and the template's runtime params (snake_case)."""

    name: str
    messages: tuple[Message, ...]
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "messages": [m.model_dump() for m in self.messages], "params": self.params}


# -- templates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Template:
    name: str
    path: Path
    variables: frozenset[str]
    source: str = ""


def template_names() -> list[str]:
    """Names of every shipped template, sorted."""
    return sorted(path.stem for path in TEMPLATE_DIR.glob("*.poml"))


def template_variables(name: str) -> set[str]:
    """The context variables template `name` takes."""
    return set(_template(name).variables)


def _template(name: str) -> _Template:
    return _load_template(TEMPLATE_DIR, name)


@cache
def _load_template(directory: Path, name: str) -> _Template:
    path = directory / f"{name}.poml"
    if not _IDENTIFIER.fullmatch(name) or not path.is_file():
        raise TemplateError(f"no template named {name!r}; the templates are: {', '.join(template_names())}")
    source = path.read_text(encoding="utf-8")
    if _UNSUPPORTED.search(source):
        raise TemplateError(f"template {name!r} ({path}) uses `for` or <let>; use only bare variables")
    expressions = [m.group(1) for m in _VARIABLE.finditer(source)]
    expressions += [m.group(2).strip() for m in _CONDITION.finditer(source)]
    bad = sorted({e for e in expressions if not _IDENTIFIER.fullmatch(e)})
    if bad:
        raise TemplateError(
            f"template {name!r} ({path}) uses expressions {bad}; "
            "use only bare variables like {{ premise }}"
        )
    return _Template(name=name, path=path, variables=frozenset(expressions), source=source)


def _checked_values(template: _Template, context: Mapping[str, Any]) -> dict[str, ContextValue]:
    missing = sorted(template.variables - context.keys())
    extra = sorted(set(context) - template.variables)
    if missing or extra:
        problems = []
        if missing:
            problems.append(f"missing {', '.join(missing)}")
        if extra:
            problems.append(f"unexpected {', '.join(map(str, extra))}")
        raise TemplateError(
            f"template {template.name!r}: {'; '.join(problems)} "
            f"(it takes exactly: {', '.join(sorted(template.variables)) or 'nothing'})"
        )
    for key, value in context.items():
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise TemplateError(
                f"template {template.name!r}: variable {key!r} is a {type(value).__name__}; "
                "context values must be str or int"
            )
    return dict(context)


# -- the slow path: poml itself -----------------------------------------------------------------


def render_slow(name: str, context: Mapping[str, ContextValue]) -> RenderedPrompt:
    """Render with a real `poml.poml()` call (starts Node; about a second)."""
    template = _template(name)
    return _poml_render(template, _checked_values(template, context))


def _poml_render(template: _Template, values: Mapping[str, Any]) -> RenderedPrompt:
    try:
        result = poml.poml(template.path, context=dict(values), format="openai_chat")
    except (RuntimeError, OSError, ValueError) as exc:
        raise TemplateError(
            f"poml could not render template {template.name!r} ({template.path}): {exc}; "
            "fix the template (poml's own message is printed above)"
        ) from exc
    if not isinstance(result, dict) or not isinstance(result.get("messages"), list):
        raise TemplateError(f"poml returned no messages for template {template.name!r}")
    params = {key: value for key, value in result.items() if key != "messages"}
    return RenderedPrompt(name=template.name, messages=_messages(template, result["messages"]), params=params)


def _messages(template: _Template, raw: list[Any]) -> tuple[Message, ...]:
    messages = []
    for item in raw:
        text = item.get("content") if isinstance(item, dict) else None
        if not isinstance(text, str) or item.get("role") not in _ROLES:
            raise TemplateError(
                f"template {template.name!r} rendered an unsupported message {str(item)[:80]!r}; "
                "use only system-msg, human-msg and ai-msg with text"
            )
        try:
            messages.append(Message(role=item["role"], content=item["content"]))
        except ValidationError as exc:
            raise TemplateError(f"template {template.name!r} rendered an invalid message: {exc}") from exc
    return tuple(messages)


# -- the fast path: skeletons --------------------------------------------------------------------


def _sentinel(variable: str) -> str:
    return f"{_LEAD}{_OPEN}{variable}{_MID}{_PAYLOAD}{_CLOSE}{_TRAIL}"


def _text(value: ContextValue) -> str:
    return value if isinstance(value, str) else str(value)


@lru_cache(maxsize=256)
def _system_message(content: str) -> Message:
    return Message(role="system", content=content)


@dataclass(frozen=True)
class _MessagePlan:
    """One message: literal `pieces` with the variables `slots` between them."""

    role: Role
    pieces: tuple[str, ...]
    slots: tuple[str, ...]
    static: Message | None

    def fill(self, values: Mapping[str, ContextValue]) -> Message:
        if self.static is not None:
            return self.static
        parts = [self.pieces[0]]
        for slot, piece in zip(self.slots, self.pieces[1:], strict=True):
            parts.append(_text(values[slot]))
            parts.append(piece)
        content = "".join(parts)
        if self.role == "system":
            return _system_message(content)
        return Message(role=self.role, content=content)


@dataclass(frozen=True)
class _Skeleton:
    name: str
    messages: tuple[_MessagePlan, ...]
    params: dict[str, Any]

    def fill(self, values: Mapping[str, ContextValue]) -> RenderedPrompt:
        messages = tuple(plan.fill(values) for plan in self.messages)
        return RenderedPrompt(name=self.name, messages=messages, params=copy.deepcopy(self.params))


def _plan(message: Message, sentinels: re.Pattern[str]) -> _MessagePlan | None:
    """Split a sentinel-rendered message into pieces and slots; None if a sentinel was altered."""
    split = sentinels.split(message.content)
    pieces, slots = tuple(split[0::2]), tuple(split[1::2])
    if any(_MARKERS.search(piece) for piece in pieces):
        return None
    static = message if not slots else None
    return _MessagePlan(role=message.role, pieces=pieces, slots=slots, static=static)


def _sentinel_pattern(variables: Iterable[str]) -> re.Pattern[str]:
    """Matches any whole sentinel of `variables`, capturing the variable's name."""
    names = "|".join(map(re.escape, variables)) or "(?!)"
    return re.compile(f"{re.escape(_LEAD + _OPEN)}({names}){re.escape(_MID + _PAYLOAD + _CLOSE + _TRAIL)}")


def _build_skeleton(template: _Template, empties: frozenset[tuple[str, ContextValue]]) -> _Skeleton | None:
    """Render with sentinels in every non-empty variable; None unless every sentinel came back intact."""
    empty_values = dict(empties)
    context = {var: empty_values.get(var, _sentinel(var)) for var in template.variables}
    started = time.perf_counter()
    rendered = _poml_render(template, context)
    live = set(template.variables) - empty_values.keys()
    pattern = _sentinel_pattern(sorted(live))
    plans = [_plan(message, pattern) for message in rendered.messages]
    intact = [plan for plan in plans if plan is not None]
    seen = {slot for plan in intact for slot in plan.slots}
    if len(intact) < len(plans) or seen != live or _MARKERS.search(repr(rendered.params)):
        logger.warning("template %r: POML altered a sentinel; this shape is rendered by poml", template.name)
        return None
    logger.debug("template %r: skeleton built in %.2fs", template.name, time.perf_counter() - started)
    return _Skeleton(name=template.name, messages=tuple(intact), params=rendered.params)


# -- skeletons on disk ---------------------------------------------------------------------------

SKELETON_FORMAT = 1  # bump when _Skeleton or the sentinel changes: older files are then ignored
DISK_CACHE = True  # False: never read or write skeleton files (memory only)


def skeleton_dir() -> Path:
    """Where skeletons are kept between processes (the user cache directory)."""
    return Path(user_cache_dir("storyengine", appauthor=False)) / "templates"


@cache
def poml_version() -> str:
    try:
        return importlib.metadata.version("poml")
    except importlib.metadata.PackageNotFoundError:
        return getattr(poml, "__version__", "unknown")


def skeleton_key(template: _Template, empties: frozenset[tuple[str, ContextValue]]) -> str:
    """What a skeleton depends on: template text, poml version, skeleton format, sentinel, shape."""
    shape = sorted((key, repr(value)) for key, value in empties)
    material = json.dumps(
        [SKELETON_FORMAT, poml_version(), _sentinel("x"), template.name, template.source, shape],
        ensure_ascii=True,
    )
    return hashlib.sha256(material.encode("ascii")).hexdigest()


def _skeleton_file(template: _Template, key: str) -> Path:
    return skeleton_dir() / f"{template.name}-{key[:32]}.json"


def _read_skeleton(template: _Template, key: str) -> _Skeleton | None:
    try:
        data = json.loads(_skeleton_file(template, key).read_text(encoding="utf-8"))
        if data.get("key") != key:
            return None
        plans = []
        for item in data["messages"]:
            role, pieces, slots = item["role"], tuple(item["pieces"]), tuple(item["slots"])
            if role not in _ROLES or len(pieces) != len(slots) + 1 or not set(slots) <= template.variables:
                return None
            if not all(isinstance(piece, str) and not _MARKERS.search(piece) for piece in pieces):
                return None
            static = Message(role=role, content=pieces[0]) if not slots else None
            plans.append(_MessagePlan(role=role, pieces=pieces, slots=slots, static=static))
        params = data["params"]
        if not isinstance(params, dict):
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ValidationError):
        return None
    return _Skeleton(name=template.name, messages=tuple(plans), params=params)


def _write_skeleton(template: _Template, key: str, skeleton: _Skeleton) -> None:
    data = {
        "key": key,
        "template": template.name,
        "poml": poml_version(),
        "messages": [
            {"role": p.role, "pieces": list(p.pieces), "slots": list(p.slots)} for p in skeleton.messages
        ],
        "params": skeleton.params,
    }
    path = _skeleton_file(template, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        temporary.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        os.replace(temporary, path)  # atomic: a reader sees the old file or the whole new one
    except (OSError, TypeError, ValueError) as exc:
        logger.debug("template %r: skeleton not written to %s (%s)", template.name, path, exc)


def _built_or_read(template: _Template, empties: frozenset[tuple[str, ContextValue]]) -> _Skeleton | None:
    """The skeleton from disk when a matching file is there, else built by poml (and written)."""
    if not DISK_CACHE:
        return _build_skeleton(template, empties)
    key = skeleton_key(template, empties)
    found = _read_skeleton(template, key)
    if found is not None:
        return found
    built = _build_skeleton(template, empties)
    if built is not None:
        _write_skeleton(template, key, built)
    return built


_Key = tuple[Path, frozenset[tuple[str, ContextValue]]]
_SKELETONS: dict[_Key, _Skeleton | None] = {}
_BUILD_LOCKS: dict[_Key, threading.Lock] = {}
_MEMO_LOCK = threading.Lock()
_UNBUILT = object()


def _skeleton(template: _Template, empties: frozenset[tuple[str, ContextValue]]) -> _Skeleton | None:
    key = (template.path, empties)
    found = _SKELETONS.get(key, _UNBUILT)
    if found is not _UNBUILT:
        return found  # type: ignore[return-value]
    with _MEMO_LOCK:
        lock = _BUILD_LOCKS.setdefault(key, threading.Lock())
    with lock:
        found = _SKELETONS.get(key, _UNBUILT)
        if found is _UNBUILT:
            found = _built_or_read(template, empties)
            _SKELETONS[key] = found
    return found  # type: ignore[return-value]


def _slow_reason(value: ContextValue) -> str | None:
    """Why `value` cannot be filled into a skeleton, or None when it can."""
    if isinstance(value, int):
        return None if -_SAFE_INT <= value <= _SAFE_INT else "integer beyond 2**53"
    if value and all(char.isspace() or char == "\ufeff" for char in value):
        return "only whitespace"
    if not value.isascii() and _SURROGATE.search(value):
        return "lone surrogate"
    return None


def render(name: str, context: Mapping[str, ContextValue]) -> RenderedPrompt:
    """Render template `name` with `context`; identical to `render_slow`, fast once warm."""
    template = _template(name)
    values = _checked_values(template, context)
    for key, value in values.items():
        reason = _slow_reason(value)
        if reason is not None:
            logger.debug("template %r: %s is %s; rendering with poml", name, key, reason)
            return _poml_render(template, values)
    empties = frozenset((key, value) for key, value in values.items() if value == "" or value == 0)
    skeleton = _skeleton(template, empties)
    if skeleton is None:
        return _poml_render(template, values)
    return skeleton.fill(values)


def warm(names: Iterable[str] | None = None) -> None:
    """Build the skeletons (all variables non-empty) of `names` (default: every template) ahead of use."""
    templates = [_template(name) for name in (template_names() if names is None else names)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda t: _skeleton(t, frozenset()), templates))


def clear_cache() -> None:
    """Forget every template and skeleton (the next render of each template calls poml again)."""
    _load_template.cache_clear()
    with _MEMO_LOCK:
        _SKELETONS.clear()
        _BUILD_LOCKS.clear()
    _system_message.cache_clear()


__all__ = [
    "TEMPLATE_DIR",
    "RenderedPrompt",
    "clear_cache",
    "render",
    "render_slow",
    "skeleton_dir",
    "template_names",
    "template_variables",
    "warm",
]
