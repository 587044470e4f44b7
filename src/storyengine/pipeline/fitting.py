"""Fitting a request into a route's context window, and the requests a stage sends.

`fitted` renders a template and, while the prompt and its answer do not fit the answering
route's window (counted with that route's own tokenizer), summarizes the most expendable long
context value (`SUMMARIZABLE`, in that order) and renders again; what it summarized is said in
the step's metadata. `build_request` makes the request from a rendered prompt with the config's
stage defaults; `summary_request` is the request of a summary itself.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from ..budget import Budget, clip_middle
from ..config import StageDefaults
from ..errors import StructuringError
from ..prompts.render import RenderedPrompt, render
from ..routing.router import Route
from ..types import CompletionRequest
from .stepmeta import StepMeta

# Context values that may be summarized when a prompt does not fit, most expendable first.
SUMMARIZABLE = ("previous", "earlier", "story", "plot", "evaluation", "draft", "text")
SUMMARY_WORDS = 90


class Summarize(Protocol):
    """A summary of `text` in about `words` words (TwoStage.summarize)."""

    async def __call__(self, text: str, *, words: int) -> str: ...


async def fitted(
    template: str,
    component: str,
    context: dict[str, Any],
    defaults: StageDefaults,
    meta: StepMeta,
    route: Route,
    summarize: Summarize,
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
        summary = await summarize(value, words=SUMMARY_WORDS)
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
    request = build_request(prompt, component, defaults, budget, room)
    if request.stage == "structuring" and meta.seeds is not None:
        # The step's own seed (seeds.py): a resumed run's round asks a failed step differently.
        request = request.model_copy(update={"seed": meta.seeds.structuring(defaults.seed)})
    return request


def build_request(
    prompt: RenderedPrompt, component: str, defaults: StageDefaults, budget: Budget, room: int
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


async def summary_request(
    text: str, words: int, budget: Budget, defaults: StageDefaults, structuring: StageDefaults
) -> CompletionRequest:
    """The request for a summary of `text` (the `summarize` template), clipped to fit `budget`'s
    window: sampled like structuring, timed out like a draft (`defaults`)."""
    clipped = clip_middle(text, max(400, int((budget.context_window - defaults.max_tokens) * 2.5)))
    prompt = render("summarize", {"text": clipped, "words": words})
    room = await asyncio.to_thread(budget.room_for_answer, prompt.messages)
    return CompletionRequest(
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
