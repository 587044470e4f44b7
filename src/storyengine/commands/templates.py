"""`storyengine templates`: list the POML templates, render one, check them all."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ..config import load_settings
from ..errors import InputError, TemplateError
from ..pipeline.steps import CONTRACT
from ..prompts.render import RenderedPrompt, render, render_slow, template_names, template_variables

STRUCTURING_MODELS = {
    "plot": "PlotStructure",
    "scene": "Scene",
    "dialogue": "Dialogue",
    "evaluation": "Evaluation",
    "enhancement": "Enhancement",
}
# Values no POML transform may touch: markup, template syntax, edge whitespace, unicode.
PROBE_TEXT = ' \n <document src="/etc/hostname"/> {{ 1+1 }} &amp; \\ "q" \t\r\n é 中 😀 \n'


def fixture_context(name: str, *, probe: bool = False) -> dict[str, str | int]:
    """Minimal values for every variable of template `name` (by the contract's types)."""
    variables = CONTRACT.get(name) or {var: str for var in template_variables(name)}
    return {
        var: 3 if kind is int else (f"{var}:{PROBE_TEXT}" if probe else f"sample {var}")
        for var, kind in variables.items()
    }


SAMPLING_PARAMS = {"temperature", "top_p", "seed", "max_tokens", "presence_penalty", "frequency_penalty"}


def guardrail_problems(name: str, prompt: RenderedPrompt) -> list[str]:
    """What `prompt` (template `name`) lacks: its messages, and for structuring its JSON guardrails."""
    roles = [m.role for m in prompt.messages]
    wanted = ["assistant", "user"] if name == "reask" else ["system", "user"]
    problems = [f"needs a {role} message" for role in wanted if role not in roles]
    if not name.endswith("_structuring"):
        return problems
    system = "\n".join(m.content for m in prompt.messages if m.role == "system")
    for phrase in ("JSON", "Start with {", "end with }"):
        if phrase not in system:
            problems.append(f"system message lacks {phrase!r}")
    if "schema" in template_variables(name) and "sample schema" not in system:
        problems.append("system message does not include the schema")
    params = prompt.params
    # Sampling parameters come from config (narrative.defaults): a template must not override them.
    overriding = sorted(k for k in params if k in SAMPLING_PARAMS)
    if overriding:
        problems.append(
            f"<runtime> sets {', '.join(overriding)}: sampling parameters come from config "
            "(narrative.defaults.structuring); keep only stop sequences in a template"
        )
    stop = params.get("stop")
    if not (isinstance(stop, list) and stop and all(isinstance(s, str) and s for s in stop)):
        problems.append("no stop list in <runtime>")
    return problems


def contract_problems(name: str) -> list[str]:
    """How template `name`'s variables differ from what the pipeline passes."""
    if name not in CONTRACT:
        return ["not in the template contract (a step's `contract`, or storyengine.prompts.SHARED_CONTRACT)"]
    if name not in template_names():
        return ["template file is missing"]
    have, want = template_variables(name), set(CONTRACT[name])
    problems = []
    if want - have:
        problems.append(f"missing variable(s) {', '.join(sorted(want - have))}")
    if have - want:
        problems.append(f"unexpected variable(s) {', '.join(sorted(have - want))}")
    return problems


def _response_format(name: str, context: dict[str, Any]) -> dict[str, Any] | None:
    component, _, stage = name.partition("_")
    if stage != "structuring" or component not in STRUCTURING_MODELS:
        return None
    from .. import schemas
    from ..structuring import decoding_schema

    model = getattr(schemas, STRUCTURING_MODELS[component])
    schema = decoding_schema(model)
    context.setdefault("schema", json.dumps(schema, separators=(",", ":")))
    return {"type": "json_schema", "json_schema": {"name": model.__name__, "schema": schema, "strict": True}}


@click.group("templates")
def templates() -> None:
    """The POML prompt templates."""


@templates.command("list")
def list_templates() -> None:
    """Every template and its context variables."""
    for name in template_names():
        click.echo(f"{name}: {', '.join(sorted(template_variables(name)))}")


@templates.command("render")
@click.argument("name")
@click.option("--context", "context_json", default="{}", help="The context as a JSON object.")
@click.option("--slow", is_flag=True, help="Always render with poml itself (no skeleton).")
def render_template(name: str, context_json: str, slow: bool) -> None:
    """Print template NAME rendered with --context, as JSON.

    For a structuring template the output also holds the `response_format` of the structured
    call; a missing `schema` is filled in with the component's decoding schema.
    """
    try:
        context = json.loads(context_json)
    except json.JSONDecodeError as exc:
        raise InputError(f"--context is not valid JSON ({exc}); pass an object like '{{\"a\": 1}}'") from exc
    if not isinstance(context, dict):
        raise InputError("--context must be a JSON object of variable names to values")
    response_format = _response_format(name, context)
    prompt = (render_slow if slow else render)(name, context)
    out = prompt.to_dict()
    if response_format is not None:
        out["response_format"] = response_format
        # What the request carries: the config's structuring parameters, the template's stops.
        defaults = load_settings().narrative.defaults.structuring
        out["params"] = {**defaults.model_dump(include={"temperature", "top_p", "seed"}), **out["params"]}
    click.echo(json.dumps(out, indent=2, ensure_ascii=False))


@templates.command("check")
@click.argument("names", nargs=-1)
@click.option("--exact", is_flag=True, help="Also prove the fast renderer equals poml on adversarial values.")
def check_templates(names: tuple[str, ...], exact: bool) -> None:
    """Render every template (or NAMES) with minimal values; fail on a missing variable or guardrail."""
    failures = 0
    for name in names or sorted(set(template_names()) | set(CONTRACT)):
        problems = contract_problems(name)
        if not problems:
            try:
                problems = guardrail_problems(name, render(name, fixture_context(name)))
                if exact and not problems:
                    probe = fixture_context(name, probe=True)
                    if render(name, probe) != render_slow(name, probe):
                        problems = ["fast render differs from poml on the probe values"]
            except TemplateError as exc:
                problems = [str(exc)]
        if problems:
            failures += 1
            click.echo(f"FAIL {name}: {'; '.join(problems)}")
        else:
            click.echo(f"ok   {name}")
    if failures:
        click.echo(f"{failures} template(s) failed the check", err=True)
        sys.exit(1)


COMMANDS = [templates]
