"""How a structuring answer is judged: validated into a `Checked` value, and the text policy.

A validation (structuring.validate_json_payload with the text rules) returns a `Checked`: the
value and what the rules found in its words. A whole answer whose findings no code could repair
is held and re-asked once (`TextFindings`, which the retry layer does not redraw); the re-ask's
answer is kept unless it has more open findings than the held one (`TextPolicy`). `checker`
makes the router's `check` that applies this and records each attempt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import SchemaValidationError
from ..structuring import format_errors
from ..text.review import Finding
from ..types import Completion


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
class TextPolicy:
    """Text findings are re-asked once; after that the better of the two answers is kept."""

    final: bool = False
    held: tuple[Completion, Checked] | None = None


def checker(
    validate: Callable[[str], Any],
    attempts: list[dict[str, Any]],
    policy: TextPolicy,
) -> Callable[[Completion], Any]:
    """A `check` for the router: validates (each answer is checked once), notes each attempt, and
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
            raise  # the instrumentation keeps the refused answer (invalid_json/)
        attempts.append({"provider": completion.provider, "ok": True, "cached": completion.cached})
        return value

    return check
